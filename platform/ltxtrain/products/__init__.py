"""Product registry: endpoint name -> recipe."""

from __future__ import annotations

from ..api.errors import ErrorItem, RequestError
from .base import Recipe

PLANNED: tuple[str, ...] = ()


def _registry() -> dict[str, Recipe]:
    from . import ic_lora_v2v, masked, t2v

    return {r.endpoint: r for r in (t2v.RECIPE, ic_lora_v2v.RECIPE, masked.V2V_MASKED, masked.AV2AV_MASKED)}


def get_recipe(endpoint: str) -> Recipe:
    recipes = _registry()
    name = endpoint.strip("/")
    if name in recipes:
        return recipes[name]
    known = ", ".join(sorted(recipes))
    hint = " (not available yet)" if name in PLANNED else ""
    raise RequestError(ErrorItem(("endpoint",), f"unknown endpoint '{endpoint}'{hint}; available: {known}"))
