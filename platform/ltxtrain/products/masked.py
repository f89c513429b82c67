"""The masked products: `ic-lora/v2v-masked` (video) and `av2av-masked` (video + audio with an audio reference).

../shared/spec/ic-lora-v2v-masked.md and av2av-masked.md: triplets `<name>_start` (reference), `<name>_end`
(target), `<name>_mask` (image or video; WHITE = regenerate); scene splitting is off.
"""

from __future__ import annotations

from pydantic import Field

from ..api.schema import TrainingRequest, _Strict
from ..models.lora import AUDIO_TARGETS, CROSS_MODAL_TARGETS, VIDEO_TARGETS
from .base import AudioReference, Recipe, ReferenceVideo, VideoMask

TRIPLET_ROLES = {"_start": "reference", "_end": "target", "_mask": "mask"}


class MaskedValidation(_Strict):
    prompt: str
    video_url: str = Field(min_length=1)
    mask_url: str = Field(min_length=1)
    reference_video_url: str = Field(min_length=1)


class AudioMaskedValidation(MaskedValidation):
    reference_audio_url: str | None = None  # without it, the reference video's own audio is the audio reference


class MaskedRequest(TrainingRequest):
    number_of_steps: int = Field(3000, ge=100, le=20000)
    frame_rate: int = Field(24, ge=8, le=60)
    validation_frame_rate: int = Field(24, ge=8, le=60)
    split_input_into_scenes: bool = False
    validation: list[MaskedValidation] = Field(default_factory=list, max_length=2)


class AudioMaskedRequest(MaskedRequest):
    number_of_steps: int = Field(2000, ge=100, le=20000)
    audio_normalize: bool = True
    audio_preserve_pitch: bool = True
    validation: list[AudioMaskedValidation] = Field(default_factory=list, max_length=2)


_FIXED_REFERENCE = ReferenceVideo(spatial_field=None, temporal_field=None)  # same size and rate as the target



def _triplet_recipe(endpoint: str, request_model, conditions: tuple, targets: list[str], training_type: str) -> Recipe:
    return Recipe(
        endpoint=endpoint,
        request_model=request_model,
        roles=TRIPLET_ROLES,
        media_kinds=("video",),
        role_kinds={"mask": ("video", "image")},
        captions_required=lambda r: False,
        conditions=conditions,
        lora_targets=lambda r, audio: list(targets),
        training_type=training_type,
        matched_roles=("reference",),
        scene_splitting=False,
    )


V2V_MASKED = _triplet_recipe("ic-lora/v2v-masked", MaskedRequest, (_FIXED_REFERENCE, VideoMask()),
                             VIDEO_TARGETS, "ic-lora-masked")
AV2AV_MASKED = _triplet_recipe("av2av-masked", AudioMaskedRequest,
                               (_FIXED_REFERENCE, VideoMask(), AudioReference()),
                               VIDEO_TARGETS + AUDIO_TARGETS + CROSS_MODAL_TARGETS, "av2av-masked")
