"""`inpaint` — fal-ai/ltx23-trainer-v2/inpaint (../shared/spec/family/inpaint.md): `<name>.<video>` plus
`<name>_mask` (WHITE = regenerate); the unmasked region of the same clip is given clean. Video only."""

from __future__ import annotations

from ..conditioning.kinds import MaskKeep
from ..models.lora import VIDEO_TARGETS
from .base import FamilyRequest, Recipe, entries

CONDITIONS = (MaskKeep(),)


class InpaintRequest(FamilyRequest):
    split_input_into_scenes: bool = False
    validation: entries(CONDITIONS, "InpaintValidation") = []


RECIPE = Recipe(
    endpoint="inpaint",
    request_model=InpaintRequest,
    conditions=CONDITIONS,
    media_kinds=("video",),
    lora_targets=lambda r, audio: list(VIDEO_TARGETS),
    scene_splitting=False,
)
