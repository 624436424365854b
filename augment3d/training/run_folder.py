"""The run folder of ``augment3d train``: what ``--resume`` and ``--force`` may do with it.

* a new run writes into a missing or empty folder;
* ``--resume`` continues a run folder that holds a training state, with the same recipe
  (values named in ``allow_changes`` may differ); a run of ours killed before its first
  checkpoint starts again; anything else is refused, and a folder with a generator but no
  training state is never overwritten;
* ``--force`` replaces only a run folder of ours (:func:`augment3d.io.output_folders.check_replaceable`):
  the old folder is set aside and comes back if the new run fails before its first checkpoint.

While a run writes, it holds the folder's lock, so a second ``train`` on the same folder stops.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from ..io.checkpoint import bundle_exists, recorded_step
from ..config.recipe import Recipe, load_recipe
from ..errors import DataError, RecipeError
from ..io.output_folders import KINDS, check_not_an_input, check_replaceable, folder_lock, mark, set_aside
from ..io.run_files import GENERATOR, TRAIN_STATE

__all__ = ["plan_run", "recipe_changes", "writing_run"]


def _settings(recipe: Recipe) -> dict[str, object]:
    """Every setting that shapes training, flattened to ``section.key`` (``train.terms.NAME.key``
    inside the term tables)."""
    flat: dict[str, object] = {}

    def add(prefix: str, values: dict) -> None:
        for key, value in values.items():
            if isinstance(value, dict) and prefix.startswith("train"):
                add(f"{prefix}.{key}", value)
            else:
                flat[f"{prefix}.{key}"] = list(value) if isinstance(value, tuple) else value

    add("data", asdict(recipe.data))
    add("model", recipe.model_config(0).to_dict())
    add("train", asdict(recipe.train))
    return flat


def recipe_changes(before: Recipe, after: Recipe) -> list[str]:
    """``section.key: old -> new`` for every training setting that differs."""
    old, new = _settings(before), _settings(after)
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def _check_same_recipe(out: Path, recipe: Recipe, allow_changes) -> None:
    saved_path = out / "recipe.toml"
    if not saved_path.is_file():
        return  # a run written before the recipe was kept: nothing to compare with
    try:
        saved = load_recipe(saved_path)
    except RecipeError as exc:
        raise DataError(
            saved_path,
            f"the run's recipe no longer loads ({exc.problem}); resume it with the "
            "augment3d that wrote it, or start over with --force",
        ) from None
    allowed = {a if "." in a else f"train.{a}" for a in allow_changes}
    changes = [c for c in recipe_changes(saved, recipe) if c.split(":")[0] not in allowed]
    if changes:
        raise DataError(
            out,
            "the recipe differs from the run's (" + "; ".join(changes) + "); resume with the same "
            "recipe, or name what may change with --allow-change KEY (e.g. train.steps)",
        )


def plan_run(out: str | os.PathLike, recipe: Recipe, *, resume: bool, force: bool, inputs=(), allow_changes=()) -> str:
    """What training into ``out`` will do: ``new``, ``resume``, ``restart`` or ``replace``.

    Raises :class:`DataError` for everything that is not allowed, before anything is changed.
    """
    out = Path(out)
    check_not_an_input(out, inputs)
    if out.exists() and (not out.is_dir() or out.is_symlink()):
        raise DataError(out, "exists and is not a folder")
    empty = not out.exists() or not any(out.iterdir())
    if not resume:
        if empty:
            return "new"
        if not force:
            raise DataError(out, "already exists; use --resume to continue it or --force to start over")
        check_replaceable(out, "run", inputs)
        return "replace"
    if empty:
        raise DataError(out, "nothing to resume: the folder is missing or empty; train without --resume")
    run = KINDS["run"]
    if not any((out / name).is_file() for name in (*run.signature, ".augment3d.json")):
        raise DataError(
            out, "is not an augment3d run folder (no train_state.json, generator.json or subjects.json); nothing to resume"
        )
    _check_same_recipe(out, recipe, allow_changes)
    if bundle_exists(out, TRAIN_STATE):
        return "resume"
    if (out / f"{GENERATOR}.json").is_file():
        raise DataError(
            out,
            f"holds a trained generator (step {recorded_step(out, 'generator')}) but no training state "
            "(train_state.json and .safetensors), so it cannot be resumed; train into another "
            "folder, or use --force to start over (which deletes that generator)",
        )
    return "restart"  # our run, killed before its first checkpoint: nothing of value to lose


@contextlib.contextmanager
def writing_run(out: str | os.PathLike, mode: str, main: bool = True):
    """Hold ``out`` for a run: its lock and marker (rank 0 only). Yields ``commit()``, to be
    called once the new run has a checkpoint: with mode ``replace`` the old folder, set aside
    until then, is deleted; if the run fails before, it is put back."""
    out = Path(out)
    if not main:
        yield lambda: None
        return
    trash = set_aside(out) if mode == "replace" else None
    out.mkdir(parents=True, exist_ok=True)
    pending = [trash]

    def commit() -> None:
        if pending[0] is not None:
            shutil.rmtree(pending[0], ignore_errors=True)
            pending[0] = None

    try:
        with folder_lock(out):
            mark(out, "run")
            yield commit
    except BaseException:
        if pending[0] is not None:  # the new run never reached a checkpoint: the old one comes back
            shutil.rmtree(out, ignore_errors=True)
            os.replace(pending[0] / out.name, out)
            shutil.rmtree(pending[0], ignore_errors=True)
        raise
    commit()
