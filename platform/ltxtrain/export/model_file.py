"""Full fine-tune weights as diffusers-layout safetensors, written while the tensors stream in.

The writer never holds more than one shard: a 22B transformer in bf16 (44 GB) becomes a handful of
`diffusion_pytorch_model-0000k-of-0000N.safetensors` files plus `diffusion_pytorch_model.safetensors.index.json`,
which `LTX2VideoTransformer3DModel.from_pretrained` reads as is. A model that fits one shard is one plain
`diffusion_pytorch_model.safetensors`.
"""

from __future__ import annotations

import json
import os
from typing import Iterable

import torch

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3


def write_sharded(tensors: Iterable[tuple[str, torch.Tensor]], out_dir: str, dtype: torch.dtype | None = None,
                  max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> list[str]:
    """Write (name, tensor) pairs in order into shards of at most `max_shard_bytes` (a bigger single tensor gets a
    shard of its own). Returns the written file names, the index last when there is more than one shard."""
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    parts: list[list[str]] = []
    current: dict[str, torch.Tensor] = {}
    size = 0
    total = 0

    def flush() -> None:
        nonlocal current, size
        if current:
            save_file(current, os.path.join(out_dir, f".part-{len(parts):05d}.safetensors"))
            parts.append(list(current))
            current, size = {}, 0

    for name, tensor in tensors:
        tensor = tensor.detach().to("cpu", dtype=dtype or tensor.dtype).contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > max_shard_bytes:
            flush()
        current[name] = tensor
        size += nbytes
        total += nbytes
    flush()
    if len(parts) == 1:
        os.replace(os.path.join(out_dir, ".part-00000.safetensors"), os.path.join(out_dir, WEIGHTS_NAME))
        return [WEIGHTS_NAME]
    names, weight_map = [], {}
    for i, keys in enumerate(parts):
        name = WEIGHTS_NAME.replace(".safetensors", f"-{i + 1:05d}-of-{len(parts):05d}.safetensors")
        os.replace(os.path.join(out_dir, f".part-{i:05d}.safetensors"), os.path.join(out_dir, name))
        names.append(name)
        weight_map.update({k: name for k in keys})
    with open(os.path.join(out_dir, INDEX_NAME), "w") as fh:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, fh, indent=2)
    return names + [INDEX_NAME]
