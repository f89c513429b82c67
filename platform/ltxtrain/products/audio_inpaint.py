"""`audio-inpaint` — fal-ai/ltx23-trainer-v2/audio-inpaint (../shared/spec/family/audio-inpaint.md): each clip
`<name>.<audio>` with `<name>_mask.json` ([[start, end], ...] seconds to REGENERATE); the rest is clean.
Previews take `audio_url` and `mask_url` (a JSON file of the same format; the spec's `mask_ranges` name is ours
to choose, and a file keeps one format and one code path for archive and preview)."""

from __future__ import annotations

from ..conditioning.kinds import AudioSpans
from .base import ABSENT, GENERATED, AudioOnlyRequest, Recipe, entries
from .t2a import audio_targets

CONDITIONS = (AudioSpans(),)


class AudioInpaintRequest(AudioOnlyRequest):
    validation: entries(CONDITIONS, "AudioInpaintValidation") = []


RECIPE = Recipe(
    endpoint="audio-inpaint",
    request_model=AudioInpaintRequest,
    conditions=CONDITIONS,
    video=ABSENT,
    audio=GENERATED,
    media_kinds=("audio",),
    lora_targets=audio_targets,
    scene_splitting=False,
)
