"""What a product is: a declaration the shared pipeline reads. Nothing here knows how to train.

A recipe names
- its request model (fields, defaults, ranges, cross-field checks),
- the file roles in the archive (`""` → the plain media file; later `_start`, `_end`, `_mask`),
- which media kinds it accepts and whether captions are required,
- the conditions it trains with (first frame with probability p, …),
- its default LoRA targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..api.errors import ErrorItem
from ..api.schema import TrainingRequest


@dataclass(frozen=True)
class FirstFrame:
    """Clean first latent frame (pixel frame 0), timestep 0, no loss — drawn per sample with probability p."""

    probability_field: str = "first_frame_conditioning_p"

    def probability(self, request: TrainingRequest) -> float:
        return float(getattr(request, self.probability_field))


@dataclass(frozen=True)
class ReferenceVideo:
    """IC-LoRA: the `reference` role's clip, fitted like the target then scaled by the request's factors,
    appended as clean tokens on the target's coordinates."""

    spatial_field: str | None = "reference_downscale_factor"  # None: the product has no such field (factor 1)
    temporal_field: str | None = "reference_temporal_scale_factor"

    def factors(self, request: TrainingRequest) -> tuple[int, int]:
        def read(name: str | None) -> int:
            return int(getattr(request, name)) if name else 1

        return read(self.spatial_field), read(self.temporal_field)


@dataclass(frozen=True)
class VideoMask:
    """Masked target: the `mask` role (WHITE = regenerate) fitted with the clip's crop; kept tokens are clean,
    timestep 0 and out of the loss."""

    role: str = "mask"


@dataclass(frozen=True)
class AudioReference:
    """The reference clip's audio as clean tokens appended to the audio sequence; the target's audio is generated.
    Both clips must carry an audible track."""


Condition = FirstFrame | ReferenceVideo | VideoMask | AudioReference


@dataclass(frozen=True)
class Recipe:
    endpoint: str
    request_model: type[TrainingRequest]
    # file-name suffix (before the extension) -> role; "" means the bare file name is the media itself
    roles: dict[str, str]
    media_kinds: tuple[str, ...] = ("video", "image")
    # images and videos may not be mixed in one dataset (t2v spec)
    single_media_kind: bool = True
    max_media_files: int = 1000
    captions_required: Callable[[TrainingRequest], bool] = lambda r: False
    conditions: tuple[Condition, ...] = ()
    lora_targets: Callable[[TrainingRequest, bool], list[str]] = lambda r, audio: []
    # extra cross-field checks returning named errors (e.g. reference scale rules)
    checks: tuple[Callable[[TrainingRequest], list[ErrorItem]], ...] = field(default_factory=tuple)
    training_type: str = "lora"
    # request field (null = auto, true, false) that switches joint audio generation on; None: video only
    joint_audio_field: str | None = None
    # roles whose clip must have exactly the target's frame count (one mismatch rejects the request)
    matched_roles: tuple[str, ...] = ()
    # media kinds per role where they differ from `media_kinds` (e.g. masks may be images or videos)
    role_kinds: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # False: scene splitting would desync the files of a sample, so the request may not turn it on
    scene_splitting: bool = True

    def parse(self, payload) -> TrainingRequest:
        from ..api.schema import parse_request
        from ..api.errors import RequestError

        request = parse_request(self.request_model, payload)
        errors = [e for check in self.checks for e in check(request)]
        if not self.scene_splitting and request.split_input_into_scenes:
            errors.append(ErrorItem(("body", "split_input_into_scenes"),
                                    "split_input_into_scenes is not available for this endpoint: it would desync the "
                                    "reference, target and mask; provide pre-split clips"))
        if errors:
            raise RequestError(errors)
        return request

    def first_frame_p(self, request: TrainingRequest) -> float:
        return next((c.probability(request) for c in self.conditions if isinstance(c, FirstFrame)), 0.0)

    def has(self, kind: type) -> bool:
        return any(isinstance(c, kind) for c in self.conditions)

    def kinds_for(self, role: str) -> tuple[str, ...]:
        return self.role_kinds.get(role, self.media_kinds)

    def reference_factors(self, request: TrainingRequest) -> tuple[int, int] | None:
        """(spatial, temporal) when the product trains with a reference video, else None."""
        return next((c.factors(request) for c in self.conditions if isinstance(c, ReferenceVideo)), None)
