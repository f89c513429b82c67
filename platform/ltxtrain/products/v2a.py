"""`v2a` — fal-ai/ltx23-trainer-v2/v2a (../shared/spec/family/v2a.md): video-to-audio LoRA. Every clip's video is
given clean for the whole clip (frozen modality: sigma 0, out of the loss); its audio track is generated. The
LoRA targets the audio stream and the video→audio cross-attention (the official v2a config)."""

from __future__ import annotations

from ..conditioning.kinds import GivenVideo
from ..models.lora import AUDIO_TARGETS
from .base import FROZEN, GENERATED, FamilyAudioRequest, Recipe, entries

V2A_TARGETS = AUDIO_TARGETS + [f"video_to_audio_attn.{p}" for p in ("to_k", "to_q", "to_v", "to_out.0")]
CONDITIONS = (GivenVideo(),)


class V2ARequest(FamilyAudioRequest):
    validation: entries(CONDITIONS, "V2AValidation") = []


RECIPE = Recipe(
    endpoint="v2a",
    request_model=V2ARequest,
    conditions=CONDITIONS,
    video=FROZEN,
    audio=GENERATED,
    media_kinds=("video",),
    lora_targets=lambda r, audio: list(V2A_TARGETS),
)
