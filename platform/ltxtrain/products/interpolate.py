"""`interpolate` — fal-ai/ltx23-trainer-v2/interpolate (../shared/spec/family/interpolate.md): pixel frame 0, the
last pixel frame and optionally the middle one are given clean; the frames between are generated. Video only.
Frame 0 is the first latent frame; the last (and middle) frames are keyframe tokens at their own RoPE time."""

from __future__ import annotations

from ..conditioning.kinds import FirstFrame, From, Keyframe
from ..models.lora import VIDEO_TARGETS
from .base import FamilyRequest, Recipe, entries

CONDITIONS = (
    FirstFrame(p=1.0, image_field="start_image_url", image_required=True),
    Keyframe("last", image_field="end_image_url"),
    Keyframe("middle", image_field="middle_image_url", enabled=From("use_middle_keyframe"), image_required=False),
)


class InterpolateRequest(FamilyRequest):
    use_middle_keyframe: bool = False
    validation: entries(CONDITIONS, "KeyframeValidation") = []


RECIPE = Recipe(
    endpoint="interpolate",
    request_model=InterpolateRequest,
    conditions=CONDITIONS,
    media_kinds=("video",),
    lora_targets=lambda r, audio: list(VIDEO_TARGETS),
)
