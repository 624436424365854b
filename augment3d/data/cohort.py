"""A cohort folder prepared for training: checked, preprocessed, cached, bad cases skipped."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..memory import check_fits
from .cache import cache_key, default_cache_dir, load_cached, store_cached
from .layout import Case, discover_cases
from .metadata import read_metadata
from .preprocess import PreparedCase, PreprocessConfig, preprocess_case
from .validation import duplicate_of, image_digest, read_case, same_images_warning

__all__ = ["SkippedCase", "PreparedCohort", "prepare_cohort"]


@dataclass
class SkippedCase:
    case: Case
    error: DataError


@dataclass
class PreparedCohort:
    root: Path
    cases: list[PreparedCase]
    skipped: list[SkippedCase]
    cache_hits: int = 0
    #: things worth saying that stopped nothing (duplicate scans, a cache that cannot be written)
    warnings: list[str] = field(default_factory=list)


def prepare_cohort(
    root: str | os.PathLike,
    config: PreprocessConfig,
    columns: Sequence[str] = (),
    categories: Mapping[str, Sequence[str]] | None = None,
    *,
    skip_bad: bool = False,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    progress: Callable[[int, int, Case], None] | None = None,
) -> PreparedCohort:
    """Read, check and preprocess every case under ``root``.

    Args:
        root: cohort folder in BraTS layout (optionally with metadata.csv).
        config: the model grid.
        columns: conditioning columns required from metadata.csv.
        categories: allowed values per column; others are refused.
        skip_bad: skip damaged cases (listed in ``skipped``) instead of raising.
        cache_dir: where prepared cases are cached (default :func:`default_cache_dir`).
        use_cache: set ``False`` to always re-read the NIfTI files.
        progress: ``progress(i, n, case)`` called before each case.

    Raises:
        DataError: the first bad case when ``skip_bad`` is false, or when every case is bad.
    """
    root = Path(root)
    cases = discover_cases(root)
    metadata = read_metadata(root)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    settings = {**config.to_dict(), "columns": list(columns), "categories": dict(categories or {})}
    check_fits(
        _grid_bytes(config) * (len(cases) + 8),
        root,
        f"preparing {len(cases)} cases on the {'x'.join(map(str, config.shape))} grid",
    )
    prepared, skipped, hits, warnings = [], [], 0, []
    for i, case in enumerate(cases):
        if progress is not None:
            progress(i, len(cases), case)
        key = cache_key(case, settings, metadata.path if metadata else None)
        cached = load_cached(cache, key) if use_cache else None
        if cached is not None:
            prepared.append(cached)
            hits += 1
            continue
        try:
            item = preprocess_case(read_case(case, metadata, columns, categories), config)
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append(SkippedCase(case, exc))
            continue
        if use_cache:
            try:
                store_cached(cache, key, item)
            except OSError as exc:
                use_cache = False
                warnings.append(
                    f"{exc.filename or cache}: cannot write the prepared-case cache "
                    f"({exc.strerror or exc}); continuing without it"
                )
        prepared.append(item)
    if not prepared:
        raise DataError(root, f"every case is bad ({len(skipped)} skipped); nothing to prepare")
    for later, first in duplicate_of([image_digest(list(c.images)) for c in prepared]).items():
        warnings.append(f"case {prepared[later].subject_id}: {same_images_warning(prepared[first].subject_id)}")
    return PreparedCohort(root=root, cases=prepared, skipped=skipped, cache_hits=hits, warnings=warnings)


def _grid_bytes(config: PreprocessConfig) -> int:
    """One prepared case in memory: four float32 images and a uint8 label map on the grid."""
    return int(np.prod(config.shape)) * (4 * 4 + 1)
