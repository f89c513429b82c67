"""`ic-lora/v2v` — IC-LoRA from `_start` (reference) → `_end` (target) pairs (../shared/spec/ic-lora-v2v.md)."""

from __future__ import annotations

from pydantic import Field

from ..api.errors import ErrorItem
from ..api.schema import TrainingRequest
from ..conditioning.kinds import FirstFrame, From, ReferenceVideo
from ..models.lora import VIDEO_TARGETS
from .base import Recipe, entries

CONDITIONS = (FirstFrame(p=From("first_frame_conditioning_p"), image_field=None),
              ReferenceVideo(spatial=From("reference_downscale_factor"), temporal=From("reference_temporal_scale_factor")))


class ICLoRARequest(TrainingRequest):
    number_of_steps: int = Field(3000, ge=100, le=20000)
    first_frame_conditioning_p: float = Field(0.1, ge=0.0, le=1.0)
    frame_rate: int = Field(24, ge=8, le=60)
    validation_frame_rate: int = Field(24, ge=8, le=60)
    reference_downscale_factor: int = Field(1, ge=1, le=8)
    reference_temporal_scale_factor: int = Field(1, ge=1, le=8)
    validation: entries(CONDITIONS, "ReferenceValidation") = []


def check_reference_scaling(r: ICLoRARequest) -> list[ErrorItem]:
    """Spec: the factors must keep the reference on the VAE grid for training AND validation geometry."""
    errors = []
    s = r.reference_downscale_factor
    for label, (w, h) in (("resolution", r.size), ("validation_resolution", r.validation_size)):
        if w % s or h % s or (w // s) % 32 or (h // s) % 32:
            errors.append(ErrorItem(("body", "reference_downscale_factor"),
                                    f"reference_downscale_factor {s} does not fit the {label} {w}x{h}: width and "
                                    f"height must be divisible by it and each quotient divisible by 32"))
    t = r.reference_temporal_scale_factor
    for label in ("number_of_frames", "validation_number_of_frames"):
        frames = getattr(r, label)
        if (frames - 1) % t or ((frames - 1) // t) % 8:
            errors.append(ErrorItem(("body", "reference_temporal_scale_factor"),
                                    f"reference_temporal_scale_factor {t} does not fit {label} {frames}: (frames - 1) "
                                    f"must be divisible by it and the quotient a multiple of 8"))
    return errors


RECIPE = Recipe(
    endpoint="ic-lora/v2v",
    request_model=ICLoRARequest,
    conditions=CONDITIONS,
    target="_end",
    media_kinds=("video",),
    captions_required=lambda r: not r.trigger_phrase,
    lora_targets=lambda r, audio: list(VIDEO_TARGETS),
    checks=(check_reference_scaling,),
    training_type="ic-lora",
)
