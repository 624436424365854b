"""Named recipes (TOML files) shipped inside augment3d: ``ci``, ``quick``, ``phantom``, ``brats_africa_128``.

The repository's top-level ``recipes/`` is a link to this folder."""

from __future__ import annotations

from pathlib import Path

__all__ = ["RECIPE_DIR", "available", "recipe_path"]

RECIPE_DIR = Path(__file__).parent


def available() -> list[str]:
    """Names of the bundled recipes."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


def recipe_path(name: str) -> Path | None:
    """Path of the bundled recipe ``name``, or ``None``."""
    path = RECIPE_DIR / f"{name}.toml"
    return path if path.is_file() else None
