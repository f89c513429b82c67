"""Memory levers for training: optimizer choice, activation checkpointing every k-th block, bf16 LoRA weights.

- `make_optimizer`: "adamw" (torch, foreach), "adamw_fused" (torch's fused kernel: one launch for all tensors on
  GPU, also implemented on CPU) or "adamw8bit" (bitsandbytes, blockwise-quantised moments: 2 bytes of state per
  parameter instead of 8; optional dependency, imported only when asked for).
- `apply_checkpointing`: recompute the activations of every k-th transformer block in the backward instead of
  storing them (k=1: every block, what diffusers' `enable_gradient_checkpointing` does; k=2: half of them, ...).
- `MasterAdamW`: parameters held in bf16 (half the weight and gradient memory), AdamW run on fp32 master copies
  with fp32 moments kept in the optimizer state, so small updates are not rounded away.
"""

from __future__ import annotations

import functools

import torch
import torch.utils.checkpoint

from .config import OPTIMIZERS


def apply_checkpointing(transformer: torch.nn.Module, every: int) -> list[int]:
    """Checkpoint blocks 0, k, 2k, ... (k = `every`; 0: none). Returns the checkpointed block indices.

    Wraps each chosen block's `forward` (not the module: parameter names, LoRA keys and FSDP2's per-block
    sharding stay as they are). Non-reentrant checkpointing, as diffusers uses; it only acts while grad is on.
    """
    if every < 0:
        raise ValueError(f"checkpoint every k-th block needs k >= 0, got {every}")
    chosen = list(range(0, len(transformer.transformer_blocks), every)) if every else []
    for i in chosen:
        block = transformer.transformer_blocks[i]
        block.forward = functools.partial(_checkpointed, block.forward)
    return chosen


def _checkpointed(forward, *args, **kwargs):
    if torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


class MasterAdamW(torch.optim.AdamW):
    """torch AdamW stepping fp32 master copies of low-precision parameters.

    The model keeps its (bf16) parameters and gradients; `state[p]["master"]` holds the fp32 weights, and the
    moments are created in fp32 because AdamW sees the master while it steps. After each step the master is
    rounded back into the parameter. State is keyed by the model's own parameters, so torch.distributed.checkpoint
    saves and restores it like plain AdamW's.
    """

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("MasterAdamW does not take a closure")
        swapped = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                # First step: a fresh fp32 copy; AdamW then creates its moments like it (fp32), and we keep it.
                master = self.state[p]["master"] if "master" in self.state[p] else p.detach().float()
                low, low_grad = p.data, p.grad
                p.data, p.grad = master, low_grad.float()
                swapped.append((p, low, low_grad))
        try:
            super().step()
        finally:
            for p, low, low_grad in swapped:
                self.state[p]["master"] = p.data
                low.copy_(p.data)
                p.data, p.grad = low, low_grad
        return None

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        # Optimizer.load_state_dict casts floating state to each parameter's dtype (bf16): restore fp32 copies.
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(ids, params):
            for k, v in state_dict["state"].get(i, {}).items():
                if k != "step" and torch.is_tensor(v) and v.is_floating_point():
                    self.state[p][k] = v.to(device=p.device, dtype=torch.float32, copy=True)


def make_optimizer(params: list[torch.nn.Parameter], name: str, lr: float, weight_decay: float,
                   master_weights: bool = False) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if master_weights:
        if name == "adamw8bit":
            raise ValueError("bf16 LoRA weights (fp32 masters) work with adamw / adamw_fused, not adamw8bit")
        return MasterAdamW(params, lr=lr, weight_decay=weight_decay, fused=name == "adamw_fused" or None)
    if name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise ImportError("optimizer 'adamw8bit' needs bitsandbytes (pip install bitsandbytes)") from exc
        # min_8bit_size=0: quantise every adapter matrix (bitsandbytes keeps tensors under 4096 elements in fp32)
        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay, min_8bit_size=0)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=name == "adamw_fused" or None)


def cast_trainable(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Store the trainable parameters (the LoRA adapters) in `dtype`."""
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(dtype)
