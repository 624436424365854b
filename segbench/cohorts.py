"""Replication over phantom cohorts: each cohort seed is a whole, independent bench of its own.

A gain measured on the one cohort and split that a method was tuned on is optimistic, and the
cohort moves the answer more than the test cases do. With ``[bench] cohorts = [0, 11, 12]`` (or
``--cohorts``) the bench runs the whole protocol once per cohort seed C: a phantom cohort built
with ``[phantom] seed = C``, split with ``[bench] split_seed = C``, a GAN trained with
``[train] seed = C`` on that split, every arm and seed. The pooled report
(:mod:`segbench.pooled_report`) puts the cohorts side by side::

    OUT/bench.json              recipe and cohorts this folder belongs to
    OUT/recipe.toml             the recipe as given
    OUT/cohort-<C>.toml         cohort C's recipe (the three seeds set to C; written, then read back)
    OUT/cohort-<C>/             cohort C's bench folder (the layout of :mod:`segbench.bench`)
    OUT/report.json, report.md, forest.png, learning_curves.png     pooled over the cohorts

Every cohort's stages and jobs are independent: ``--cohort C --arm A --seed S`` runs one job of a
job array, ``augment3d bench-report OUT`` merges whatever finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import tomllib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from augment3d.io.atomic import atomic_write_text
from augment3d.config.recipe import Recipe, load_recipe, recipe_toml
from augment3d.errors import DataError
from augment3d.io.output_folders import folder_lock

from .running import Running

from .bench import (
    BenchSetup,
    MARKER,
    bench_identity,
    check_bench_folder,
    claim_bench_folder,
    jobs,
    run_bench,
    setup_bench,
)

__all__ = ["PREFIX", "cohort_folder", "cohort_recipe", "folder_cohorts", "run_cohorts"]

PREFIX = "cohort-"


def cohort_folder(out: str | os.PathLike, cohort: int) -> Path:
    return Path(out) / f"{PREFIX}{cohort}"


def cohort_recipe(recipe: Recipe, cohort: int, out: str | os.PathLike) -> Recipe:
    """``recipe`` for cohort ``cohort``: its phantom, split and GAN seeds set to it; written to
    ``OUT/cohort-<C>.toml`` (so the cohort's bench, GAN run and resume checks all read the recipe
    that was run) and loaded back under the original recipe's name."""
    raw = tomllib.loads(recipe.path.read_text(encoding="utf-8"))
    raw.setdefault("phantom", {})["seed"] = cohort
    raw.setdefault("train", {})["seed"] = cohort
    bench = raw.setdefault("bench", {})
    bench["split_seed"] = cohort
    bench.pop("cohorts", None)
    text = (
        f"# {recipe.name}, cohort {cohort}: [phantom] seed, [bench] split_seed and [train] seed = {cohort}\n"
        f"# (written by augment3d bench from recipe.toml beside it)\n" + recipe_toml(raw)
    )
    path = Path(out) / f"{PREFIX}{cohort}.toml"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return replace(load_recipe(path), name=recipe.name)


def folder_cohorts(folder: str | os.PathLike) -> list[int] | None:
    """The cohorts of a pooled bench folder (its ``bench.json``), or None for a one-cohort bench."""
    marker = Path(folder) / MARKER
    try:
        cohorts = json.loads(marker.read_text(encoding="utf-8")).get("cohorts")
    except (OSError, ValueError, AttributeError):
        return None
    return list(cohorts) if cohorts else None


def run_cohorts(
    recipe: Recipe,
    out: str | os.PathLike,
    cohorts: Sequence[int],
    *,
    cohort: int | None = None,
    arm: str | None = None,
    seed: int | None = None,
    setup_only: bool = False,
    force: bool = False,
    running: Running = Running(),
) -> tuple[list[BenchSetup], dict | None]:
    """Set up and run every cohort's bench (or only ``cohort``'s), then write the pooled report.

    ``running.workers`` > 1: every cohort is set up first, then all cohorts' GANs and jobs share the
    workers (:mod:`segbench.parallel`)."""
    from .config import bench_config
    from .pooled_report import write_pooled_report

    cohorts = list(cohorts)
    if len(set(cohorts)) != len(cohorts) or not cohorts or any(c < 0 for c in cohorts):
        raise DataError(None, f"cohorts must be distinct seeds >= 0, got {cohorts}")
    if cohort is not None and cohort not in cohorts:
        raise DataError(None, f"--cohort {cohort} is not one of this bench's cohorts: {', '.join(map(str, cohorts))}")
    selected = jobs(bench_config(recipe), arm, seed)  # an unknown --arm or --seed is refused before anything is written
    out = Path(out)
    identity = {**bench_identity(recipe, None, None), "cohorts": cohorts}
    ours = check_bench_folder(out, identity, force, [], recipe.path)
    claim_bench_folder(out, identity, ours, recipe.path)
    setups = []
    side_by_side = running.side_by_side and not setup_only
    with folder_lock(out, shared=True), contextlib.ExitStack() as held:
        if not (out / "recipe.toml").is_file():
            atomic_write_text(out / "recipe.toml", recipe.path.read_text(encoding="utf-8"))
        for c in cohorts if cohort is None else [cohort]:
            running.say(f"cohort {c} ({cohorts.index(c) + 1} of {len(cohorts)})")
            mine = running.saying(f"cohort {c}: ")
            if side_by_side:  # the shared stages but the GAN now; the GANs and jobs run side by side below
                setups.append(
                    setup_bench(cohort_recipe(recipe, c, out), cohort_folder(out, c), running=mine, held=held, stages=())
                )
                continue
            setup, _ = run_bench(
                cohort_recipe(recipe, c, out),
                cohort_folder(out, c),
                arm=arm,
                seed=seed,
                setup_only=setup_only,
                running=mine,
            )
            setups.append(setup)
        if setup_only:
            return setups, None
        if side_by_side:
            from .parallel import run_side_by_side
            from .report import write_report

            run_side_by_side(setups, selected, running)
            for setup in setups:
                write_report(setup.folder)
        return setups, write_pooled_report(out)
