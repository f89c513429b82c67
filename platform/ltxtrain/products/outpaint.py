"""`outpaint` — fal-ai/ltx23-trainer-v2/outpaint (../shared/spec/family/outpaint.md): a fixed rectangle of the
training frame (`crop_top_left` / `crop_bottom_right`, training pixels) given clean on every frame; the surround
is generated. Both corners null: the centred 3/4 rectangle."""

from __future__ import annotations

from ..api.errors import ErrorItem
from ..conditioning.kinds import From, SpatialKeep
from ..models.lora import VIDEO_TARGETS
from .base import FamilyRequest, Recipe, entries


def kept_rect(r: "OutpaintRequest") -> tuple[int, int, int, int]:
    w, h = r.size
    if r.crop_top_left is None or r.crop_bottom_right is None:  # (one corner alone is a 422: check_corners)
        return (w // 8, h // 8, w - w // 8, h - h // 8)
    return (*r.crop_top_left, *r.crop_bottom_right)


CONDITIONS = (SpatialKeep(rect=From(None, kept_rect), size=From("size")),)


class OutpaintRequest(FamilyRequest):
    crop_top_left: tuple[int, int] | None = None
    crop_bottom_right: tuple[int, int] | None = None
    validation: entries(CONDITIONS, "OutpaintValidation") = []


def check_corners(r: OutpaintRequest) -> list[ErrorItem]:
    if (r.crop_top_left is None) == (r.crop_bottom_right is None):
        return []
    missing = "crop_bottom_right" if r.crop_bottom_right is None else "crop_top_left"
    return [ErrorItem(("body", missing), f"{missing} is required when the other corner is set (or leave both null)")]


RECIPE = Recipe(
    endpoint="outpaint",
    request_model=OutpaintRequest,
    conditions=CONDITIONS,
    media_kinds=("video",),
    lora_targets=lambda r, audio: list(VIDEO_TARGETS),
    checks=(check_corners,),
)
