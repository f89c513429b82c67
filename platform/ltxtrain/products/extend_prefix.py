"""`extend-prefix` — fal-ai/ltx23-trainer-v2/extend-prefix (../shared/spec/family/extend-prefix.md): the first
`conditioning_frames` (8k+1 pixel frames = k latent frames) given clean, the rest generated; with `with_audio`,
the audio of the same opening window is given too."""

from __future__ import annotations

from pydantic import Field

from ..api.errors import ErrorItem
from ..conditioning.kinds import From, Prefix
from .base import AUTO, FamilyAudioRequest, Recipe, entries
from .t2v import joint_audio_targets

CONDITIONS = (Prefix(latent_frames=From("conditioning_frames", lambda n: (n - 1) // 8 + 1), audio=From("with_audio")),)


class ExtendPrefixRequest(FamilyAudioRequest):
    conditioning_frames: int = Field(57, ge=1)
    with_audio: bool = False
    validation: entries(CONDITIONS, "ExtendValidation") = []


def check_conditioning_frames(r: ExtendPrefixRequest) -> list[ErrorItem]:
    n = r.conditioning_frames
    if n % 8 != 1 or n > r.number_of_frames - 8:
        return [ErrorItem(("body", "conditioning_frames"),
                          f"conditioning_frames {n} must be 8k+1 and at most number_of_frames - 8 "
                          f"({r.number_of_frames - 8}), leaving at least one latent frame to generate")]
    return []


RECIPE = Recipe(
    endpoint="extend-prefix",
    request_model=ExtendPrefixRequest,
    conditions=CONDITIONS,
    audio=AUTO,
    audio_field="with_audio",
    media_kinds=("video",),
    lora_targets=joint_audio_targets,
    checks=(check_conditioning_frames,),
)
