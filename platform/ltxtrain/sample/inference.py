"""Inference with a trained LoRA through the validation previews' own code, so a LoRA is tried as it was validated.

`inference_model(recipe)` is the request: the generic fields plus the ones the recipe's conditions declare for
validation entries. `sample_one` fits and encodes the condition media with `validation.encode_entry` (in-process:
the function the validation Ray task runs), samples with `sampler.sample_latents` and the recipe's bound conditions,
and decodes with `sample.decode`. Condition parameters a request cannot set (e.g. IC-LoRA reference scaling) come
from the LoRA file's metadata, else the training request's defaults.
"""

from __future__ import annotations

import dataclasses
import io
import json
import wave as wavelib
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from ..api.errors import ErrorItem, RequestError
from ..api.schema import MAX_PROMPT_CHARS, MAX_TEXT_CHARS


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=MAX_TEXT_CHARS)

    request_id: str | None = None  # a COMPLETED request of the caller: its LoRA
    lora_url: str | None = None  # or a LoRA file (.safetensors) by URL
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field("worst quality, inconsistent motion, blurry, jittery, distorted",
                                 max_length=MAX_PROMPT_CHARS)
    resolution: Literal["low", "medium", "high"] = "low"
    aspect_ratio: Literal["16:9", "1:1", "9:16"] = "16:9"
    width: int | None = Field(None, ge=32, le=1920)  # explicit size overrides resolution/aspect_ratio
    height: int | None = Field(None, ge=32, le=1920)
    number_of_frames: int = Field(49, ge=9, le=257)
    frame_rate: int = Field(25, ge=8, le=60)
    num_inference_steps: int = Field(20, ge=1, le=100)
    guidance_scale: float = Field(3.0, ge=1.0, le=20.0)
    stg_scale: float = Field(1.0, ge=0.0, le=3.0)  # the training requests' default: previews use it
    lora_scale: float = Field(1.0, ge=0.0, le=2.0)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    with_audio: bool = True

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_32(cls, v: int | None) -> int | None:
        if v is not None and v % 32:
            raise ValueError(f"must be a multiple of 32, got {v}")
        return v

    @field_validator("number_of_frames")
    @classmethod
    def _frames(cls, v: int) -> int:
        if v % 8 != 1:
            raise ValueError(f"must satisfy frames % 8 == 1 (e.g. 9, 17, 25, 49), got {v}")
        return v

    @property
    def size(self) -> tuple[int, int]:
        from ..api.schema import resolution_size

        w, h = resolution_size(self.resolution, self.aspect_ratio)
        return self.width or w, self.height or h

    @property
    def geometry(self) -> tuple[int, int, int, float]:
        """(width, height, frames, fps) the sample is made at."""
        return (*self.size, self.number_of_frames, float(self.frame_rate))


class AudioInferenceRequest(InferenceRequest):
    """Audio-only products: `duration` replaces the video geometry (a 25/s clock, as their training derives)."""

    duration: float = Field(4.0, ge=1.0, le=20.0)

    @field_validator("width", "height", "resolution", "aspect_ratio", "number_of_frames", "frame_rate")
    @classmethod
    def _no_video_geometry(cls, v):
        # runs only on given values: no video is made, so a size or frame count would be silently ignored
        raise ValueError("does not apply to an audio-only endpoint: give duration (seconds)")

    @property
    def geometry(self):
        from ..products.base import AUDIO_FRAME_RATE

        return 32, 32, max(1, round(self.duration * AUDIO_FRAME_RATE)), float(AUDIO_FRAME_RATE)


_MODELS: dict[str, type] = {}


def inference_model(recipe) -> type[InferenceRequest]:
    """The request model of `recipe`'s endpoint: the generic fields plus its validation-entry media fields."""
    from ..conditioning.kinds import validation_fields_of
    from ..products.base import AudioOnlyRequest

    if recipe.endpoint not in _MODELS:
        base = AudioInferenceRequest if issubclass(recipe.request_model, AudioOnlyRequest) else InferenceRequest
        fields = {name: ((str, Field(min_length=1)) if required else (str | None, None))
                  for name, (_, required) in validation_fields_of(recipe.conditions).items()}
        name = "Inference_" + "".join(ch if ch.isalnum() else "_" for ch in recipe.endpoint)
        _MODELS[recipe.endpoint] = create_model(name, __base__=base, **fields)
    return _MODELS[recipe.endpoint]


def parse_inference(recipe, payload) -> InferenceRequest:
    """Validate; raises RequestError with ("body", field) locations."""
    from ..api.schema import parse_request

    req = parse_request(inference_model(recipe), payload)
    if (req.request_id is None) == (req.lora_url is None):
        raise RequestError.field("request_id" if req.lora_url is None else "lora_url",
                                 "give exactly one of request_id (a finished training) or lora_url")
    return req


def media_urls(recipe, req: InferenceRequest) -> dict[str, str]:
    """field -> URL of every condition input the request gives."""
    return {name: getattr(req, name) for name in recipe.validation_roles() if getattr(req, name, None)}


def training_view(recipe, req: InferenceRequest, lora_metadata: dict[str, str]):
    """A training request the recipe's conditions bind against: the LoRA's metadata for fields it names that this
    request cannot set (how the LoRA was trained: reference_downscale_factor, extend's conditioning_frames, ...;
    `Recipe.lora_metadata` writes them), else the training request model's defaults."""
    fields = recipe.request_model.model_fields
    values = {k: f.default for k, f in fields.items() if not f.is_required()}
    for key, raw in lora_metadata.items():
        if key in fields and key not in type(req).model_fields:
            try:
                values[key] = json.loads(raw)
            except (TypeError, ValueError):
                values[key] = raw
    w, h, frames, fps = req.geometry
    for key, value in (("number_of_frames", frames), ("validation_number_of_frames", frames)):
        if key in fields:
            values[key] = value
    return recipe.request_model.model_construct(**values)


def bind_conditions(recipe, req: InferenceRequest, lora_metadata: dict[str, str]):
    """The recipe's conditions as the LoRA was trained (`training_view`, then each kind's `trained`) at this
    request's geometry; RequestError when the LoRA's parameters cannot fit that geometry."""
    view = _Geometry(training_view(recipe, req, lora_metadata), req)
    conditions = recipe.bind(view, bool(req.with_audio))
    conditions = dataclasses.replace(conditions, items=tuple(c.trained(lora_metadata) for c in conditions.items))
    # the LoRA's own parameters (e.g. its reference scaling) must still fit this request's geometry
    problems = [e for check in recipe.checks for e in check(view)]
    problems += [ErrorItem(("body", *loc), msg) for c in conditions.items for loc, msg in c.check(view)]
    if problems:  # a field the request cannot set is the LoRA's training value: say so
        raise RequestError([e if e.loc[-1] in type(req).model_fields else
                            ErrorItem(e.loc, f"{e.msg} (a training parameter of this LoRA: choose a geometry that "
                                             f"fits it)") for e in problems])
    return conditions


def sample_one(recipe, req: InferenceRequest, media: dict[str, str], lora_metadata: dict[str, str], *,
               model_dir: str, transformer, text, negative, decoders: dict, encoders: dict | None = None
               ) -> tuple[bytes, str]:
    """One sample → (file bytes, media type). `media`: field -> local path; `text`/`negative`: TextContexts;
    `encoders`: the VAEs that encode condition media (`encode_entry` loads them when not given)."""
    import torch

    from ..conditioning.kinds import ABSENT, GENERATED
    from ..encode.audio_encoder import model_audio_steps
    from ..encode.cache import from_bytes
    from .decode import decode_audio, decode_video
    from .sampler import Guidance, default_stg_blocks, sample_latents
    from .validation import ValidationItem, encode_entry

    conditions = bind_conditions(recipe, req, lora_metadata)
    w, h, frames, fps = req.geometry
    generate_audio = conditions.audio != ABSENT
    item = ValidationItem(index=0, prompt=req.prompt, text_id="", negative_text_id="", width=w, height=h,
                          num_frames=frames, fps=fps, audio=generate_audio, stg_scale=req.stg_scale, seed=req.seed,
                          audio_steps=model_audio_steps(model_dir, frames / fps))
    roles = recipe.validation_roles()
    by_role = {roles[name]: path for name, path in media.items()}
    cols = {}
    if by_role:
        try:
            data = encode_entry(model_dir, item, by_role, conditions, {r: n for n, r in roles.items()},
                                encoders=encoders)
        except RequestError as exc:  # validation names ("body", "validation", i, field): here it is the field
            raise RequestError([ErrorItem(("body", e.loc[-1]), e.msg) for e in exc.errors]) from None
        cols = {k: v[None].float() for k, v in from_bytes(data).items()}
    f, gh, gw = item.grid if conditions.video != ABSENT else (1, 1, 1)
    guidance = Guidance(cfg=req.guidance_scale, stg=req.stg_scale, stg_blocks=default_stg_blocks(transformer))
    video, audio = sample_latents(
        transformer, text, (f, gh, gw), fps, steps=req.num_inference_steps, conditions=conditions.items, cols=cols,
        audio_steps=item.audio_steps if generate_audio else None, negative=negative, guidance=guidance,
        generator=torch.Generator().manual_seed(req.seed), audio_role=conditions.audio, video_role=conditions.video)
    wave, rate = decode_audio(decoders["audio_vae"], decoders["vocoder"], audio) if audio is not None else (None, None)
    if conditions.video != GENERATED:  # v2a and the audio-only products answer with sound alone
        if wave is None:
            raise RequestError.field("with_audio", "this endpoint generates audio: with_audio must be true")
        return encode_wav(wave, rate), "audio/wav"
    return encode_mp4(decode_video(decoders["vae"], video), fps, wave, rate or 48000), "video/mp4"


class _Geometry:
    """The bound request with this inference's geometry (for the conditions' cross-field checks)."""

    def __init__(self, view, req):
        self._view, self._req = view, req

    def __getattr__(self, name):
        w, h, frames, fps = self._req.geometry
        geo = {"size": (w, h), "validation_size": (w, h), "number_of_frames": frames,
               "validation_number_of_frames": frames}
        return geo[name] if name in geo else getattr(self._view, name)


# ------------------------------------------------------------------------------------------------------ files
def encode_mp4(frames: np.ndarray, fps: float, audio: np.ndarray | None = None, sample_rate: int = 48000) -> bytes:
    """RGB frames [F, H, W, 3] (float in [0, 1] or uint8) and optional audio [channels, samples] (float in
    [-1, 1]) → mp4 bytes."""
    from ..media.mp4 import write_mp4

    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if audio is not None and audio.size:
        audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
        audio = audio[None] if audio.ndim == 1 else audio
    else:
        audio = None
    buf = io.BytesIO()
    write_mp4(buf, frames, fps, audio, int(sample_rate))
    return buf.getvalue()


def encode_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    """float waveform [channels, samples] in [-1, 1] → 16-bit PCM .wav bytes."""
    audio = audio[None] if audio.ndim == 1 else audio
    pcm = (np.clip(audio, -1.0, 1.0).T * 32767.0).round().astype("<i2")
    buf = io.BytesIO()
    with wavelib.open(buf, "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()
