"""The job result (`result.json`): the spec's outputs plus billing units."""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path

from pydantic import BaseModel, Field

CONTENT_TYPES = {
    ".safetensors": "application/octet-stream",
    ".json": "application/json",
    ".mp4": "video/mp4",
    ".wav": "audio/wav",
    ".zip": "application/zip",
    ".png": "image/png",
    ".jsonl": "application/jsonl",
}


class OutputFile(BaseModel):
    url: str
    file_name: str
    file_size: int
    content_type: str

    @classmethod
    def from_path(cls, path: str | os.PathLike, url: str | None = None) -> "OutputFile":
        p = Path(path)
        ctype = CONTENT_TYPES.get(p.suffix) or mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        return cls(url=url or p.resolve().as_uri(), file_name=p.name, file_size=p.stat().st_size, content_type=ctype)


class TrainingResult(BaseModel):
    lora_file: OutputFile | None = None
    # joint audio+video LoRAs also ship one file per modality (keys split by the stream they write into)
    lora_video_file: OutputFile | None = None
    lora_audio_file: OutputFile | None = None
    model_file: OutputFile | None = None  # training_mode "full": the weights file, or the shards' index
    model_shards: list[OutputFile] = []  # training_mode "full", sharded: the safetensors shards
    config_file: OutputFile | None = None
    video: OutputFile | None = None
    # audio-output products (v2a, t2a, a2a, audio-inpaint, audio-extend-*): previews as one .wav reel with gaps,
    # its labels (JSON: step, prompt, start/end seconds per preview) and one spectrogram PNG per preview
    audio: OutputFile | None = None
    audio_labels: OutputFile | None = None
    spectrograms: list[OutputFile] = []
    debug_dataset: OutputFile | None = None
    loss_curve: OutputFile | None = None  # beyond the spec: PNG of the loss per modality
    metrics_file: OutputFile | None = None  # beyond the spec: metrics.jsonl (step, losses, lr, step time)
    billing_units: int = 0
    endpoint: str
    number_of_steps: int
    samples: int = 0
    with_audio: bool = False
    skipped: list[dict] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    metrics: dict = Field(default_factory=dict)
    quality: dict = Field(default_factory=dict)  # the LoRA's export checks (export/quality_gate.py)


def billing_units(number_of_steps: int, succeeded: bool) -> int:
    """Spec: a successful run bills max(100, number_of_steps); failures before completion bill 0."""
    return max(100, number_of_steps) if succeeded else 0
