"""What a product is: a page of declarations the shared pipeline reads. Nothing here knows how to train.

A recipe names its request model, the suffix of its target file, the role of each modality (generated / frozen /
absent / auto) and its list of typed conditions (`conditioning.kinds`). The archive roles, the validation-entry
fields, the cache columns, the tokens and the metadata all come from those conditions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Callable

from pydantic import Field, create_model

from ..api.errors import ErrorItem, RequestError
from ..api.schema import TrainingRequest, ValidationPrompt, _Strict
from ..conditioning.kinds import (ABSENT, AUTO, FROZEN, GENERATED, Condition, ConditionSet, roles_of,
                                  validation_fields_of)

__all__ = ["Recipe", "FamilyRequest", "FamilyAudioRequest", "validation_entry", "entries", "GENERATED", "FROZEN", "ABSENT", "AUTO"]


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
    def matched_roles(self) -> tuple[str, ...]:
        return tuple(r for c in self.conditions for r in c.matched_roles())

    @property
    def audible_roles(self) -> tuple[str, ...]:
        roles = [r for c in self.conditions for r in c.audible_roles()]
        return tuple(dict.fromkeys(roles + (["target"] if self.audio in (GENERATED, FROZEN) else [])))

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

    def bind(self, request: TrainingRequest, audio: bool) -> ConditionSet:
        """The conditions with the request's values, and each modality's resolved role: what travels."""
        items = tuple(b for b in (c.bind(request) for c in self.conditions) if b is not None)
        audio_role = self.audio if self.audio in (GENERATED, FROZEN) else (GENERATED if audio else ABSENT)
        return ConditionSet(video=self.video, audio=audio_role, items=items)
