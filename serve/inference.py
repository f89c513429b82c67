"""Validation-style inference with a trained LoRA: one sample through the diffusers LTX-2 pipeline, as an mp4.

`InferenceEngine` holds the base model (built once) and runs one request at a time: load the LoRA under a fresh
adapter name, sample, delete the adapter, so the base weights are never changed. It runs in-process for tests
(`LocalInference`) or inside the `InferenceDeployment` Serve replica (with `num_gpus` on GPU clusters), which the
API reaches through a handle (`HandleInference`). User errors come back as data (`{"errors": [...]}`), not as
exceptions, so they cross the Serve boundary intact.
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
import threading
import uuid
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ltxtrain.api.schema import MAX_PROMPT_CHARS, MAX_TEXT_CHARS

from .config import ServeConfig

SUPPORTED = ("t2v",)  # ic-lora/v2v needs a reference-video pipeline: not served yet


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=MAX_TEXT_CHARS)

    request_id: str | None = None  # a COMPLETED request of the caller: its LoRA
    lora_url: str | None = None  # or a LoRA file (.safetensors) by URL
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field("worst quality, inconsistent motion, blurry, jittery, distorted",
                                 max_length=MAX_PROMPT_CHARS)
    resolution: Literal["low", "medium", "high"] = "low"
    aspect_ratio: Literal["16:9", "1:1", "9:16"] = "16:9"
    width: int | None = Field(None, ge=32, le=1920)  # explicit size overrides resolution/aspect_ratio
    height: int | None = Field(None, ge=32, le=1920)
    number_of_frames: int = Field(49, ge=9, le=257)
    frame_rate: int = Field(25, ge=8, le=60)
    num_inference_steps: int = Field(20, ge=1, le=100)
    guidance_scale: float = Field(3.0, ge=1.0, le=20.0)
    lora_scale: float = Field(1.0, ge=0.0, le=2.0)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    with_audio: bool = True

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_32(cls, v: int | None) -> int | None:
        if v is not None and v % 32:
            raise ValueError(f"must be a multiple of 32, got {v}")
        return v

    @field_validator("number_of_frames")
    @classmethod
    def _frames(cls, v: int) -> int:
        if v % 8 != 1:
            raise ValueError(f"must satisfy frames % 8 == 1 (e.g. 9, 17, 25, 49), got {v}")
        return v

    @property
    def size(self) -> tuple[int, int]:
        from ltxtrain.api.schema import resolution_size

        w, h = resolution_size(self.resolution, self.aspect_ratio)
        return self.width or w, self.height or h


def parse_inference_request(payload) -> InferenceRequest:
    """Validate into InferenceRequest; raises the library's RequestError with ("body", field) locations."""
    from ltxtrain.api.errors import RequestError
    from ltxtrain.api.schema import parse_request

    req = parse_request(InferenceRequest, payload)
    if (req.request_id is None) == (req.lora_url is None):
        raise RequestError.field("request_id" if req.lora_url is None else "lora_url",
                                 "give exactly one of request_id (a finished training) or lora_url")
    return req


# ------------------------------------------------------------------------------------------------------ mp4
def encode_mp4(frames: np.ndarray, fps: float, audio: np.ndarray | None = None, sample_rate: int = 48000) -> bytes:
    """RGB frames [F, H, W, 3] (float in [0, 1] or uint8) and optional audio [channels, samples] (float in
    [-1, 1]) → mp4 bytes: H.264 (MPEG-4 part 2 if this PyAV lacks libx264) + AAC."""
    from ltxtrain.media.mp4 import write_mp4

    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if audio is not None and audio.size:
        audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
        audio = audio[None] if audio.ndim == 1 else audio
    else:
        audio = None
    buf = io.BytesIO()
    write_mp4(buf, frames, fps, audio, int(sample_rate))
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------ engine
class InferenceEngine:
    def __init__(self, model: str, home: str, text_encoder: str | None = None, allow_private_urls: bool = False,
                 max_lora_bytes: int = 4 * 2**30, device: str | None = None):
        import torch

        from ltxtrain.models.bundle import build_pipeline, load_model_info, resolve_model

        self.model_dir = resolve_model(model, os.path.join(home, "models"), text_encoder=text_encoder)
        self.info = load_model_info(self.model_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.pipe = build_pipeline(self.model_dir, dtype=dtype, device=self.device)
        self.allow_private_urls = allow_private_urls
        self.max_lora_bytes = max_lora_bytes
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: ServeConfig) -> "InferenceEngine":
        return cls(config.model, config.home, text_encoder=config.text_encoder,
                   allow_private_urls=config.allow_private_urls, max_lora_bytes=config.max_lora_bytes)

    def generate(self, endpoint: str, params: dict, lora: dict) -> dict:
        """→ {"video": mp4 bytes} or {"errors": [{loc, msg}]} (the request's fault)."""
        from ltxtrain.api.errors import RequestError

        try:
            if endpoint not in SUPPORTED:
                raise RequestError.field("endpoint", f"inference for '{endpoint}' is not available yet; "
                                                     f"available: {', '.join(SUPPORTED)}")
            req = parse_inference_request(params)
            with tempfile.TemporaryDirectory(prefix="ltxtrain-lora-") as tmp:
                path = self._lora_path(lora, tmp)
                return {"video": self._sample(req, path)}
        except RequestError as exc:
            return {"errors": [e.to_json() for e in exc.errors]}

    def _lora_path(self, lora: dict, tmp: str) -> str:
        from ltxtrain.api.errors import RequestError
        from ltxtrain.intake.fetch import fetch
        from ltxtrain.intake.limits import IntakeLimits

        if lora.get("path"):
            return lora["path"]
        limits = IntakeLimits(max_download_bytes=self.max_lora_bytes,
                              allow_private_addresses=self.allow_private_urls, timeout_s=60.0)
        path = fetch(lora["url"], os.path.join(tmp, "lora.safetensors"), limits, field="lora_url")
        try:
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                f.keys()
        except Exception:  # noqa: BLE001 - anything that is not a readable safetensors file
            raise RequestError.field("lora_url", "the file is not a .safetensors LoRA") from None
        return path

    def _sample(self, req: InferenceRequest, lora_path: str) -> bytes:
        import torch

        from ltxtrain.api.errors import RequestError
        from ltxtrain.export.lora_file import load_lora_into_pipeline

        field = "lora_url" if req.lora_url else "request_id"
        width, height = req.size
        with self._lock:
            name = f"lora_{uuid.uuid4().hex[:12]}"
            try:
                load_lora_into_pipeline(self.pipe, lora_path, adapter_name=name)
            except Exception as exc:  # noqa: BLE001 - keys that match no module of this model, bad shapes
                raise RequestError.field(field, f"the LoRA does not fit this model: {exc}") from None
            try:
                self.pipe.set_adapters([name], [req.lora_scale])
                g = req.guidance_scale
                out = self.pipe(
                    prompt=req.prompt, negative_prompt=req.negative_prompt, width=width, height=height,
                    num_frames=req.number_of_frames, frame_rate=float(req.frame_rate),
                    num_inference_steps=req.num_inference_steps, guidance_scale=g, audio_guidance_scale=g,
                    stg_scale=0.0, audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0,
                    guidance_rescale=0.0, audio_guidance_rescale=0.0,
                    max_sequence_length=self.info.max_sequence_length, output_type="np",
                    generator=torch.Generator(device=self.device).manual_seed(req.seed),
                )
            finally:
                self.pipe.delete_adapters(name)
        frames = np.asarray(out.frames[0])
        audio = None
        if req.with_audio and out.audio is not None:
            audio = out.audio[0].float().cpu().numpy() if hasattr(out.audio, "cpu") else np.asarray(out.audio[0])
        cfg = self.pipe.vocoder.config
        sr = getattr(cfg, "output_sampling_rate", None) or getattr(cfg, "sampling_rate", None) or 24000
        return encode_mp4(frames, req.frame_rate, audio, int(sr))


# ------------------------------------------------------------------------------------------------------ backends
class LocalInference:
    """The engine in this process, built on first use (tests, single-process runs)."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self._engine: InferenceEngine | None = None
        self._lock = threading.Lock()

    def _get(self) -> InferenceEngine:
        with self._lock:
            if self._engine is None:
                self._engine = InferenceEngine.from_config(self.config)
            return self._engine

    async def __call__(self, endpoint: str, params: dict, lora: dict) -> dict:
        return await asyncio.to_thread(lambda: self._get().generate(endpoint, params, lora))


class HandleInference:
    """The InferenceDeployment replica, through a Serve handle."""

    def __init__(self, handle):
        self.handle = handle

    async def __call__(self, endpoint: str, params: dict, lora: dict) -> dict:
        return await self.handle.generate.remote(endpoint, params, lora)


class InferenceDeployment:
    """Serve deployment body (wrapped with `serve.deployment` in serve/app.py): holds the base model."""

    def __init__(self, config: dict):
        cfg = ServeConfig(**config)
        os.environ.setdefault("LTXTRAIN_HOME", cfg.home)
        self.engine = InferenceEngine.from_config(cfg)

    def generate(self, endpoint: str, params: dict, lora: dict) -> dict:
        return self.engine.generate(endpoint, params, lora)
