"""Latent-space sampling through the same token assembly as training (parity by construction).

Euler steps on the rectified-flow ODE along `inference_sigmas` (the training shift for this token count), with
optional classifier-free guidance. The diffusers pipelines render user-facing previews; this sampler is what proves
that training and inference place conditioning tokens the same way, and what validation uses for conditions the
pipelines cannot express.
"""

from __future__ import annotations

import torch

from ..conditioning.timesteps import inference_sigmas
from ..conditioning.tokens import Reference, TextContext, predict, video_tokens


@torch.no_grad()
def sample_video_latents(
    transformer,
    text: TextContext,
    grid: tuple[int, int, int],
    fps: float,
    steps: int = 20,
    reference: Reference | None = None,
    clean: torch.Tensor | None = None,
    cond: torch.Tensor | None = None,
    negative: TextContext | None = None,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Denoise target latents [1, C, F, H, W] from pure noise.

    `clean` + `cond` pin known tokens (first frame, kept mask region) to their clean values at every step;
    `reference` is appended as in training.
    """
    f, h, w = grid
    c = transformer.config.in_channels
    n = f * h * w
    if clean is None:
        clean = torch.zeros(1, c, f, h, w)
    x = torch.randn(1, n, c, generator=generator)
    sigmas = inference_sigmas(steps, n)
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        tokens = video_tokens(transformer.rope, clean, sigma.view(1), fps, cond=cond, noisy=x, reference=reference)
        v = predict(transformer, tokens, text)
        if negative is not None and guidance_scale != 1.0:
            v_neg = predict(transformer, tokens, negative)
            v = v_neg + guidance_scale * (v - v_neg)
        v = v[:, : tokens.num_target]
        # the step moves only noisy tokens; pinned tokens stay at their clean values (their sigma is 0)
        x_next = tokens.hidden[:, : tokens.num_target] + (sigma_next - sigma) * v
        keep = tokens.cond[:, : tokens.num_target, None]
        x = keep * tokens.clean[:, : tokens.num_target] + (1 - keep) * x_next
    return x.transpose(1, 2).reshape(1, c, f, h, w)
