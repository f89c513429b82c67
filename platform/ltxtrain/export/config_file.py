"""The config JSON shipped beside the LoRA: what it was trained for and how to use it."""

from __future__ import annotations

import json
from pathlib import Path


def write_config(path: str | Path, *, endpoint: str, training_type: str, trigger_phrase: str, rank: int,
                 alpha: float, base_model: str, model_family: str, lora_targets: list[str], request: dict,
                 extra: dict | None = None) -> None:
    data = {
        "trigger_phrase": trigger_phrase,
        "training_type": training_type,
        "endpoint": endpoint,
        "rank": rank,
        "alpha": alpha,  # baked into the weights: alpha == rank holds for the stored tensors
        "base_model": base_model,
        "model_family": model_family,
        "lora_key_format": "ltx-comfyui (diffusion_model.transformer_blocks.N.<module>.lora_A/B.weight)",
        "lora_targets": lora_targets,
        # URLs stay out (a presigned one carries its signature); the job adds init_lora_url redacted
        "training": {k: request[k] for k in sorted(request)
                     if k not in ("training_data_url", "validation", "init_lora_url")},
        **(extra or {}),
    }
    Path(path).write_text(json.dumps(data, indent=2))
