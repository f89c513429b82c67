"""Latent-space sampling through the same token assembly as training (parity by construction).

Euler steps on the rectified-flow ODE along `inference_sigmas` (the training shift for this token count), with
classifier-free guidance and spatio-temporal guidance (STG: a pass with self-attention perturbed in some blocks).
Video and (optionally) audio are denoised together on one shared schedule, as the LTX-2 pipelines do. Every
product's conditions go through `conditioning.tokens.assemble`, exactly as in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..conditioning.timesteps import inference_sigmas
from ..conditioning.tokens import TextContext, assemble, predict


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
    conditions: tuple = (),
    cols: dict | None = None,
    audio_steps: int | None = None,
    negative: TextContext | None = None,
    guidance: Guidance = Guidance(),
    generator: torch.Generator | None = None,
    audio_role: str = "generated",
    video_role: str = "generated",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Denoise target latents [1, C, F, H, W] (and packed audio [1, L, Ca] when `audio_steps`) from noise.

    `conditions` and their cache columns `cols` ("latents" = the given source video, "mask", "reference",
    "first_frame", ...) go through `assemble`, exactly as in training: pinned tokens stay at their clean values at
    every step, appended ones ride along clean.
    """
    f, h, w = grid
    c = transformer.config.in_channels
    n = f * h * w
    cols = dict(cols or {})
    cols.setdefault("latents", torch.zeros(1, c, f, h, w))
    x = torch.randn(1, n, c, generator=generator)
    a = None
    if audio_steps:
        if "audio" in cols:  # given audio (e.g. an extension's window): its length is the preview's
            audio_steps = cols["audio"].shape[1]
        a = torch.randn(1, audio_steps, transformer.config.audio_in_channels, generator=generator)
        cols.setdefault("audio", torch.zeros_like(a))
    else:
        cols.pop("audio", None)
    # the schedule's shift follows the generated tokens: audio's when the video is given (v2a) or absent (t2a)
    sigmas = inference_sigmas(steps, n if video_role == "generated" or a is None else a.shape[1])
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        s = sigma.view(1)
        vt, at = assemble(conditions, transformer.rope, transformer.audio_rope, cols, s, fps, noisy=x,
                          audio_noisy=a, audio_role=audio_role, video_role=video_role)
        v, va = _guided(transformer, vt, at, text, negative, guidance)
        dt = sigma_next - sigma
        keep = vt.cond[:, : vt.num_target, None]
        x = keep * vt.clean[:, : vt.num_target] + (1 - keep) * (x + dt * v[:, : vt.num_target])
        if a is not None:
            keep_a = at.cond[:, : at.num_target, None]
            a = keep_a * at.clean[:, : at.num_target] + (1 - keep_a) * (a + dt * va[:, : at.num_target])
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
def sample_video_latents(transformer, text, grid, fps, steps: int = 20, conditions: tuple = (), cols=None,
                         negative=None, guidance_scale: float = 1.0, generator=None) -> torch.Tensor:
    """Video-only convenience wrapper around `sample_latents`."""
    video, _ = sample_latents(transformer, text, grid, fps, steps, conditions=conditions, cols=cols,
                              negative=negative, guidance=Guidance(cfg=guidance_scale), generator=generator)
    return video
