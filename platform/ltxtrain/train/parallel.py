"""How the transformer is spread over workers (FSDP2). The training loop never looks inside.

Each transformer block is its own FSDP unit, then the root: parameters become DTensors sharded on dim 0, gathered
block by block in forward/backward and freed after (reshard_after_forward). LoRA adapters must be attached before
sharding so they live in the same units as the frozen weights they adapt.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def shard_transformer(transformer: nn.Module, bf16: bool) -> nn.Module:
    if not is_distributed() or dist.get_world_size() == 1:
        return transformer
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    # bf16 compute with fp32 gradient reduction on GPU; on CPU everything stays fp32 (bf16 is slower there).
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for block in transformer.transformer_blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=True)
    # The root must not cast its inputs: timesteps, sigmas and RoPE coordinates reach the transformer in fp32, as in
    # Lightricks' runtime (bf16 rounds 737.3 to 736). `predict` casts the hidden states to the compute dtype itself.
    root = MixedPrecisionPolicy(param_dtype=mp.param_dtype, reduce_dtype=mp.reduce_dtype, cast_forward_inputs=False)
    fully_shard(transformer, mesh=mesh, mp_policy=root, reshard_after_forward=True)
    if bf16:
        set_compute_dtype(transformer, torch.bfloat16)
    return transformer


def set_compute_dtype(transformer: nn.Module, dtype: torch.dtype) -> None:
    """Record the dtype the sharded transformer computes in (its parameters are fp32 masters or bf16 shards; FSDP
    gathers them as `dtype`); `conditioning.tokens.predict` casts the hidden states to it."""
    transformer.__dict__["compute_dtype"] = dtype


def broadcast_from_rank0(model: nn.Module, full_state: dict[str, torch.Tensor] | None) -> None:
    """Collective: fill a sharded model whose storage was just allocated (`to_empty`) from rank 0's full state
    dict, one tensor at a time; the other ranks pass None and never read the weights file."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, full_state or {},
                         options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded trainable weights on CPU (collective: every rank must call it; rank 0 uses the result). Frozen
    base weights are left out, so exporting a LoRA never gathers the 22B base model."""
    if not is_distributed() or dist.get_world_size() == 1:
        return {k: p.detach().cpu() for k, p in model.named_parameters() if p.requires_grad}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                ignore_frozen_params=True))


def iter_full_state(model: nn.Module):
    """Collective: (name, whole tensor on CPU) for every weight, gathered one at a time, so writing a full
    fine-tune never needs the whole model in one process's memory."""
    for name, value in model.state_dict().items():
        if hasattr(value, "full_tensor"):
            value = value.full_tensor()
        yield name, value.detach().cpu()


def all_mean(value: float) -> float:
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64, device="cuda" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def all_true(flag: bool) -> bool:
    """True on every rank when `flag` is true on every rank (ranks that must take the same branch agree first)."""
    if not is_distributed():
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32, device="cuda" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())
