"""Recipes and their checks, torch-free: :mod:`augment3d.config.recipe` (the loader and the ``Recipe``
dataclass), :mod:`augment3d.config.field_types` (the type checks every settings dataclass runs).

``from augment3d.config import load_recipe`` keeps working: the loader's names are resolved here on
first use, so that a settings dataclass elsewhere can import the type checks without loading every
section of a recipe.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DataConfig", "Recipe", "load_recipe", "recipe_toml"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("augment3d.config.recipe"), name)
    raise AttributeError(f"module 'augment3d.config' has no attribute {name!r}")
