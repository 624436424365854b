"""What ``augment3d sample`` generates: seeds, a condition per subject and, for a labels-to-images
run, the label map each subject renders.

Label maps come from the run's own training maps deformed by each subject's seed (the default),
from a cohort folder in BraTS layout (``labels_from``: its label maps and brain masks, prepared on
the run's grid; condition columns not asked for are each case's own), or from a joint run
(``labels_from`` a run folder: the labels it generates for the same seeds and condition).

Example:
    >>> from augment3d.sampling import load_generator                          # doctest: +SKIP
    >>> subjects = sample_subjects(load_generator("runs/phantom"), 4, {"site": "SSA"}, labels_from="cohort")  # doctest: +SKIP
    >>> subjects.images.shape, subjects.sources                                 # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CheckpointError, DataError

__all__ = ["SampledSubjects", "sample_subjects", "label_maps_from"]


@dataclass
class SampledSubjects:
    images: np.ndarray
    labels: np.ndarray
    seeds: list[int]
    conditions: list[dict[str, str]]
    #: where each subject's label map came from (a subject id, or a run and seed); None in joint mode
    sources: list[str | None]


@dataclass
class _Maps:
    labels: np.ndarray
    masks: np.ndarray
    conditions: list[dict[str, str]]
    sources: list[str]


def label_maps_from(path: str | os.PathLike, gen, n: int, seed: int, condition: Mapping[str, str]) -> _Maps:
    """``n`` label maps on ``gen``'s grid from a cohort folder or a joint run (see the module docstring)."""
    path = Path(path)
    if (path / "generator.json").is_file():
        from .sampling import load_generator

        other = load_generator(path)
        if other.takes_labels:
            raise CheckpointError(path, "renders images from label maps itself; --labels-from takes a cohort folder "
                                        "or a joint run (one that generates labels)")
        if other.shape != gen.shape:
            raise CheckpointError(path, f"generates on a {'x'.join(map(str, other.shape))} grid, this run renders "
                                        f"{'x'.join(map(str, gen.shape))}")
        seeds = list(range(seed, seed + n))
        images, labels = other.generate(condition=other.encoder.check(dict(condition), source=str(path))
                                        if other.conditions else None, seeds=seeds)
        return _Maps(labels, (images > -1.0 + 1e-3).any(1), [dict(condition)] * n, [f"{path.name} seed {s}" for s in seeds])
    from .data.cohort import prepare_cohort
    from .data.metadata import read_metadata

    metadata = read_metadata(path) if path.is_dir() else None
    columns = [c for c in gen.conditions if metadata is not None and c in metadata.columns and c not in condition]
    cohort = prepare_cohort(path, gen.preprocess, columns, gen.conditions)
    cases = [cohort.cases[i % len(cohort.cases)] for i in range(n)]
    return _Maps(np.stack([c.label for c in cases]), np.stack([(c.images > -1.0 + 1e-3).any(0) for c in cases]),
                 [dict(c.conditions) for c in cases], [c.subject_id for c in cases])


def sample_subjects(gen, n: int, condition: Mapping[str, str] | None = None, seed: int = 0, psi: float = 1.0,
                    labels_from: str | os.PathLike | None = None) -> SampledSubjects:
    """``n`` subjects from seeds ``seed .. seed + n - 1`` (see the module docstring)."""
    condition = dict(condition or {})
    unknown = sorted(set(condition) - set(gen.conditions))
    if unknown:
        raise CheckpointError(gen.path, f"the model has no condition {', '.join(unknown)} "
                                        f"(it knows: {', '.join(gen.conditions) or 'none'})")
    seeds = list(range(seed, seed + n))
    if labels_from is None:
        full = gen.encoder.check(condition, source=str(gen.path)) if gen.conditions else None
        images, labels = gen.generate(condition=full, seeds=seeds, psi=psi)
        sources = gen.map_sources(seeds, full) if gen.takes_labels else [None] * n
        return SampledSubjects(images, labels, seeds, [dict(full or {})] * n, sources)
    if not gen.takes_labels:
        raise DataError(labels_from, "--labels-from needs a labels-to-images run; this one generates its own labels")
    maps = label_maps_from(labels_from, gen, n, seed, condition)
    conditions = [gen.encoder.check({**own, **condition}, source=f"{labels_from} ({source})") if gen.conditions else {}
                  for own, source in zip(maps.conditions, maps.sources)]
    images = np.zeros((n, len(gen.modalities), *gen.shape), np.float32)
    for key in {tuple(sorted(c.items())) for c in conditions}:
        members = [i for i, c in enumerate(conditions) if tuple(sorted(c.items())) == key]
        images[members], _ = gen.generate(condition=dict(key) or None, seeds=[seeds[i] for i in members], psi=psi,
                                          label_maps=(maps.labels[members], maps.masks[members]))
    return SampledSubjects(images, maps.labels.astype(np.uint8), seeds, conditions, maps.sources)
