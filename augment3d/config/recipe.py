"""Recipes: TOML files read with ``tomllib`` into dataclasses (torch-free).

A recipe is a bundled name (``quick``) or a path to a ``.toml`` file. Unknown sections or keys,
and values of the wrong type (``steps = 2.5``, ``g_lr = nan``, ``conditions = "site"``), are
refused with the file and the key named, so a typo never silently falls back to a default. The
``[bench]`` section belongs to segbench, which reads and checks it (``segbench.config``).
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..data.phantom.cohort import PhantomConfig
from ..data.preprocess import PreprocessConfig
from ..errors import RecipeError
from .field_types import enforce_field_types
from ..models.architecture import ModelConfig
from ..training.terms.settings import FLAT_KEYS
from ..training.train_config import TrainConfig

__all__ = ["DataConfig", "Recipe", "load_recipe", "recipe_toml", "train_table"]

SECTIONS = ("description", "data", "phantom", "model", "train", "bench")
#: options that measured runs retired (docs/MODEL.md, "Removed options"): named, not just unknown
REMOVED = {
    "train": ("lecam", "cond_loss", "seg_label_pull", "seg_pull_on", "seg_augment"),
    "model": ("noise_style",),
}


def _strings(name: str, value) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of strings, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class DataConfig:
    """The ``[data]`` section: model grid, clipping, conditioning columns and their categories."""

    shape: int | tuple[int, int, int] = PreprocessConfig.shape
    clip_percentiles: tuple[float, float] = PreprocessConfig.clip_percentiles
    margin_mm: float = PreprocessConfig.margin_mm
    conditions: tuple[str, ...] = ()
    categories: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):
        enforce_field_types(self)
        object.__setattr__(self, "conditions", _strings("conditions", self.conditions))
        if not isinstance(self.categories, dict):
            raise ValueError(f"categories must be a table of lists, got {self.categories!r}")
        for column, values in self.categories.items():
            if not _strings(f"categories.{column}", values):
                raise ValueError(f"categories.{column} lists no category")
        self.preprocess()  # checks shape and percentiles

    def preprocess(self) -> PreprocessConfig:
        as_tuple = lambda v: tuple(v) if isinstance(v, list) else v  # noqa: E731  (TOML gives lists)
        return PreprocessConfig(
            shape=as_tuple(self.shape), clip_percentiles=as_tuple(self.clip_percentiles), margin_mm=self.margin_mm
        )

    def prepare(self, folder, **options):
        """The cohort in ``folder`` prepared as this section says (grid, conditions, categories);
        ``options`` go to :func:`augment3d.data.cohort.prepare_cohort` (``skip_bad``, ``cache_dir``, ...)."""
        from ..data.cohort import prepare_cohort

        return prepare_cohort(folder, self.preprocess(), self.conditions, self.categories, **options)


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    data: DataConfig
    phantom: PhantomConfig
    path: Path
    model: dict = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: the raw ``[bench]`` table; ``segbench.config.bench_config(recipe)`` reads and checks it
    bench: dict = field(default_factory=dict)

    def model_config(self, cond_dim: int) -> ModelConfig:
        """The architecture for this recipe's grid (an inpainting recipe's: its ``crop``) and a
        condition vector of ``cond_dim`` values."""
        crop = self.model.get("crop", 0)
        shape = (crop,) * 3 if isinstance(crop, int) and not isinstance(crop, bool) and crop > 0 else self.data.preprocess().shape
        try:
            return ModelConfig(shape=shape, cond_dim=cond_dim, **self.model)
        except (TypeError, ValueError) as exc:
            raise RecipeError(self.path, f"[model]: {exc}") from None


def train_table(table, path: Path):
    """``[train]`` with the flat term keys of older recipes (``seg_consistency = 1.0``) moved into
    their ``[train.terms.NAME]`` tables, so old recipes and run folders read as before."""
    if not isinstance(table, dict) or not set(table) & set(FLAT_KEYS):
        return table
    table = dict(table)
    terms = table.get("terms", {})
    if not isinstance(terms, dict):
        return table  # refused with its message by the section check
    terms = {name: dict(values) if isinstance(values, dict) else values for name, values in terms.items()}
    for old in sorted(set(table) & set(FLAT_KEYS)):
        term, key = FLAT_KEYS[old]
        values = terms.setdefault(term, {})
        if isinstance(values, dict) and key in values:
            raise RecipeError(path, f"[train] {old} and [train.terms.{term}] {key} set the same thing; keep the table's")
        if isinstance(values, dict):
            values[key] = table.pop(old)
    table["terms"] = terms
    return table


def _section(cls, table, where: str, path: Path, derived: tuple[str, ...] = ()):
    if not isinstance(table, dict):
        raise RecipeError(path, f"[{where}] must be a table, got {table!r}")
    removed = sorted(set(table) & set(REMOVED.get(where, ())))
    if removed:
        raise RecipeError(
            path,
            f"[{where}] {', '.join(removed)}: removed from augment3d after measured runs "
            "showed no gain (docs/MODEL.md, 'Removed options'); delete the line",
        )
    known = {f.name for f in fields(cls)} - set(derived)
    unknown = sorted(set(table) - known)
    if unknown:
        raise RecipeError(path, f"unknown key(s) in [{where}]: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    try:
        return cls(**table)
    except (TypeError, ValueError) as exc:
        raise RecipeError(path, f"[{where}]: {exc}") from None


def _recipe_file(name_or_path: str | os.PathLike) -> Path:
    from ..recipes import available, recipe_path

    path = Path(name_or_path)
    if path.suffix != ".toml":
        bundled = recipe_path(str(name_or_path))
        if bundled is None:
            raise RecipeError(None, f"no recipe named '{name_or_path}' (bundled: {', '.join(available())}; or give a .toml path)")
        path = bundled
    if not path.is_file():
        raise RecipeError(path, "recipe file does not exist")
    return path


def load_recipe(name_or_path: str | os.PathLike) -> Recipe:
    """Load a bundled recipe by name or a TOML file by path. Raises :class:`RecipeError`."""
    path = _recipe_file(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(path, f"not valid TOML ({exc})") from None
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise RecipeError(path, f"unknown section(s): {', '.join(unknown)}")
    model = raw.get("model", {})
    _section(ModelConfig, model, "model", path, derived=("shape", "cond_dim"))  # keys and types, on a default grid
    bench = raw.get("bench", {})
    if not isinstance(bench, dict):
        raise RecipeError(path, f"[bench] must be a table, got {bench!r}")
    recipe = Recipe(
        name=path.stem,
        description=str(raw.get("description", "")),
        data=_section(DataConfig, raw.get("data", {}), "data", path),
        phantom=_section(PhantomConfig, raw.get("phantom", {}), "phantom", path),
        path=path,
        model=dict(model),
        train=_section(TrainConfig, train_table(raw.get("train", {}), path), "train", path),
        bench=dict(bench),
    )
    recipe.model_config(cond_dim=0)  # the architecture fits the recipe's grid
    return recipe


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML's basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


def recipe_toml(raw: dict) -> str:
    """A recipe's table (as ``tomllib`` reads it) as TOML text that reads back to the same table.

    Top-level tables become ``[section]``s and their sub-tables ``[section.sub]``s; tables deeper
    down, or inside lists, are written inline. Comments of the file it came from are not kept.
    """
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict)]

    def table(name: str, values: dict) -> None:
        lines.extend(["", f"[{name}]"])
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values.items() if not isinstance(v, dict))
        for k, v in values.items():
            if isinstance(v, dict) and "." not in name:
                table(f"{name}.{_toml_key(k)}", v)
            elif isinstance(v, dict):
                lines.append(f"{_toml_key(k)} = {_toml_value(v)}")

    for key, value in raw.items():
        if isinstance(value, dict):
            table(_toml_key(key), value)
    return "\n".join(lines) + "\n"
