"""`a2v` — fal-ai/ltx23-trainer-v2/a2v (../shared/spec/family/a2v.md): start image + audio → video. Groups of
`<name>_start` (image, or a video whose first frame is used), `<name>_audio` (optional when the `_start` video has
a track), `<name>_end` (target video). The start image is written over frame 0 (p = 1); the audio is the frozen
modality: clean for the whole clip, sigma 0, out of the loss; the `_end` clip's own track is ignored."""

from __future__ import annotations

from ..conditioning.kinds import IMAGE_KINDS, VIDEO_KINDS, FirstFrame, GivenAudio
from ..models.lora import VIDEO_TARGETS
from .base import FROZEN, GENERATED, FamilyAudioRequest, Recipe, entries

# the video stream and the audio→video cross-attention: what lets the given track drive the picture
A2V_TARGETS = VIDEO_TARGETS + [f"audio_to_video_attn.{p}" for p in ("to_k", "to_q", "to_v", "to_out.0")]
CONDITIONS = (FirstFrame(p=1.0, source="file", image_field="image_url", image_required=True,
                         file_kinds=IMAGE_KINDS + VIDEO_KINDS),
              GivenAudio(source="first_frame_image", audio_field="audio_url"))


class A2VRequest(FamilyAudioRequest):
    split_input_into_scenes: bool = False  # off: a later scene would have no start image of its own (our choice)
    validation: entries(CONDITIONS, "A2VValidation") = []


RECIPE = Recipe(
    endpoint="a2v",
    request_model=A2VRequest,
    conditions=CONDITIONS,
    target="_end",
    video=GENERATED,
    audio=FROZEN,
    media_kinds=("video",),
    captions_required=lambda r: not r.trigger_phrase,
    lora_targets=lambda r, audio: list(A2V_TARGETS),
    scene_splitting=False,
)
