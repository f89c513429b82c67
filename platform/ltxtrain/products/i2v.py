"""`i2v` — fal-ai/ltx23-trainer-v2/i2v (../shared/spec/family/i2v.md): frame 0 of each clip given clean with
probability `first_frame_conditioning_p`; previews start from their required `image_url`."""

from __future__ import annotations

from pydantic import Field

from ..conditioning.kinds import FirstFrame, From
from .base import AUTO, FamilyAudioRequest, Recipe, entries
from .t2v import joint_audio_targets

CONDITIONS = (FirstFrame(p=From("first_frame_conditioning_p"), image_field="image_url", image_required=True),)


class I2VRequest(FamilyAudioRequest):
    first_frame_conditioning_p: float = Field(0.5, ge=0.0, le=1.0)
    with_audio: bool | None = None
    validation: entries(CONDITIONS, "ImageValidation") = []


RECIPE = Recipe(
    endpoint="i2v",
    request_model=I2VRequest,
    conditions=CONDITIONS,
    audio=AUTO,
    audio_field="with_audio",
    media_kinds=("video", "image"),
    lora_targets=joint_audio_targets,
)
