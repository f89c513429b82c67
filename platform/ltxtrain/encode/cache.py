"""The latent cache: one safetensors file per sample and one per distinct caption, plus a manifest.

Per-sample files make preprocessing resumable (an existing file is a finished sample) and let each training worker
read only the samples it draws. Captions are stored once however many scenes share them: text embeddings are
the largest part of a sample at real model sizes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load, load_file, save, save_file

MANIFEST = "manifest.json"
STREAM_PLAN = "stream_plan.json"  # streaming mode: the windows to train on, written before they are all encoded


def stable_id(*parts: object) -> str:
    return hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def atomic_save(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write next to the target and rename, so a crash never leaves a half-written file that looks finished."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def to_bytes(tensors: dict[str, torch.Tensor | None]) -> bytes:
    """A cache file's content in memory (None entries left out): how encoders, which may run on another node,
    hand their results to the driver, the only writer of the cache."""
    return save({k: v.contiguous() for k, v in tensors.items() if v is not None})


def from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    return load(data)


@dataclass
class CachedSample:
    id: str
    name: str  # human name: archive path, plus the scene window when split
    caption: str
    text_id: str
    latent_shape: list[int]  # [C, F, H, W]
    num_frames: int  # pixel frames
    fps: float
    reference_shape: list[int] | None = None  # [C, Fr, Hr, Wr] for IC-LoRA samples
    audio_shape: list[int] | None = None  # [L, Ca] packed audio latents when training with audio
    regenerate_fraction: float | None = None  # masked products: share of target tokens the mask regenerates
    source: dict = field(default_factory=dict)  # where it came from: paths, window, kind (debug archive, audits)

    @property
    def tokens(self) -> int:
        _, f, h, w = self.latent_shape
        return f * h * w


@dataclass
class Manifest:
    model_dir: str
    width: int
    height: int
    num_frames: int
    frame_rate: float
    audio: bool = False
    conditions: list[dict] = field(default_factory=list)  # the bound conditions the cache was made for (JSON)
    samples: list[CachedSample] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def reference_spatial(self) -> int:
        return next((int(c["spatial"]) for c in self.conditions if c["kind"] == "reference_video"), 1)

    @classmethod
    def from_json(cls, data: dict) -> "Manifest":
        samples = [CachedSample(**s) for s in data.pop("samples", [])]
        return cls(samples=samples, **data)


class LatentCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def video_path(self, sample_id: str) -> Path:
        return self.root / self.video_file(sample_id)

    def text_path(self, text_id: str) -> Path:
        return self.root / "text" / f"{text_id}.safetensors"

    def has_video(self, sample_id: str) -> bool:
        return self.video_path(sample_id).exists()

    def has_text(self, text_id: str) -> bool:
        return self.text_path(text_id).exists()

    def write_video(self, sample_id: str, latents: torch.Tensor, **columns: torch.Tensor | None) -> None:
        """One file per sample: video latents, plus the columns its conditions write (packed audio latents,
        reference latents, the latent regenerate-mask, reference audio latents, keyframes, ...)."""
        tensors = {"latents": latents, **columns}
        atomic_save({k: v for k, v in tensors.items() if v is not None}, self.video_path(sample_id))

    def write_text(self, text_id: str, video: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor) -> None:
        atomic_save({"video": video, "audio": audio, "mask": mask}, self.text_path(text_id))

    def load_video(self, sample_id: str) -> dict[str, torch.Tensor]:
        """{"latents": [C, F, H, W]} plus the conditions' columns, e.g. "reference" [C, Fr, Hr, Wr], "audio"
        [L, Ca], "mask" uint8 [F, H, W] (1 = regenerate), "ref_audio" [Lr, Ca]."""
        return load_file(str(self.video_path(sample_id)))

    def video_shapes(self, sample_id: str) -> dict[str, list[int]]:
        """Tensor shapes of a sample file from its header alone (no tensor data is read)."""
        from safetensors import safe_open

        with safe_open(str(self.video_path(sample_id)), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}

    def entry(self, planned: dict) -> CachedSample:
        """The manifest entry of an encoded window: its planned fields (`pipeline.planned_sample`) plus the shapes from
        its file's header (the latents stay on disk) and, for masked products, the share of tokens the mask
        regenerates."""
        shapes = self.video_shapes(planned["id"])
        mask_fraction = None
        if "mask" in shapes:
            mask_fraction = float(self.load_video(planned["id"])["mask"].float().mean())
        return CachedSample(**planned, latent_shape=shapes["latents"], reference_shape=shapes.get("reference"),
                            audio_shape=shapes.get("audio"), regenerate_fraction=mask_fraction)

    def load_text(self, text_id: str) -> dict[str, torch.Tensor]:
        return load_file(str(self.text_path(text_id)))

    @staticmethod
    def video_file(sample_id: str) -> str:
        """A sample file's path relative to the cache root (the same under a local folder or a storage URI)."""
        return f"video/{sample_id}.safetensors"

    def write_stream_plan(self, planned: list[dict]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{STREAM_PLAN}.tmp"
        tmp.write_text(json.dumps(planned, indent=1))
        os.replace(tmp, self.root / STREAM_PLAN)

    def read_stream_plan(self) -> list[dict]:
        return json.loads((self.root / STREAM_PLAN).read_text())

    def write_manifest(self, manifest: Manifest) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest.to_json(), indent=1))
        os.replace(tmp, self.root / MANIFEST)

    def read_manifest(self) -> Manifest:
        return Manifest.from_json(json.loads((self.root / MANIFEST).read_text()))
