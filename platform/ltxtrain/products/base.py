"""What a product is: a page of declarations the shared pipeline reads. Nothing here knows how to train.

A recipe names its request model, the suffix of its target file, the role of each modality (generated / frozen /
absent / auto) and its list of typed conditions (`conditioning.kinds`). The archive roles, the validation-entry
fields, the cache columns, the tokens and the metadata all come from those conditions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Callable

from typing import Literal

from pydantic import Field, create_model, field_validator

from ..api.errors import ErrorItem, RequestError
from ..api.schema import (DEFAULT_NEGATIVE_PROMPT, MAX_PROMPT_CHARS, MAX_TRIGGER_CHARS, TrainingRequest,
                          ValidationPrompt, _Strict)
from ..conditioning.kinds import (ABSENT, AUTO, FROZEN, GENERATED, Condition, ConditionSet, roles_of,
                                  validation_fields_of)

__all__ = ["Recipe", "FamilyRequest", "FamilyAudioRequest", "AudioOnlyRequest", "validation_entry", "entries", "GENERATED", "FROZEN", "ABSENT", "AUTO"]


def validation_entry(name: str, conditions: tuple[Condition, ...]) -> type[_Strict]:
    """The validation-entry model: `prompt` (capped, from `ValidationPrompt`) plus every field the conditions need
    (required or optional)."""
    fields = {}
    for field_name, (_, required) in validation_fields_of(conditions).items():
        fields[field_name] = (str, Field(min_length=1)) if required else (str | None, None)
    return create_model(name, __base__=ValidationPrompt, **fields)


def entries(conditions: tuple[Condition, ...], name: str = "ValidationEntry"):
    """The type of a request's `validation` (default `[]`): at most 2 entries (spec) of the conditions' fields."""
    return Annotated[list[validation_entry(name, conditions)], Field(max_length=2)]


class FamilyRequest(TrainingRequest):
    """Fields every video endpoint of `fal-ai/ltx23-trainer-v2` shares where they differ from `TrainingRequest`
    (../shared/spec/family/INDEX.md, "Shared fields")."""

    frame_rate: int = Field(24, ge=8, le=60)
    validation_frame_rate: int = Field(24, ge=8, le=60)


class FamilyAudioRequest(FamilyRequest):
    audio_normalize: bool = True
    audio_preserve_pitch: bool = True


AUDIO_FRAME_RATE = 25  # audio-only products: the bucket's clock is the audio latent rate (25 steps/s)


class AudioOnlyRequest(_Strict):
    """Fields of the audio-only endpoints (t2a, a2a, audio-inpaint, audio-extend-*): the video block is replaced
    by `audio_duration_seconds` (fal page). The geometry the shared pipeline reads is derived below: a 25/s clock
    whose `number_of_frames` spans the bucket, and a 32x32 nominal size nothing is ever decoded at."""

    training_data_url: str = Field(min_length=1)
    trigger_phrase: str = Field("", max_length=MAX_TRIGGER_CHARS)
    rank: Literal[8, 16, 32, 64, 128] = 32
    number_of_steps: int = Field(3000, ge=100, le=20000)
    learning_rate: float = Field(2e-4, ge=1e-6, le=1.0)
    audio_duration_seconds: float = Field(4.0, ge=1.0, le=20.0)
    audio_normalize: bool = True
    validation_negative_prompt: str = Field(DEFAULT_NEGATIVE_PROMPT, max_length=MAX_PROMPT_CHARS)
    stg_scale: float = Field(1.0, ge=0.0, le=3.0)
    debug_dataset: bool = False
    training_mode: Literal["lora", "full"] = "lora"
    init_lora_url: str | None = None  # continue from an existing LoRA (same rules as TrainingRequest)

    @field_validator("trigger_phrase")
    @classmethod
    def _strip_trigger(cls, v: str) -> str:
        return v.strip()

    # the pipeline's geometry, derived (not request fields)
    audio_preserve_pitch = property(lambda self: True)  # a fitted clip is trimmed, never stretched: unused
    frame_rate = property(lambda self: AUDIO_FRAME_RATE)
    validation_frame_rate = frame_rate
    number_of_frames = property(lambda self: max(1, round(self.audio_duration_seconds * AUDIO_FRAME_RATE)))
    validation_number_of_frames = number_of_frames  # preview length = audio_duration_seconds (spec, our choice)
    size = property(lambda self: (32, 32))
    validation_size = size
    auto_scale_input = property(lambda self: False)
    split_input_into_scenes = property(lambda self: False)
    split_input_duration_threshold = property(lambda self: 60.0)


@dataclass(frozen=True)
class Recipe:
    endpoint: str
    request_model: type[TrainingRequest]
    conditions: tuple[Condition, ...] = ()
    target: str = ""  # file-name suffix of the target ("" = the bare name; "_end" beside "_start")
    video: str = GENERATED
    # "auto": generated when the request's `audio_field` is true, or null and every clip has a track
    audio: str = ABSENT
    audio_field: str | None = None
    media_kinds: tuple[str, ...] = ("video", "image")
    single_media_kind: bool = True  # images and videos may not be mixed in one dataset
    max_media_files: int = 1000
    captions_required: Callable[[TrainingRequest], bool] = lambda r: False
    lora_targets: Callable[[TrainingRequest, bool], list[str]] = lambda r, audio: []
    # extra cross-field checks returning named errors (e.g. reference scale rules)
    checks: tuple[Callable[[TrainingRequest], list[ErrorItem]], ...] = field(default_factory=tuple)
    training_type: str = "lora"
    # False: scene splitting would desync the files of a sample, so the request may not turn it on
    scene_splitting: bool = True

    # ----------------------------------------------------------------------------------- intake
    @property
    def roles(self) -> dict[str, str]:
        """file-name suffix -> role."""
        return {s: role for s, (role, _) in roles_of(self.conditions, self.target).items()}

    def kinds_for(self, role: str) -> tuple[str, ...]:
        kinds = {r: k for r, k in roles_of(self.conditions, self.target).values()}
        return kinds.get(role) or self.media_kinds

    @property
    def all_kinds(self) -> set[str]:
        """Every media kind some role of this product accepts."""
        return {k for _, kinds in roles_of(self.conditions, self.target).values() for k in (kinds or self.media_kinds)}

    @property
    def optional_roles(self) -> tuple[str, ...]:
        return tuple(r for c in self.conditions for r in c.optional_roles())

    @property
    def matched_roles(self) -> tuple[str, ...]:
        return tuple(r for c in self.conditions for r in c.matched_roles())

    @property
    def audible_roles(self) -> tuple[str, ...]:
        roles = [r for c in self.conditions for r in c.audible_roles()]
        own = self.audio in (GENERATED, FROZEN) and not any(c.supplies_audio() for c in self.conditions)
        return tuple(dict.fromkeys(roles + (["target"] if own else [])))

    def validation_roles(self) -> dict[str, str]:
        """validation-entry field -> role."""
        return {name: role for name, (role, _) in validation_fields_of(self.conditions).items()}

    # ----------------------------------------------------------------------------------- request
    def parse(self, payload) -> TrainingRequest:
        from ..api.schema import parse_request

        request = parse_request(self.request_model, payload)
        errors = [e for check in self.checks for e in check(request)]
        for c in self.conditions:
            bound = c.bind(request)
            if bound is not None:
                errors += [ErrorItem(("body", *loc), msg) for loc, msg in bound.check(request)]
        if not self.scene_splitting and request.split_input_into_scenes:
            errors.append(ErrorItem(("body", "split_input_into_scenes"),
                                    "split_input_into_scenes is not available for this endpoint: it would desync the "
                                    "files of a sample; provide pre-split clips"))
        if errors:
            raise RequestError(errors)
        return request

    def lora_metadata(self, request: TrainingRequest, conditions: ConditionSet) -> dict[str, str]:
        """The exported LoRA's metadata: endpoint, rank and training type; the request fields the conditions read,
        by name, JSON-encoded (e.g. extend's `conditioning_frames`), so inference binds the conditions as they
        were trained (`sample.inference.training_view`); and each bound condition's own entries."""
        names = sorted({n for c in self.conditions for n in c.request_fields()} & set(self.request_model.model_fields))
        return {"ltxtrain_endpoint": self.endpoint, "ltxtrain_rank": str(request.rank),
                "training_type": self.training_type, **{n: json.dumps(getattr(request, n)) for n in names},
                **conditions.metadata()}

    def bind(self, request: TrainingRequest, audio: bool) -> ConditionSet:
        """The conditions with the request's values, and each modality's resolved role: what travels."""
        items = tuple(b for b in (c.bind(request) for c in self.conditions) if b is not None)
        audio_role = self.audio if self.audio in (GENERATED, FROZEN) else (GENERATED if audio else ABSENT)
        return ConditionSet(video=self.video, audio=audio_role, items=items)
