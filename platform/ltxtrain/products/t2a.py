"""`t2a` — fal-ai/ltx23-trainer-v2/t2a (../shared/spec/family/t2a.md): text-to-audio LoRA on plain audio clips.
Audio generated; no video at all (the transformer's video stream is a one-token placeholder, isolated, no loss)."""

from __future__ import annotations

from ..models.lora import AUDIO_TARGETS
from .base import ABSENT, GENERATED, AudioOnlyRequest, Recipe, entries

CONDITIONS = ()


class T2ARequest(AudioOnlyRequest):
    validation: entries(CONDITIONS, "T2AValidation") = []


def audio_targets(request, audio: bool) -> list[str]:
    return list(AUDIO_TARGETS)


RECIPE = Recipe(
    endpoint="t2a",
    request_model=T2ARequest,
    conditions=CONDITIONS,
    video=ABSENT,
    audio=GENERATED,
    media_kinds=("audio",),
    lora_targets=audio_targets,
    scene_splitting=False,
)
