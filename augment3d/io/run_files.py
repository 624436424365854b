"""The files of a run folder (``augment3d train``'s output), named once, and its training log.

A leaf module: the names are what the trainer writes and what sampling, evaluation, the bench and
the CLI read, so they live here rather than in any one of them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from typing import TYPE_CHECKING

from ..errors import DataError

if TYPE_CHECKING:
    from ..data.conditions import ConditionEncoder
    from ..data.preprocess import PreprocessConfig
    from ..models import Generator3D

__all__ = [
    "GENERATOR",
    "TRAIN_STATE",
    "LABEL_MAPS",
    "LOG",
    "SUBJECTS",
    "RECIPE",
    "generator_meta",
    "generator_mode",
    "is_run_folder",
    "read_log",
    "save_generator",
]

GENERATOR = "generator"  # generator.safetensors + generator.json: the EMA generator, what sampling loads
TRAIN_STATE = "train_state"  # train_state.safetensors + .json: everything a resume needs
LABEL_MAPS = "label_maps"  # label_maps.safetensors + .json: the training label maps
LOG = "log.jsonl"  # one JSON object per logged step
SUBJECTS = "subjects.json"  # the subjects trained on (evaluation and the bench hold out the others)
RECIPE = "recipe.toml"  # the recipe as run


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a trained generator or a training state (a run, finished or not)."""
    path = Path(path)
    return (path / f"{GENERATOR}.json").is_file() or (path / f"{TRAIN_STATE}.json").is_file()


def generator_meta(folder: str | os.PathLike) -> dict:
    """A run's ``generator.json`` (its architecture, conditions, preprocessing, voxel size), without
    the weights; {} when the folder has none, one :class:`DataError` when it is damaged."""
    path = Path(folder) / f"{GENERATOR}.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError):
        raise DataError(path, "is not JSON: the generator's description is damaged") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model", {}), dict):
        raise DataError(path, "is not a generator description")
    return meta


def generator_mode(folder: str | os.PathLike) -> str:
    """The mode a run's generator was trained in (``joint`` before the option existed); "" without one."""
    meta = generator_meta(folder)
    return str(meta.get("model", {}).get("mode", "joint")) if meta else ""


def read_log(path: str | os.PathLike) -> list[dict]:
    """The rows of a training log (``log.jsonl``), oldest first; [] when there is none. A last
    line cut short (a run killed while writing it) is left out; damage anywhere else is a
    :class:`DataError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
    rows = []
    for i, (n, line) in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                break  # the write the run was killed in
            raise DataError(path, f"line {n} is not JSON: the training log is damaged") from None
        if not isinstance(row, dict) or "step" not in row:
            raise DataError(path, f"line {n} is not a logged step: the training log is damaged")
        rows.append(row)
    return rows


def save_generator(
    run_dir: str | os.PathLike,
    generator: Generator3D,
    encoder: ConditionEncoder,
    preprocess: PreprocessConfig,
    step: int,
    info: dict | None = None,
) -> None:
    """Write the (EMA) generator as ``generator.safetensors`` + ``generator.json`` in ``run_dir``, the bundle
    :func:`augment3d.synthesis.sampling.load_generator` reads.

    ``info``: more JSON fields about the run (``voxel_mm``, the median voxel size of the data
    on the model grid; ``recipe``, its name).
    """
    from .. import __version__
    from ..brats import CLASS_NAMES, MODALITIES
    from .checkpoint import save_bundle

    meta = {
        **(info or {}),
        "model": generator.config.to_dict(),
        "modalities": list(MODALITIES),
        "label_names": list(CLASS_NAMES),
        "conditions": encoder.to_dict(),
        "preprocess": preprocess.to_dict(),
        "augment3d_version": __version__,
        "step": int(step),
    }
    save_bundle(run_dir, GENERATOR, "generator", generator.state_dict(), meta)
