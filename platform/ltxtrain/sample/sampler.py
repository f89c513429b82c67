"""Latent-space sampling through the same token assembly as training (parity by construction).

Euler steps on the rectified-flow ODE along `inference_sigmas` (the training shift for this token count), with
classifier-free guidance and spatio-temporal guidance (STG: a pass with self-attention perturbed in some blocks).
Video and (optionally) audio are denoised together on one shared schedule, as the LTX-2 pipelines do. Every
product's conditions (first frame, reference, kept mask region, audio reference) go through `video_tokens` /
`audio_tokens`, exactly as in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..conditioning.timesteps import inference_sigmas
from ..conditioning.tokens import Reference, TextContext, audio_tokens, predict, video_tokens


@dataclass
class Guidance:
    cfg: float = 1.0  # classifier-free guidance scale (needs a negative context)
    stg: float = 0.0  # spatio-temporal guidance scale (0 disables)
    stg_blocks: tuple[int, ...] = ()


def default_stg_blocks(transformer) -> tuple[int, ...]:
    """LTX-2's default STG block is 28 of 48; scale that position to the model's depth."""
    n = len(transformer.transformer_blocks)
    return (min(n - 1, round(28 * n / 48)),)


@torch.no_grad()
def sample_latents(
    transformer,
    text: TextContext,
    grid: tuple[int, int, int],
    fps: float,
    steps: int = 20,
    reference: Reference | None = None,
    clean: torch.Tensor | None = None,
    cond: torch.Tensor | None = None,
    audio_steps: int | None = None,
    audio_reference: torch.Tensor | None = None,
    negative: TextContext | None = None,
    guidance: Guidance = Guidance(),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Denoise target latents [1, C, F, H, W] (and packed audio [1, L, Ca] when `audio_steps`) from noise.

    `clean` + `cond` pin known video tokens (first frame, kept mask region) to their clean values at every step;
    `reference` / `audio_reference` are appended as in training.
    """
    f, h, w = grid
    c = transformer.config.in_channels
    n = f * h * w
    if clean is None:
        clean = torch.zeros(1, c, f, h, w)
    x = torch.randn(1, n, c, generator=generator)
    a = None
    if audio_steps:
        a = torch.randn(1, audio_steps, transformer.config.audio_in_channels, generator=generator)
        a_clean = torch.zeros_like(a)
    sigmas = inference_sigmas(steps, n)
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        s = sigma.view(1)
        vt = video_tokens(transformer.rope, clean, s, fps, cond=cond, noisy=x, reference=reference)
        at = (audio_tokens(transformer.audio_rope, a_clean, s, noisy=a, reference=audio_reference)
              if a is not None else None)
        v, va = _guided(transformer, vt, at, text, negative, guidance)
        dt = sigma_next - sigma
        keep = vt.cond[:, : vt.num_target, None]
        x = keep * vt.clean[:, : vt.num_target] + (1 - keep) * (x + dt * v[:, : vt.num_target])
        if a is not None:
            a = a + dt * va[:, : at.num_target]
    return x.transpose(1, 2).reshape(1, c, f, h, w), a


def _guided(transformer, vt, at, text, negative, guidance: Guidance):
    def run(ctx, **kw):
        out = predict(transformer, vt, ctx, at, **kw)
        return out if at is not None else (out, None)

    v, va = run(text)
    if negative is not None and guidance.cfg != 1.0:
        nv, na = run(negative)
        v_cfg = v + (guidance.cfg - 1.0) * (v - nv)
        va_cfg = va + (guidance.cfg - 1.0) * (va - na) if va is not None else None
    else:
        v_cfg, va_cfg = v, va
    if guidance.stg and guidance.stg_blocks:
        pv, pa = run(text, spatio_temporal_guidance_blocks=list(guidance.stg_blocks))
        v_cfg = v_cfg + guidance.stg * (v - pv)
        if va is not None:
            va_cfg = va_cfg + guidance.stg * (va - pa)
    return v_cfg, va_cfg


@torch.no_grad()
def sample_video_latents(transformer, text, grid, fps, steps: int = 20, reference=None, clean=None, cond=None,
                         negative=None, guidance_scale: float = 1.0, generator=None) -> torch.Tensor:
    """Video-only convenience wrapper around `sample_latents`."""
    video, _ = sample_latents(transformer, text, grid, fps, steps, reference=reference, clean=clean, cond=cond,
                              negative=negative, guidance=Guidance(cfg=guidance_scale), generator=generator)
    return video
