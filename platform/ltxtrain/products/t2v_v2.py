"""`ltx23/t2v` — fal-ai/ltx23-trainer-v2/t2v (../shared/spec/family/t2v.md): video from text alone, joint audio
when every clip has a track. No conditioning asset, so no conditions."""

from __future__ import annotations

from .base import AUTO, FamilyAudioRequest, Recipe, entries
from .t2v import joint_audio_targets


class T2VFamilyRequest(FamilyAudioRequest):
    with_audio: bool | None = None
    validation: entries((), "PromptValidation") = []


RECIPE = Recipe(
    endpoint="ltx23/t2v",
    request_model=T2VFamilyRequest,
    conditions=(),
    audio=AUTO,
    audio_field="with_audio",
    media_kinds=("video", "image"),
    lora_targets=joint_audio_targets,
)
