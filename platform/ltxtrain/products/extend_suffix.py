"""`extend-suffix` — fal-ai/ltx23-trainer-v2/extend-suffix (../shared/spec/family/extend-suffix.md): the last
`conditioning_frames` (8k pixel frames = k latent frames) given clean, everything before generated; with
`with_audio`, the audio of the same closing window is given too."""

from __future__ import annotations

from pydantic import Field

from ..api.errors import ErrorItem
from ..conditioning.kinds import From, Suffix
from .base import AUTO, FamilyAudioRequest, Recipe, entries
from .t2v import joint_audio_targets

CONDITIONS = (Suffix(latent_frames=From("conditioning_frames", lambda n: n // 8), audio=From("with_audio")),)


class ExtendSuffixRequest(FamilyAudioRequest):
    conditioning_frames: int = Field(64, ge=1)
    with_audio: bool = False
    validation: entries(CONDITIONS, "ExtendValidation") = []


def check_conditioning_frames(r: ExtendSuffixRequest) -> list[ErrorItem]:
    n = r.conditioning_frames
    if n % 8 != 0 or not 8 <= n <= r.number_of_frames - 1:
        return [ErrorItem(("body", "conditioning_frames"),
                          f"conditioning_frames {n} must be a multiple of 8 between 8 and number_of_frames - 1 "
                          f"({r.number_of_frames - 1}), leaving at least one latent frame to generate")]
    return []


RECIPE = Recipe(
    endpoint="extend-suffix",
    request_model=ExtendSuffixRequest,
    conditions=CONDITIONS,
    audio=AUTO,
    audio_field="with_audio",
    media_kinds=("video",),
    lora_targets=joint_audio_targets,
    checks=(check_conditioning_frames,),
)
