"""Product registry: endpoint name -> recipe. A product is one module of declarations listed here."""

from __future__ import annotations

import importlib

from ..api.errors import ErrorItem, RequestError
from .base import Recipe

PRODUCTS = (
    "t2v",
    "ic_lora_v2v",
    "masked",
    "t2v_v2",
    "i2v",
    "inpaint",
    "outpaint",
    "extend_prefix",
    "extend_suffix",
    "interpolate",
    # the audio side (issue 15)
    "t2a",
    "v2a",
    "a2v",
    "a2a",
    "av2av",
    "audio_inpaint",
    "audio_extend",
)


def _registry() -> dict[str, Recipe]:
    recipes: dict[str, Recipe] = {}
    for name in PRODUCTS:
        module = importlib.import_module(f".{name}", __name__)
        for recipe in getattr(module, "RECIPES", None) or (module.RECIPE,):
            recipes[recipe.endpoint] = recipe
    return recipes


def endpoints() -> list[str]:
    return sorted(_registry())


def get_recipe(endpoint: str) -> Recipe:
    recipes = _registry()
    name = endpoint.strip("/")
    if name in recipes:
        return recipes[name]
    known = ", ".join(sorted(recipes))
    raise RequestError(ErrorItem(("endpoint",), f"unknown endpoint '{endpoint}'; available: {known}"))
