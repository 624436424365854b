"""What ``augment3d sample`` generates: seeds, a condition per subject and, for a labels-to-images
run, the label map each subject renders.

Label maps come from the run's own training maps deformed by each subject's seed (the default),
from a cohort folder in BraTS layout (``labels_from``: its label maps and brain masks, prepared on
the run's grid; condition columns not asked for are each case's own), or from a joint run
(``labels_from`` a run folder: the labels it generates for the same seeds and condition).

Example:
    >>> from augment3d.synthesis.sampling import load_generator                          # doctest: +SKIP
    >>> subjects = sample_subjects(load_generator("runs/phantom"), 4, {"site": "SSA"}, labels_from="cohort")  # doctest: +SKIP
    >>> subjects.images.shape, subjects.sources                                 # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, DataError
from ..io.run_files import GENERATOR

__all__ = ["SampledSubjects", "sample_subjects", "label_maps_from", "draw_condition", "CONDITION_DRAWS"]


@dataclass
class SampledSubjects:
    images: np.ndarray
    labels: np.ndarray
    seeds: list[int]
    conditions: list[dict[str, str]]
    #: where each subject's label map came from (a subject id, or a run and seed); None in joint mode
    sources: Sequence[str | None]
    #: how each subject's condition was chosen: given, drawn from the training cohort's
    #: frequencies, balanced, or the label map's own case
    condition_from: list[str]


@dataclass
class _Maps:
    labels: np.ndarray
    masks: np.ndarray
    conditions: list[dict[str, str]]
    sources: list[str]


def label_maps_from(path: str | os.PathLike, gen, n: int, seed: int, conditions: list[dict[str, str]]) -> _Maps:
    """``n`` label maps on ``gen``'s grid from a cohort folder or a joint run (see the module
    docstring); a joint run generates subject i at ``conditions[i]``."""
    path = Path(path)
    if (path / f"{GENERATOR}.json").is_file():
        from .sampling import load_generator

        other = load_generator(path)
        if other.takes_labels:
            raise CheckpointError(
                path,
                "renders images from label maps itself; --labels-from takes a cohort folder "
                "or a joint run (one that generates labels)",
            )
        if other.shape != gen.shape:
            raise CheckpointError(
                path, f"generates on a {'x'.join(map(str, other.shape))} grid, this run renders {'x'.join(map(str, gen.shape))}"
            )
        seeds = list(range(seed, seed + n))
        labels = np.zeros((n, *gen.shape), np.uint8)
        masks = np.zeros((n, *gen.shape), bool)
        for key, members in _groups(conditions).items():
            images, labels[members] = other.generate(
                condition=other.encoder.check(dict(key), source=str(path)) if other.conditions else None,
                seeds=[seeds[i] for i in members],
            )
            masks[members] = (images > -1.0 + 1e-3).any(1)
        return _Maps(labels, masks, conditions, [f"{path.name} seed {s}" for s in seeds])
    from ..data.cohort import prepare_cohort
    from ..data.metadata import read_metadata

    metadata = read_metadata(path) if path.is_dir() else None
    given = conditions[0] if conditions else {}
    columns = [c for c in gen.conditions if metadata is not None and c in metadata.columns and c not in given]
    cohort = prepare_cohort(path, gen.preprocess, columns, gen.conditions)
    cases = [cohort.cases[i % len(cohort.cases)] for i in range(n)]
    return _Maps(
        np.stack([c.label for c in cases]),
        np.stack([(c.images > -1.0 + 1e-3).any(0) for c in cases]),
        [dict(c.conditions) for c in cases],
        [c.subject_id for c in cases],
    )


CONDITION_DRAWS = ("cohort", "balanced")


def draw_condition(gen, seed: int, partial: Mapping[str, str], how: str = "cohort") -> dict[str, str]:
    """The full condition of subject ``seed`` when ``partial`` leaves columns open: drawn (from the
    seed) in proportion to the training cohort's combinations (``cohort``; recorded with the run,
    uniform when not) or cycling through every combination (``balanced``)."""
    options = gen.encoder.matching(partial, source=str(gen.path))
    if how == "balanced":
        return options[seed % len(options)]
    counts = {tuple(sorted(e["condition"].items())): e["count"] for e in gen.meta.get("training_conditions", [])}
    weights = np.array([counts.get(tuple(sorted(o.items())), 0) for o in options], dtype=np.float64)
    weights = weights if weights.sum() > 0 else np.ones(len(options))
    return options[int(np.random.default_rng([seed, 20_251_202]).choice(len(options), p=weights / weights.sum()))]


def sample_subjects(
    gen,
    n: int,
    condition: Mapping[str, str] | None = None,
    seed: int = 0,
    psi: float = 1.0,
    labels_from: str | os.PathLike | None = None,
    conditions_from: str = "cohort",
) -> SampledSubjects:
    """``n`` subjects from seeds ``seed .. seed + n - 1`` (see the module docstring). Condition
    columns that ``condition`` leaves open are drawn per subject (:func:`draw_condition`), or, with
    ``labels_from``, taken from each map's own case."""
    condition = dict(condition or {})
    unknown = sorted(set(condition) - set(gen.conditions))
    if unknown:
        raise CheckpointError(
            gen.path, f"the model has no condition {', '.join(unknown)} (it knows: {', '.join(gen.conditions) or 'none'})"
        )
    if conditions_from not in CONDITION_DRAWS:
        raise ValueError(f"conditions_from must be one of {CONDITION_DRAWS}, got {conditions_from!r}")
    seeds = list(range(seed, seed + n))
    open_columns = [c for c in gen.conditions if c not in condition]
    how = "given" if not open_columns else "training frequencies" if conditions_from == "cohort" else "balanced"
    drawn = [draw_condition(gen, s, condition, conditions_from) if gen.conditions else {} for s in seeds]
    if labels_from is None:
        images = np.zeros((n, len(gen.modalities), *gen.shape), np.float32)
        labels = np.zeros((n, *gen.shape), np.uint8)
        sources: list[str | None] = [None] * n
        for key, members in _groups(drawn).items():
            chunk = [seeds[i] for i in members]
            images[members], labels[members] = gen.generate(condition=dict(key) or None, seeds=chunk, psi=psi)
            if gen.takes_labels:
                for i, source in zip(members, gen.map_sources(chunk, dict(key))):
                    sources[i] = source
        return SampledSubjects(images, labels, seeds, drawn, sources, [how] * n)
    if not gen.takes_labels:
        raise DataError(labels_from, "--labels-from needs a labels-to-images run; this one generates its own labels")
    is_run = (Path(labels_from) / f"{GENERATOR}.json").is_file()
    maps = label_maps_from(labels_from, gen, n, seed, drawn if is_run else [dict(condition)] * n)
    conditions = [
        gen.encoder.check({**own, **condition}, source=f"{labels_from} ({source})") if gen.conditions else {}
        for own, source in zip(maps.conditions, maps.sources)
    ]
    images = np.zeros((n, len(gen.modalities), *gen.shape), np.float32)
    for key, members in _groups(conditions).items():
        images[members], _ = gen.generate(
            condition=dict(key) or None,
            seeds=[seeds[i] for i in members],
            psi=psi,
            label_maps=(maps.labels[members], maps.masks[members]),
        )
    return SampledSubjects(
        images,
        maps.labels.astype(np.uint8),
        seeds,
        conditions,
        maps.sources,
        [how if is_run or not open_columns else "the label map's case"] * n,
    )


def _groups(conditions: list[dict]) -> dict[tuple, list[int]]:
    """Subjects by condition (generated together), in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(conditions):
        groups.setdefault(tuple(sorted(c.items())), []).append(i)
    return groups
