"""Request models: the spec's field names, defaults and ranges, exactly (../shared/spec/*.md).

Each product subclasses `TrainingRequest` and only restates the fields whose default differs or that it adds.
Validation failures become `RequestError` with one `{loc, msg}` per bad field (see `parse_request`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ErrorItem, RequestError

Resolution = Literal["low", "medium", "high"]
AspectRatio = Literal["16:9", "1:1", "9:16"]

# (width, height) per preset and aspect ratio — the spec's table.
RESOLUTIONS: dict[str, dict[str, tuple[int, int]]] = {
    "low": {"16:9": (512, 288), "1:1": (512, 512), "9:16": (288, 512)},
    "medium": {"16:9": (768, 448), "1:1": (768, 768), "9:16": (448, 768)},
    "high": {"16:9": (960, 544), "1:1": (960, 960), "9:16": (544, 960)},
}

DEFAULT_NEGATIVE_PROMPT = "worst quality, inconsistent motion, blurry, jittery, distorted"
# Text caps: a request is a few KB; these bound what a client can make us store, encode and echo back.
MAX_TEXT_CHARS = 8192  # any string field (URLs included; presigned URLs fit)
MAX_PROMPT_CHARS = 2000
MAX_TRIGGER_CHARS = 256


def resolution_size(resolution: str, aspect_ratio: str) -> tuple[int, int]:
    return RESOLUTIONS[resolution][aspect_ratio]


def snap_frames(n: int) -> int:
    """Snap a frame count down to the nearest 8k+1 (the VAE's causal temporal grid)."""
    return max(1, ((n - 1) // 8) * 8 + 1)


class _Strict(BaseModel):
    # Unknown fields are rejected by name: a typo such as "learning_rat" must not silently train with defaults.
    model_config = ConfigDict(extra="forbid", validate_default=True, str_max_length=MAX_TEXT_CHARS)


class ValidationPrompt(_Strict):
    prompt: str = Field(max_length=MAX_PROMPT_CHARS)
    image_url: str | None = None


class TrainingRequest(_Strict):
    """Fields shared by every product (t2v spec values where defaults differ)."""

    training_data_url: str = Field(min_length=1)
    trigger_phrase: str = Field("", max_length=MAX_TRIGGER_CHARS)
    rank: Literal[8, 16, 32, 64, 128] = 32
    number_of_steps: int = Field(2000, ge=100, le=20000)
    learning_rate: float = Field(2e-4, ge=1e-6, le=1.0)
    number_of_frames: int = Field(89, ge=9, le=121)
    frame_rate: int = Field(25, ge=8, le=60)
    resolution: Resolution = "medium"
    aspect_ratio: AspectRatio = "1:1"
    auto_scale_input: bool = False
    split_input_into_scenes: bool = True
    split_input_duration_threshold: float = Field(30.0, ge=1.0, le=60.0)
    validation: list[ValidationPrompt] = Field(default_factory=list, max_length=2)
    validation_negative_prompt: str = Field(DEFAULT_NEGATIVE_PROMPT, max_length=MAX_PROMPT_CHARS)
    validation_number_of_frames: int = Field(89, ge=9, le=121)
    validation_frame_rate: int = Field(25, ge=8, le=60)
    validation_resolution: Resolution = "high"
    validation_aspect_ratio: AspectRatio = "1:1"
    stg_scale: float = Field(1.0, ge=0.0, le=3.0)
    debug_dataset: bool = False
    # training-modes.md: "lora" (default) or "full" (every transformer weight trained; needs multi-GPU FSDP at
    # real sizes). Not one of the hosted products' fields: a platform extension.
    training_mode: Literal["lora", "full"] = "lora"
    # Continue from an existing LoRA (LTX/ComfyUI or diffusers layout) of the same `rank`; fetched and checked at
    # intake under the same URL rules as `training_data_url`. A platform extension like `training_mode`.
    init_lora_url: str | None = None

    @field_validator("number_of_frames", "validation_number_of_frames")
    @classmethod
    def _snap(cls, v: int) -> int:
        # Spec: "other values are snapped down to the nearest valid count".
        return snap_frames(v)

    @field_validator("trigger_phrase")
    @classmethod
    def _strip_trigger(cls, v: str) -> str:
        return v.strip()

    @property
    def size(self) -> tuple[int, int]:
        return resolution_size(self.resolution, self.aspect_ratio)

    @property
    def validation_size(self) -> tuple[int, int]:
        return resolution_size(self.validation_resolution, self.validation_aspect_ratio)


def _loc(err: dict) -> tuple[str | int, ...]:
    return ("body", *err.get("loc", ()))


def _message(err: dict) -> str:
    name = ".".join(str(p) for p in err.get("loc", ())) or "request"
    if err.get("type") == "extra_forbidden":
        return f"unknown field '{name}'"
    if err.get("type") == "missing":
        return f"field '{name}' is required"
    return f"{name}: {err.get('msg', 'invalid value')}"


def parse_request(model: type[TrainingRequest], payload: Any) -> TrainingRequest:
    """Validate a JSON payload into `model`, turning every problem into one named 422 item."""
    if not isinstance(payload, dict):
        raise RequestError(ErrorItem(("body",), "the request must be a JSON object"))
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise RequestError([ErrorItem(_loc(e), _message(e)) for e in exc.errors()]) from None
