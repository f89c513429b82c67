"""`audio-extend-prefix` / `audio-extend-suffix` — ../shared/spec/family/audio-extend-{prefix,suffix}.md: the
first (last) `conditioning_seconds` of each clip given clean (round(s x 25) audio latent steps), the rest
generated. Audio only."""

from __future__ import annotations

from pydantic import Field

from ..api.errors import ErrorItem
from ..conditioning.kinds import AudioWindow, From
from .base import ABSENT, GENERATED, AudioOnlyRequest, Recipe, entries
from .t2a import audio_targets


def _conditions(side: str):
    return (AudioWindow(side=side, seconds=From("conditioning_seconds")),)


class AudioExtendRequest(AudioOnlyRequest):
    conditioning_seconds: float = Field(2.0, gt=0.0)
    validation: entries(_conditions("prefix"), "AudioExtendValidation") = []


def check_conditioning_seconds(r: AudioExtendRequest) -> list[ErrorItem]:
    """fal page: the window must be shorter than the bucket, so every clip leaves a continuation to learn."""
    if r.conditioning_seconds * 25 + 1 > round(r.audio_duration_seconds * 25):
        return [ErrorItem(("body", "conditioning_seconds"),
                          f"conditioning_seconds {r.conditioning_seconds:g} must be smaller than audio_duration_seconds "
                          f"{r.audio_duration_seconds:g} (at least one 40 ms audio step left to generate)")]
    return []


def _recipe(side: str) -> Recipe:
    return Recipe(endpoint=f"audio-extend-{side}", request_model=AudioExtendRequest, conditions=_conditions(side),
                  video=ABSENT, audio=GENERATED, media_kinds=("audio",), lora_targets=audio_targets,
                  checks=(check_conditioning_seconds,), scene_splitting=False)


RECIPES = (_recipe("prefix"), _recipe("suffix"))
