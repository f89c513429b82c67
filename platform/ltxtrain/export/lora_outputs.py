"""The LoRA files a job ships: gate first (nothing is written for a LoRA that fails it), then the LTX/ComfyUI file
and, for a joint audio+video LoRA, one file per modality (`<name>_video.safetensors`, `<name>_audio.safetensors`;
which keys go where is documented in `lora_file`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .lora_file import AUDIO, VIDEO, save_lora, split_by_stream
from .quality_gate import check_lora


@dataclass
class LoraOutputs:
    lora: Path
    per_modality: dict[str, Path] = field(default_factory=dict)  # "video" / "audio" -> file (joint LoRAs only)
    quality: dict = field(default_factory=dict)


def write_lora_outputs(path: str | Path, peft_sd: dict[str, torch.Tensor], rank: int, alpha: float,
                       metadata: dict[str, str], audio_trained: bool, effect: dict | None = None) -> LoraOutputs:
    """Gate the adapter (QualityGateError: nothing written), then write `path` and, when the LoRA adapts both
    streams, its per-modality files beside it."""
    path = Path(path)
    quality = check_lora(peft_sd, audio_trained, effect)
    save_lora(str(path), peft_sd, rank=rank, alpha=alpha, metadata=metadata)
    parts = split_by_stream(peft_sd)
    written = {}
    if parts[VIDEO] and parts[AUDIO]:
        for modality in (VIDEO, AUDIO):
            target = path.with_name(f"{path.stem}_{modality}{path.suffix}")
            save_lora(str(target), parts[modality], rank=rank, alpha=alpha,
                      metadata={**metadata, "ltxtrain_modality": modality})
            written[modality] = target
    return LoraOutputs(path, written, quality)
