"""`t2v` — text-to-video LoRA (../shared/spec/t2v-trainer.md), first frame given with probability p."""

from __future__ import annotations

from pydantic import Field, model_validator

from ..api.schema import TrainingRequest
from ..conditioning.kinds import FirstFrame, From
from ..models.lora import AUDIO_TARGETS, CROSS_MODAL_TARGETS, VIDEO_TARGETS
from .base import AUTO, Recipe, entries

CONDITIONS = (FirstFrame(p=From("first_frame_conditioning_p"), image_field="image_url"),)


class T2VRequest(TrainingRequest):
    first_frame_conditioning_p: float = Field(0.5, ge=0.0, le=1.0)
    with_audio: bool | None = None
    generate_audio_in_validation: bool = True
    audio_normalize: bool = True
    audio_preserve_pitch: bool = True
    validation: entries(CONDITIONS, "T2VValidation") = []

    @model_validator(mode="after")
    def _image_urls_all_or_none(self) -> "T2VRequest":
        with_image = [v.image_url is not None for v in self.validation]
        if any(with_image) and not all(with_image):
            raise ValueError("validation: if any entry has image_url, all entries must have one")
        return self


def joint_audio_targets(request: TrainingRequest, audio: bool) -> list[str]:
    return VIDEO_TARGETS + (AUDIO_TARGETS + CROSS_MODAL_TARGETS if audio else [])


RECIPE = Recipe(
    endpoint="t2v",
    request_model=T2VRequest,
    conditions=CONDITIONS,
    audio=AUTO,
    audio_field="with_audio",
    media_kinds=("video", "image"),
    lora_targets=joint_audio_targets,
)
