"""Model-side encoding: fitted pixels -> normalised video latents, captions -> connector text embeddings.

The plain functions are used by the Ray Data actors below and by validation sampling; the actors hold the model
once per process (GPU when the pool is given `num_gpus`) and return each result as the bytes of its cache file:
they may run on another node than the driver, whose cache is the one training reads, so in cache mode only the driver
writes it (in streaming mode the video actors write to a cache every node reaches: see `encode/stream.py`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..media.fit import frames_to_video_tensor
from .audio_encoder import encode_audio
from .cache import LatentCache, to_bytes


def device_for_actor() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@torch.no_grad()
def encode_video(vae, frames: np.ndarray) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> normalised latents [C, F', H', W'] (posterior mean, no sampling noise)."""
    from diffusers import LTX2Pipeline

    param = next(vae.parameters())
    video = frames_to_video_tensor(frames).unsqueeze(0).to(param.device, param.dtype)
    latents = vae.encode(video).latent_dist.mode()
    latents = LTX2Pipeline._normalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    return latents[0].float().cpu()


@torch.no_grad()
def encode_text(tokenizer, text_encoder, connectors, prompts: list[str], max_length: int):
    """Gemma hidden states of every layer -> LTX-2 connectors, as the diffusers LTX-2 pipelines compute them.

    Returns (video [B, T, Dv], audio [B, T, Da], mask [B, T]) in float32 on CPU.
    """
    param = next(text_encoder.parameters())
    tokenizer.padding_side = "left"  # LTX-2 text features are computed on left-padded prompts
    enc = tokenizer([p.strip() for p in prompts], padding="max_length", max_length=max_length, truncation=True,
                    add_special_tokens=True, return_tensors="pt")
    ids, attn = enc.input_ids.to(param.device), enc.attention_mask.to(param.device)
    hidden = text_encoder(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states
    stacked = torch.stack(hidden, dim=-1).flatten(2, 3).to(next(connectors.parameters()).dtype)
    video, audio, mask = connectors(stacked, attn, padding_side="left")
    return video.float().cpu(), audio.float().cpu(), mask.float().cpu()


class VideoEncoderActor:
    """Ray Data actor: rows with fitted `frames` -> `id` + `tensors`, the sample's cache file content. With
    `persist_to` (streaming mode) it also writes each file into that cache (a folder or storage URI) before handing it
    on, so the cache fills while training runs and nothing depends on the driver to write it."""

    def __init__(self, model_dir: str, audio: bool = False, persist_to: str | None = None):
        from ..models.bundle import load_components
        from ..storage import node_local_copy

        self.persist_to = persist_to
        model_dir = node_local_copy(model_dir)  # a storage URI on clusters whose nodes share no disk

        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        self.vae = load_components(model_dir, ["vae"], dtype=dtype, device=device_for_actor())["vae"].eval()
        # the audio VAE runs in fp32, as the reference preprocessing does (its log-mel input is sensitive)
        self.audio_vae = (load_components(model_dir, ["audio_vae"], device=device_for_actor())["audio_vae"].eval()
                          if audio else None)

    def __call__(self, batch: dict) -> dict:
        files = []
        for i, sample_id in enumerate(batch["id"]):
            files.append(to_bytes(encode_columns(self.vae, self.audio_vae, {k: v[i] for k, v in batch.items()})))
            if self.persist_to:
                from ..storage import join, write_bytes

                write_bytes(join(self.persist_to, LatentCache.video_file(str(sample_id))), files[-1])
        return {"id": np.asarray(batch["id"]), "tensors": files}


def encode_columns(vae, audio_vae, fitted: dict) -> dict[str, torch.Tensor]:
    """Typed fitted columns -> cache tensors: `video:x` through the VAE, `audio:x` through the audio VAE, `raw:x`
    as they are (training samples and validation entries alike)."""
    out = {}
    for key, value in fitted.items():
        kind, _, name = key.partition(":")
        if kind == "video":
            out[name] = encode_video(vae, np.asarray(value))
        elif kind == "audio":
            out[name] = encode_audio(audio_vae, np.asarray(value))
        elif kind == "raw":
            out[name] = torch.from_numpy(np.ascontiguousarray(np.asarray(value)))
        elif kind == "none":  # audio-only: the one-token video placeholder (conditioning.tokens.VideoTokens)
            out[name] = torch.zeros(vae.config.latent_channels, 1, 1, 1)
    if "mask" in out and "latents" in out and tuple(out["mask"].shape) != tuple(out["latents"].shape[1:]):
        raise ValueError(f"latent mask {tuple(out['mask'].shape)} does not match the latent grid "
                         f"{tuple(out['latents'].shape[1:])}")
    return out


class TextEncoderActor:
    """Ray Data actor: rows with `caption` -> `text_id` + `tensors`, the caption's cache file content."""

    def __init__(self, model_dir: str):
        from ..models.bundle import load_components, load_model_info
        from ..storage import node_local_copy

        model_dir = node_local_copy(model_dir)  # a storage URI on clusters whose nodes share no disk

        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        parts = load_components(model_dir, ["tokenizer", "text_encoder", "connectors"], dtype=dtype,
                                device=device_for_actor())
        self.tokenizer, self.text_encoder, self.connectors = parts["tokenizer"], parts["text_encoder"], parts["connectors"]
        self.max_length = load_model_info(model_dir).max_sequence_length

    def __call__(self, batch: dict) -> dict:
        prompts = [str(c) for c in batch["caption"]]
        video, audio, mask = encode_text(self.tokenizer, self.text_encoder, self.connectors, prompts, self.max_length)
        # the keys are LatentCache.write_text's arguments
        files = [to_bytes({"video": video[i], "audio": audio[i], "mask": mask[i]}) for i in range(len(prompts))]
        return {"text_id": np.asarray(batch["text_id"]), "tensors": files}
