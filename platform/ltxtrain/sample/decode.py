"""Latents back to pixels and sound with the model's own decoders (diffusers VAE, audio VAE, vocoder)."""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def decode_video(vae, latents: torch.Tensor) -> np.ndarray:
    """Normalised latents [1, C, F, H, W] -> uint8 [F', H', W', 3] (decoded at timestep 0 when the VAE is
    timestep-conditioned, as the LTX-2 pipelines do by default)."""
    from diffusers import LTX2Pipeline

    param = next(vae.parameters())
    x = LTX2Pipeline._denormalize_latents(latents.to(param.device, param.dtype), vae.latents_mean,
                                          vae.latents_std, vae.config.scaling_factor)
    timestep = torch.zeros(1, device=param.device, dtype=param.dtype) if vae.config.timestep_conditioning else None
    video = vae.decode(x, timestep, return_dict=False)[0]  # [1, 3, F, H, W] in [-1, 1]
    video = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return video.permute(1, 2, 3, 0).cpu().numpy()


@torch.no_grad()
def decode_audio(audio_vae, vocoder, packed: torch.Tensor) -> tuple[np.ndarray, int]:
    """Packed normalised audio latents [1, L, C*M] -> (float32 waveform [2, N], sample rate)."""
    from diffusers import LTX2Pipeline

    param = next(audio_vae.parameters())
    channels = audio_vae.config.latent_channels
    mel_bins = packed.shape[-1] // channels
    x = LTX2Pipeline._denormalize_audio_latents(packed.to(param.device, param.dtype), audio_vae.latents_mean,
                                                audio_vae.latents_std)
    x = LTX2Pipeline._unpack_audio_latents(x, packed.shape[1], num_mel_bins=mel_bins)
    mel = audio_vae.decode(x, return_dict=False)[0]
    wave = vocoder(mel.to(next(vocoder.parameters()).dtype))[0].float().clamp(-1, 1).cpu().numpy()
    if wave.ndim == 1:
        wave = np.stack([wave, wave])
    rate = int(getattr(vocoder.config, "output_sampling_rate", 24000))
    return wave.astype(np.float32), rate
