"""`av2av` and `ic-lora/av2av` — ../shared/spec/family/av2av.md, ic-lora-av2av.md (one contract, two routes):
`<name>_start` (reference clip: its video and its track) → `<name>_end` (target video + audio). Both modalities
generated, each beside its clean in-context reference; the reference video may be downscaled in space/time."""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field

from ..conditioning.kinds import From, ReferenceAudio, ReferenceVideo
from ..models.lora import AUDIO_TARGETS, CROSS_MODAL_TARGETS, VIDEO_TARGETS
from .base import GENERATED, FamilyAudioRequest, Recipe, entries
from .ic_lora_v2v import check_reference_scaling

CONDITIONS = (ReferenceVideo(spatial=From("reference_downscale_factor"), temporal=From("reference_temporal_scale_factor")),
              ReferenceAudio(source="reference"))


class AV2AVRequest(FamilyAudioRequest):
    number_of_steps: int = Field(3000, ge=100, le=20000)
    split_input_into_scenes: bool = False
    reference_downscale_factor: int = Field(1, ge=1, le=8)
    reference_temporal_scale_factor: int = Field(1, ge=1, le=8)
    validation: entries(CONDITIONS, "AV2AVValidation") = []


AV2AV = Recipe(
    endpoint="av2av",
    request_model=AV2AVRequest,
    conditions=CONDITIONS,
    target="_end",
    audio=GENERATED,
    media_kinds=("video",),
    lora_targets=lambda r, audio: VIDEO_TARGETS + AUDIO_TARGETS + CROSS_MODAL_TARGETS,
    checks=(check_reference_scaling,),
    training_type="ic-lora",
    scene_splitting=False,
)
RECIPES = (AV2AV, replace(AV2AV, endpoint="ic-lora/av2av"))
