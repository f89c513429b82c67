"""peft LoRA on LTX2VideoTransformer3DModel.

Target names are peft suffixes: an entry matches a module whose full name equals it or ends with "." + entry. So
"attn1.to_q" hits only the video self-attention (not "audio_attn1.to_q"), while a bare "to_q" would hit all six
attention types. The module names are identical in diffusers and in the official LTX layout, so LoRA keys only need a
"diffusion_model." prefix to become LTX/ComfyUI keys (see ltxtrain.export.lora_file).
"""

from __future__ import annotations

import torch

_QKVO = ("to_q", "to_k", "to_v", "to_out.0")

VIDEO_TARGETS = [f"{a}.{p}" for a in ("attn1", "attn2") for p in _QKVO] + ["ff.net.0.proj", "ff.net.2"]
AUDIO_TARGETS = [f"{a}.{p}" for a in ("audio_attn1", "audio_attn2") for p in _QKVO] + [
    "audio_ff.net.0.proj", "audio_ff.net.2"]
CROSS_MODAL_TARGETS = [f"{a}.{p}" for a in ("audio_to_video_attn", "video_to_audio_attn") for p in _QKVO]
# the ltx-trainer default: q/k/v/out of all six attention types
ATTENTION_TARGETS = list(_QKVO)

DEFAULT_ADAPTER = "default"


def attach_lora(transformer, rank: int, targets: list[str], alpha: float | None = None,
                dropout: float = 0.0, adapter_name: str = DEFAULT_ADAPTER) -> None:
    """Add a peft LoRA adapter (B initialised to zero, so the model's output is unchanged) and freeze everything else.

    alpha defaults to rank (scale 1), which is what LTX/ComfyUI LoRA files assume."""
    from peft import LoraConfig

    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    if not targets:
        raise ValueError("no LoRA target modules given")
    names = [n for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)]
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        raise ValueError(f"LoRA targets match no Linear layer of the transformer: {unmatched}")
    transformer.requires_grad_(False)
    cfg = LoraConfig(r=rank, lora_alpha=float(alpha if alpha is not None else rank), lora_dropout=dropout,
                     init_lora_weights=True, target_modules=list(targets))
    transformer.add_adapter(cfg, adapter_name=adapter_name)
    for n, p in transformer.named_parameters():
        p.requires_grad_(".lora_A." in n or ".lora_B." in n)


def lora_parameters(transformer) -> list[torch.nn.Parameter]:
    return [p for n, p in transformer.named_parameters() if ".lora_A." in n or ".lora_B." in n]


def lora_state_dict(transformer, adapter_name: str = DEFAULT_ADAPTER) -> dict[str, torch.Tensor]:
    """peft keys without the adapter name, e.g. "transformer_blocks.0.attn1.to_q.lora_A.weight"."""
    from peft.utils import get_peft_model_state_dict

    sd = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    return {k.removeprefix("base_model.model."): v for k, v in sd.items()}


def load_lora_state_dict(transformer, peft_sd: dict[str, torch.Tensor], adapter_name: str = DEFAULT_ADAPTER) -> None:
    """Inverse of lora_state_dict (e.g. to resume training); the adapter must already be attached."""
    from peft.utils import set_peft_model_state_dict

    res = set_peft_model_state_dict(transformer, peft_sd, adapter_name=adapter_name)
    missing = [k for k in getattr(res, "missing_keys", []) if "lora_" in k]
    if missing:
        raise KeyError(f"LoRA weights missing from the state dict: {missing[:10]}")
