"""The trainable transformer on each rank: loading, adapters and sharding (beside `parallel.py`). The loop only
receives the finished module."""

from __future__ import annotations

import torch

from . import optim
from .config import TrainConfig
from .parallel import broadcast_from_rank0, is_distributed, shard_transformer


def load_transformer(cfg: TrainConfig, ctx, device: torch.device, dtype: torch.dtype,
                     bf16: bool, grad_ckpt: bool):
    """The trainable transformer on this rank: base weights, LoRA adapters (or everything trainable for a full
    fine-tune), gradient checkpointing, FSDP2 sharding when there is more than one worker.

    Sharded runs build the model on the meta device on every rank, shard it, allocate only each rank's shards,
    and fill them from rank 0, the one process that reads the weights file — so a node with 8 GPUs holds one
    CPU copy of a 22B model while loading, not eight.
    """
    from ..models.bundle import empty_component, load_components
    from ..models.lora import attach_lora, load_init_lora

    def adapt(model):
        torch.manual_seed(cfg.seed)  # the same LoRA init however the run is laid out
        model.requires_grad_(cfg.training_mode == "full")
        if cfg.training_mode != "full":
            attach_lora(model, cfg.rank, cfg.lora_targets)
        # memory levers (train/optim.py): checkpoint every k-th block, bf16 adapters with fp32 optimizer state
        if cfg.activation_checkpoint_every:
            optim.apply_checkpointing(model, cfg.activation_checkpoint_every)
        elif grad_ckpt:
            model.enable_gradient_checkpointing()
        if cfg.lora_dtype == "bf16" and cfg.training_mode != "full":
            optim.cast_trainable(model, torch.bfloat16)
        return model.train()

    def adapt_loaded(model):  # the one process that reads the weights file
        model = adapt(model)
        if cfg.init_lora:  # continue from the request's LoRA; sharded ranks receive it with the broadcast
            from ..storage import node_local_copy

            load_init_lora(model, node_local_copy(cfg.init_lora))
        return model

    if ctx.world_size == 1 or not is_distributed():
        return adapt_loaded(load_components(cfg.model_dir, ["transformer"], dtype=dtype)["transformer"]).to(device)
    with torch.device("meta"):
        model = adapt(empty_component(cfg.model_dir, "transformer", dtype))
    model = shard_transformer(model, bf16=bf16)
    model.to_empty(device=device)
    full_state = None
    if ctx.rank == 0:
        full_state = adapt_loaded(load_components(cfg.model_dir, ["transformer"], dtype=dtype)["transformer"])
        full_state = full_state.state_dict()
    broadcast_from_rank0(model, full_state)
    return model


def unwrap(model):
    return getattr(model, "module", model)
