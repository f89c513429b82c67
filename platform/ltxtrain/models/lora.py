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


# ---- continuing from an existing LoRA (request field init_lora_url) ------------------------------------------------
# The file is read and normalised once at intake (export.lora_file.read_lora_file: peft keys, float32, alpha baked
# so alpha == rank); the checks below run there and against the model's shapes, so training never meets a bad file.


def _modules(peft_sd: dict) -> list[str]:
    return sorted({k.rsplit(".lora_", 1)[0] for k in peft_sd})


def check_lora_targets(peft_sd: dict[str, torch.Tensor], rank: int, targets: list[str]) -> None:
    """ValueError unless every tensor has `rank` and adapts a module this job's adapter covers (`targets`, the peft
    suffix rule). Modules the file lacks keep their fresh init (B = 0: no effect until trained)."""
    ranks = {v.shape[0] if ".lora_A." in k else v.shape[1] for k, v in peft_sd.items()}
    if ranks != {rank}:
        raise ValueError(f"the LoRA has rank {', '.join(map(str, sorted(ranks)))} but the request's rank is {rank}")
    stray = [m for m in _modules(peft_sd) if not any(m == t or m.endswith("." + t) for t in targets)]
    if stray:
        more = f" (and {len(stray) - 5} more)" if len(stray) > 5 else ""
        raise ValueError(f"the LoRA adapts modules this job does not train: {', '.join(stray[:5])}{more}; "
                         f"this job trains {', '.join(targets)}")


def check_lora_fits(transformer, peft_sd: dict[str, torch.Tensor]) -> None:
    """ValueError unless every module of the file is a Linear layer of `transformer` (a meta-device model is
    enough) with the file's input/output sizes."""
    linears = {n: m for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    for m in _modules(peft_sd):
        layer = linears.get(m)
        if layer is None:
            raise ValueError(f"the model has no layer {m}")
        a, b = peft_sd[f"{m}.lora_A.weight"], peft_sd[f"{m}.lora_B.weight"]
        if a.shape[1] != layer.in_features or b.shape[0] != layer.out_features:
            raise ValueError(f"{m}: the LoRA is {a.shape[1]} -> {b.shape[0]} features, the model's layer "
                             f"{layer.in_features} -> {layer.out_features} (a LoRA for another model?)")


def load_init_lora(transformer, path: str, adapter_name: str = DEFAULT_ADAPTER) -> int:
    """Copy a normalised LoRA file (peft keys) into the attached adapter before the first step; returns the number
    of tensors loaded. Every tensor must land: a key without its adapter parameter raises KeyError."""
    from safetensors.torch import load_file

    params = dict(transformer.named_parameters())
    sd = load_file(path)
    with torch.no_grad():
        for k, v in sd.items():
            name = k.replace(".lora_A.", f".lora_A.{adapter_name}.").replace(".lora_B.", f".lora_B.{adapter_name}.")
            if name not in params:
                raise KeyError(f"initial LoRA tensor {k} has no adapter parameter {name}")
            params[name].copy_(v.to(params[name].dtype))
    return len(sd)
