"""LoRA files.

* LTX / ComfyUI layout (the user-facing file, what ltx-trainer writes and ComfyUI / ltx-core / diffusers load):
  ``diffusion_model.<official module name>.lora_A.weight`` ``[r, in]`` and ``...lora_B.weight`` ``[out, r]``, no
  ``.alpha`` keys, no rank/alpha metadata. Every consumer assumes ``alpha == rank`` (ltx-core fuses ``W += B @ A``),
  so ``alpha / rank`` is baked into ``lora_B``; ``.alpha`` keys would even make diffusers refuse the file.
  Safetensors metadata (string values only) can carry extra information such as reference scale factors.
* diffusers layout (``pytorch_lora_weights.safetensors`` with ``transformer.`` keys and the LoRA config, alpha
  included, in the ``lora_adapter_metadata`` header).
"""

from __future__ import annotations

import json
import os
from typing import Iterable

import torch

from ..models.single_file import transformer_key_to_original

LTX_PREFIX = "diffusion_model."
DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def _clean_peft_key(k: str) -> str:
    for p in ("base_model.model.", "transformer."):
        k = k.removeprefix(p)
    return k


def _check_peft_sd(peft_sd: dict, rank: int) -> dict[str, torch.Tensor]:
    if not peft_sd:
        raise ValueError("empty LoRA state dict")
    out = {}
    for key, v in peft_sd.items():
        k = _clean_peft_key(key)
        if not (k.endswith(".lora_A.weight") or k.endswith(".lora_B.weight")):
            raise ValueError(f"unsupported LoRA tensor {key!r} (only lora_A / lora_B weights can be exported)")
        r = v.shape[0] if ".lora_A." in k else v.shape[1]
        if r != rank:
            raise ValueError(f"{key} has rank {r}, expected {rank}")
        out[k] = v
    return out


def to_ltx_keys(peft_sd: dict, rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """peft state dict -> LTX/ComfyUI keys, with the LoRA scale alpha/rank baked into lora_B (so alpha == rank holds
    for the file). No ``.alpha`` keys are written."""
    scale = float(alpha) / float(rank)
    out = {}
    for k, v in _check_peft_sd(peft_sd, rank).items():
        v = v.detach()
        if ".lora_B." in k and scale != 1.0:
            v = (v.float() * scale).to(v.dtype)
        out[transformer_key_to_original(k, prefix=LTX_PREFIX)] = v
    return out


def _str_metadata(metadata: dict | None) -> dict[str, str] | None:
    if not metadata:
        return None
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}


def _atomic_save(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None) -> None:
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_lora(path: str, peft_sd: dict, rank: int, alpha: float, metadata: dict[str, str] | None = None,
              dtype: torch.dtype = torch.bfloat16) -> None:
    """Write the user-facing LTX/ComfyUI LoRA file. Metadata values must be strings (non-strings are JSON-encoded)."""
    sd = {k: v.to(dtype).contiguous().cpu() for k, v in to_ltx_keys(peft_sd, rank, alpha).items()}
    _atomic_save(sd, path, _str_metadata(metadata))


def save_lora_diffusers(dir: str, peft_sd: dict, rank: int, alpha: float, targets: Iterable[str]) -> None:
    """diffusers layout: <dir>/pytorch_lora_weights.safetensors with r / lora_alpha / target_modules metadata."""
    from diffusers import LTX2Pipeline

    sd = {k: v.detach().contiguous().cpu() for k, v in _check_peft_sd(peft_sd, rank).items()}
    LTX2Pipeline.save_lora_weights(dir, transformer_lora_layers=sd, weight_name=DIFFUSERS_WEIGHT_NAME,
                                   transformer_lora_adapter_metadata={"r": int(rank), "lora_alpha": float(alpha),
                                                                      "target_modules": sorted(targets)})


def read_lora_metadata(path: str) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return dict(f.metadata() or {})


def load_lora_into_pipeline(pipe, path: str, adapter_name: str = "ltxtrain") -> None:
    """Load an LTX/ComfyUI LoRA file (or a diffusers LoRA folder) into an LTX2Pipeline via ``load_lora_weights``."""
    if os.path.isdir(path):
        pipe.load_lora_weights(path, adapter_name=adapter_name, local_files_only=True)
    elif os.path.isfile(path):
        pipe.load_lora_weights(os.path.dirname(os.path.abspath(path)), weight_name=os.path.basename(path),
                               adapter_name=adapter_name, local_files_only=True)
    else:
        raise FileNotFoundError(path)
