"""`a2a` — fal-ai/ltx23-trainer-v2/a2a (../shared/spec/family/a2a.md): `<name>_start` (reference audio) →
`<name>_end` (target audio), both audio files; the reference rides along as clean in-context audio tokens from
t = 0. No video (one-token placeholder)."""

from __future__ import annotations

from ..conditioning.kinds import ReferenceAudio
from .base import ABSENT, GENERATED, AudioOnlyRequest, Recipe, entries
from .t2a import audio_targets

CONDITIONS = (ReferenceAudio(source="reference", suffix="_start", required=True),)


class A2ARequest(AudioOnlyRequest):
    validation: entries(CONDITIONS, "A2AValidation") = []


RECIPE = Recipe(
    endpoint="a2a",
    request_model=A2ARequest,
    conditions=CONDITIONS,
    target="_end",
    video=ABSENT,
    audio=GENERATED,
    media_kinds=("audio",),
    lora_targets=audio_targets,
    training_type="ic-lora",
    scene_splitting=False,
)
