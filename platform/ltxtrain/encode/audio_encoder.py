"""Audio side of encoding: stereo waveform -> log-mel -> LTX-2 audio VAE -> normalised packed latents.

Mirrors what the diffusers LTX-2 pipelines expect as `audio_latents` (they only decode; the encode direction is
the LTX trainer's): posterior mode, packed [B, C, L, M] -> [B, L, C*M] (``LTX2Pipeline._pack_audio_latents``),
normalised per packed channel with the VAE's ``latents_mean`` / ``latents_std``
(``LTX2Pipeline._normalize_audio_latents``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..media.audio import log_mel

N_FFT = 1024  # the LTX-2 audio VAE's STFT size (filter_length); not stored in the diffusers config
TEMPORAL_COMPRESSION = 4  # AutoencoderKLLTX2Audio: two causal stride-2 stages on the time axis


def audio_latent_steps(seconds: float, sample_rate: int = 16000, hop: int = 160) -> int:
    """Latent length `encode_audio` gives for `seconds` of audio: mel frames N // hop + 1 (centred STFT), then
    ceil(T / 2) twice in the causal encoder. About 25 per second at 16 kHz / hop 160; one more than the
    pipelines' round(seconds * 25) for most durations (25/24 s -> 27, the pipeline generates 26)."""
    n = int(round(seconds * sample_rate))
    t_mel = n // hop + 1
    return -(-t_mel // TEMPORAL_COMPRESSION)


def audio_vae_config(model_dir: str) -> dict:
    """The audio VAE's config of a resolved model folder: the one place its sample rate and hop are read from disk."""
    import json
    import os

    with open(os.path.join(model_dir, "audio_vae", "config.json")) as fh:
        return json.load(fh)


def audio_sample_rate(model_dir: str) -> int:
    return int(audio_vae_config(model_dir)["sample_rate"])


def model_audio_steps(model_dir: str, seconds: float) -> int:
    """`audio_latent_steps` with the model's own rate and hop."""
    cfg = audio_vae_config(model_dir)
    return audio_latent_steps(seconds, int(cfg["sample_rate"]), int(cfg.get("mel_hop_length", 160)))


def _vae_audio_params(audio_vae) -> tuple[int, int, int]:
    cfg = audio_vae.config
    return int(cfg.sample_rate), int(cfg.mel_hop_length), int(cfg.mel_bins)


@torch.no_grad()
def encode_audio(audio_vae, wave: np.ndarray) -> torch.Tensor:
    """float [2, N] at ``audio_vae.config.sample_rate`` -> normalised packed latents float32 [L, C*M] on CPU,
    L == audio_latent_steps(N / sample_rate, sample_rate, hop)."""
    from diffusers import LTX2Pipeline

    sample_rate, hop, n_mels = _vae_audio_params(audio_vae)
    wave = np.asarray(wave, np.float32)
    if wave.ndim == 1:
        wave = np.stack([wave, wave])
    if wave.ndim != 2 or wave.shape[0] != 2:
        raise ValueError(f"expected a stereo waveform [2, N], got shape {tuple(wave.shape)}")
    param = next(audio_vae.parameters())
    mel = torch.from_numpy(log_mel(wave, sample_rate, n_mels, n_fft=N_FFT, hop=hop))  # [2, T, M]
    mel = mel.unsqueeze(0).to(param.device, param.dtype)
    latents = audio_vae.encode(mel).latent_dist.mode()  # [1, C, L, M']
    latents = LTX2Pipeline._pack_audio_latents(latents)  # [1, L, C*M']
    latents = LTX2Pipeline._normalize_audio_latents(latents, audio_vae.latents_mean, audio_vae.latents_std)
    return latents[0].float().cpu()
