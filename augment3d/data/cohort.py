"""A cohort folder prepared for training: checked, preprocessed, cached, bad cases skipped."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .cache import cache_key, default_cache_dir, load_cached, store_cached
from .layout import Case, discover_cases
from .metadata import read_metadata
from .preprocess import PreparedCase, PreprocessConfig, preprocess_case
from .validation import read_case

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
    prepared, skipped, hits = [], [], 0
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
            store_cached(cache, key, item)
        prepared.append(item)
    if not prepared:
        raise DataError(root, f"every case is bad ({len(skipped)} skipped); nothing to prepare")
    return PreparedCohort(root=root, cases=prepared, skipped=skipped, cache_hits=hits)
