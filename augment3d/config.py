"""Recipes: TOML files read with ``tomllib`` into dataclasses.

A recipe is a bundled name (``quick``) or a path to a ``.toml`` file. Unknown sections or keys
are refused, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .data.phantom.cohort import PhantomConfig
from .data.preprocess import PreprocessConfig
from .errors import RecipeError
from .training.trainer import TrainConfig

__all__ = ["DataConfig", "Recipe", "load_recipe"]


@dataclass(frozen=True)
class DataConfig:
    """The ``[data]`` section: model grid, clipping, conditioning columns and their categories."""

    shape: int | tuple[int, int, int] = 32
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    conditions: tuple[str, ...] = ()
    categories: dict[str, list[str]] = field(default_factory=dict)

    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(shape=self.shape, clip_percentiles=tuple(self.clip_percentiles))


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    data: DataConfig
    phantom: PhantomConfig
    path: Path
    model: dict = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    bench: object = None  # segbench.config.BenchConfig (imported lazily: augment3d stays free of segbench)

    def model_config(self, cond_dim: int):
        """The architecture for this recipe's grid and a condition vector of ``cond_dim`` values."""
        from .models import ModelConfig

        try:
            return ModelConfig(shape=self.data.preprocess().shape, cond_dim=cond_dim, **self.model)
        except (TypeError, ValueError) as exc:
            raise RecipeError(self.path, f"[model]: {exc}") from None


def _section(cls, table: dict, where: str, path: Path):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise RecipeError(path, f"unknown key(s) in [{where}]: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    try:
        return cls(**table)
    except (TypeError, ValueError) as exc:
        raise RecipeError(path, f"[{where}]: {exc}") from None


def load_recipe(name_or_path: str | os.PathLike) -> Recipe:
    """Load a bundled recipe by name or a TOML file by path. Raises :class:`RecipeError`."""
    from recipes import available, recipe_path

    path = Path(name_or_path)
    if not path.suffix == ".toml":
        bundled = recipe_path(str(name_or_path))
        if bundled is None:
            raise RecipeError(None, f"no recipe named '{name_or_path}' (bundled: {', '.join(available())}; or give a .toml path)")
        path = bundled
    if not path.is_file():
        raise RecipeError(path, "recipe file does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(path, f"not valid TOML ({exc})") from None
    unknown = sorted(set(raw) - {"description", "data", "phantom", "model", "train", "bench"})
    if unknown:
        raise RecipeError(path, f"unknown section(s): {', '.join(unknown)}")
    data = dict(raw.get("data", {}))
    if "shape" in data and isinstance(data["shape"], list):
        data["shape"] = tuple(data["shape"])
    for key in ("clip_percentiles", "conditions"):
        if key in data:
            data[key] = tuple(data[key])
    data_cfg = _section(DataConfig, data, "data", path)
    for column in data_cfg.conditions:
        if column in data_cfg.categories and not data_cfg.categories[column]:
            raise RecipeError(path, f"[data.categories] '{column}' lists no category")
    try:
        data_cfg.preprocess()
    except ValueError as exc:
        raise RecipeError(path, f"[data]: {exc}") from None
    phantom = _section(PhantomConfig, dict(raw.get("phantom", {})), "phantom", path)
    train = _section(TrainConfig, dict(raw.get("train", {})), "train", path)
    model = dict(raw.get("model", {}))
    from segbench.config import BenchConfig

    bench = _section(BenchConfig, dict(raw.get("bench", {})), "bench", path)
    recipe = Recipe(
        name=path.stem,
        description=str(raw.get("description", "")),
        data=data_cfg,
        phantom=phantom,
        path=path,
        model=model,
        train=train,
        bench=bench,
    )
    from .models import ModelConfig

    bad = sorted(set(model) - set(ModelConfig.__dataclass_fields__) | set(model) & {"shape", "cond_dim"})
    if bad:
        raise RecipeError(path, f"unknown or derived key(s) in [model]: {', '.join(bad)}")
    recipe.model_config(cond_dim=0)
    return recipe
