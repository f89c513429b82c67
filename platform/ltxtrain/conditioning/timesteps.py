"""Noise levels: the shifted logit-normal training sampler and the matching inference schedule.

Both take the shift `mu` from the *target* token count, so validation/inference denoises along the same
noise distribution that training emphasised (the official trainer's validation uses a fixed N=4096 instead —
ltx-trainer-notes §1.2, issue Lightricks/LTX-2#283).
"""

from __future__ import annotations

import math

import torch

BASE_TOKENS, MAX_TOKENS = 1024, 4096
BASE_SHIFT, MAX_SHIFT = 0.95, 2.05


def shift_mu(num_tokens: int) -> float:
    """Linear in the token count through (1024, 0.95) and (4096, 2.05); deliberately not clamped."""
    return BASE_SHIFT + (num_tokens - BASE_TOKENS) * (MAX_SHIFT - BASE_SHIFT) / (MAX_TOKENS - BASE_TOKENS)


def sample_sigmas(
    batch: int,
    num_tokens: int,
    generator: torch.Generator | None = None,
    std: float = 1.0,
    eps: float = 1e-3,
    uniform_prob: float = 0.1,
) -> torch.Tensor:
    """Shifted logit-normal sigmas in [0, 1] (sigma=1 is pure noise), one per sample.

    z ~ N(mu, std); s = sigmoid(z) stretched so its 0.5th..99.9th percentiles map onto [0, 1], reflected at eps;
    with probability `uniform_prob` a sample draws uniformly instead, so no noise level is ever starved.
    """
    mu = shift_mu(num_tokens)
    z = torch.randn(batch, generator=generator) * std + mu
    s = torch.sigmoid(z)
    lo = 1.0 / (1.0 + math.exp(-(mu - 2.5758 * std)))
    hi = 1.0 / (1.0 + math.exp(-(mu + 3.0902 * std)))
    x = (s - lo) / (hi - lo)
    x = torch.where(x >= eps, x, 2 * eps - x).clamp(0.0, 1.0)
    u = (1 - eps) * torch.rand(batch, generator=generator) + eps
    use_uniform = torch.rand(batch, generator=generator) < uniform_prob
    return torch.where(use_uniform, u, x)


def inference_sigmas(num_steps: int, num_tokens: int, terminal: float = 0.1) -> torch.Tensor:
    """Descending sigmas 1 → 0 (num_steps + 1 values) with the token-count shift used in training.

    The last non-zero sigma is stretched to `terminal` as the LTX-2 scheduler does, then a final 0.
    """
    mu = shift_mu(num_tokens)
    t = torch.linspace(1.0, 0.0, num_steps + 1)[:-1]
    sig = math.exp(mu) / (math.exp(mu) + (1.0 / t - 1.0))
    one_minus = 1.0 - sig
    scale = one_minus[-1] / (1.0 - terminal)
    sig = 1.0 - one_minus / scale
    return torch.cat([sig, torch.zeros(1)])
