"""The masked products: `ic-lora/v2v-masked` (video) and `av2av-masked` (video + audio with an audio reference).

../shared/spec/ic-lora-v2v-masked.md and av2av-masked.md: triplets `<name>_start` (reference), `<name>_end`
(target), `<name>_mask` (image or video; WHITE = regenerate); scene splitting is off.
"""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field

from ..api.schema import TrainingRequest
from ..conditioning.kinds import MaskKeep, ReferenceAudio, ReferenceVideo
from ..models.lora import AUDIO_TARGETS, CROSS_MODAL_TARGETS, VIDEO_TARGETS
from .base import GENERATED, Recipe, entries

VIDEO_CONDITIONS = (ReferenceVideo(), MaskKeep())  # the reference keeps the target's size and rate
AV_CONDITIONS = VIDEO_CONDITIONS + (ReferenceAudio(source="reference"),)


class MaskedRequest(TrainingRequest):
    number_of_steps: int = Field(3000, ge=100, le=20000)
    frame_rate: int = Field(24, ge=8, le=60)
    validation_frame_rate: int = Field(24, ge=8, le=60)
    split_input_into_scenes: bool = False
    validation: entries(VIDEO_CONDITIONS, "MaskedValidation") = []


class AudioMaskedRequest(MaskedRequest):
    number_of_steps: int = Field(2000, ge=100, le=20000)
    audio_normalize: bool = True
    audio_preserve_pitch: bool = True
    # without reference_audio_url, the reference video's own audio is the audio reference
    validation: entries(AV_CONDITIONS, "AudioMaskedValidation") = []


def masked_recipe(endpoint: str, request_model, conditions: tuple, targets: list[str], training_type: str,
                  audio: str = "absent") -> Recipe:
    return Recipe(
        endpoint=endpoint,
        request_model=request_model,
        conditions=conditions,
        target="_end",
        audio=audio,
        media_kinds=("video",),
        lora_targets=lambda r, a: list(targets),
        training_type=training_type,
        scene_splitting=False,
    )


V2V_MASKED = masked_recipe("ic-lora/v2v-masked", MaskedRequest, VIDEO_CONDITIONS, VIDEO_TARGETS, "ic-lora-masked")
AV2AV_MASKED = masked_recipe("av2av-masked", AudioMaskedRequest, AV_CONDITIONS,
                             VIDEO_TARGETS + AUDIO_TARGETS + CROSS_MODAL_TARGETS, "av2av-masked", audio=GENERATED)
# the family's `v2v-masked` (../shared/spec/family/v2v-masked.md) is this contract word for word: one recipe, two names
RECIPES = (V2V_MASKED, AV2AV_MASKED, replace(V2V_MASKED, endpoint="v2v-masked"))
