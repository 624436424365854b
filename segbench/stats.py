"""Statistics over finished jobs: per-arm means over seeds, paired per-case differences vs ``real``.

Per case, a score is first averaged over the seeds both arms finished; the paired differences
(arm - real) over test cases get a percentile bootstrap 95% CI of their mean (seeded) and a
two-sided Wilcoxon signed-rank test. That interval counts the test cases' variation only; a
segmentation net's result also varies with its training seed, so each comparison also gives the
difference per seed and a two-level bootstrap CI that resamples seeds, then cases
(:func:`bootstrap_ci_two_level`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "bootstrap_ci",
    "bootstrap_ci_two_level",
    "bootstrap_ci_hierarchical",
    "wilcoxon_p",
    "case_table",
    "arm_summary",
    "paired_comparison",
    "difference_matrix",
    "pooled_comparison",
    "ArmSummary",
    "Comparison",
    "PooledComparison",
]

Interval = tuple[float, float]


@dataclass(frozen=True)
class ArmSummary:
    """One arm's score on a set of test cases: the mean over cases (each averaged over the seeds) with a
    bootstrap CI over cases, and the mean and standard deviation of the per-seed means."""

    mean: float
    ci95: Interval
    cases: int
    seeds: int
    seed_mean: float
    seed_std: float


@dataclass(frozen=True)
class Comparison:
    """arm - reference, paired per test case: the mean difference, its bootstrap CI over cases and Wilcoxon
    p; per seed, and the two-level CI over seeds and cases (None with fewer than 2 seeds)."""

    difference: float
    ci95: Interval
    cases: int
    wilcoxon_p: float | None = None
    per_seed: dict[str, float] = field(default_factory=dict)
    ci95_seeds_and_cases: Interval | None = None


@dataclass(frozen=True)
class PooledComparison:
    """arm - reference pooled over cohorts (each cohort weighted equally), with the hierarchical interval
    over cohorts, seeds and cases; cohorts without a paired case are named in ``without_cases``."""

    difference: float
    per_cohort: dict[str, float]
    cohorts: int
    seeds: list[int]
    cases: list[int]
    without_cases: list[str]
    ci95_cohorts_seeds_and_cases: Interval | None = None


#: a case's summary score: the mean of the legacy Dice over WT, TC and ET
MEAN = "mean"


def bootstrap_ci(values: Sequence[float], n: int = 10000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; (nan, nan) for no values, (v, v) for one."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    return _percentile_interval(v[rng.integers(0, v.size, size=(n, v.size))].mean(1), level)


def _percentile_interval(means: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1 - level) / 2
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)))


def bootstrap_ci_two_level(
    differences: np.ndarray, n: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the mean of a (seeds, cases) array: each draw resamples the seeds,
    then the cases, with replacement, so the interval counts training-seed noise as well as the
    test cases'. None with fewer than 2 seeds (no seed variation to count)."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] < 2 or d.shape[1] == 0:
        return None
    return _percentile_interval(_two_level_means(d, n, np.random.default_rng(seed)), level)


def _two_level_means(d: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` bootstrap means of a (seeds, cases) array, each resampling its seeds, then its cases."""
    seeds, cases = d.shape
    block = max(1, 2**22 // (seeds * cases))  # draws per block: at most about 4M values in memory
    means = []
    for start in range(0, n, block):
        k = min(block, n - start)
        si, ci = rng.integers(0, seeds, size=(k, seeds)), rng.integers(0, cases, size=(k, cases))
        means.append(d[si[:, :, None], ci[:, None, :]].mean((1, 2)))
    return np.concatenate(means)


def bootstrap_ci_hierarchical(
    cohorts: Sequence[np.ndarray], n: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the pooled mean of several cohorts' (seeds, cases) arrays.

    The pooled mean gives every cohort the same weight (the mean of the cohorts' means). Each draw
    resamples the cohorts with replacement, then, independently for every cohort drawn, its seeds
    and then its cases, so the interval counts how cohorts differ as well as seeds and test cases.
    With one cohort it is :func:`bootstrap_ci_two_level`'s interval (None when that cohort has
    fewer than 2 seeds). With few cohorts the percentile interval is narrow by about
    sqrt((K - 1) / K) (the bootstrap's variance of a mean of K draws), and with K cohorts there are
    only so many distinct resamples: three cohorts make a crude interval, which the report says.
    """
    arrays = [np.asarray(c, dtype=np.float64) for c in cohorts]
    if not arrays or any(a.ndim != 2 or a.shape[1] == 0 or a.shape[0] == 0 for a in arrays):
        return None
    if len(arrays) == 1:
        return bootstrap_ci_two_level(arrays[0], n, seed, level)
    rng = np.random.default_rng(seed)
    k = len(arrays)
    picks = rng.integers(0, k, size=(n, k))
    # every (draw, slot) that picks cohort c gets its own resample of c's seeds and cases
    inner = np.empty((n, k))
    for c, d in enumerate(arrays):
        where = picks == c
        inner[where] = _two_level_means(d, int(where.sum()), rng)
    return _percentile_interval(inner.mean(1), level)


def wilcoxon_p(differences: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value; None when it is undefined (fewer than 2 cases, all ties)."""
    from scipy.stats import wilcoxon

    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2 or np.all(d == 0):
        return None
    return float(wilcoxon(d).pvalue)


def _score(row: dict, region: str, metric: str) -> float:
    if region == MEAN:
        return float(np.mean([s[metric] for s in row["scores"].values()]))
    return float(row["scores"][region][metric])


def case_table(results: Sequence[dict], metric: str, region: str) -> dict[str, dict[int, float]]:
    """subject_id -> {seed: score} for one arm's results."""
    table: dict[str, dict[int, float]] = {}
    for result in results:
        for row in result["cases"]:
            table.setdefault(row["subject_id"], {})[result["seed"]] = _score(row, region, metric)
    return table


def _subset(results: Sequence[dict], site: str | Mapping[str, str] | None) -> set[str]:
    """The test cases of ``site`` (``None``: all; a mapping: every column it names, e.g.
    ``{"site": "HIC", "grade": "LGG"}``)."""
    where = {} if site is None else {"site": site} if isinstance(site, str) else dict(site)
    return {
        row["subject_id"]
        for r in results
        for row in r["cases"]
        if all(row.get(column) == value for column, value in where.items())
    }


def arm_summary(
    results: Sequence[dict], metric: str, region: str, site: str | Mapping[str, str] | None, n_boot: int
) -> ArmSummary:
    """Mean over cases (averaged over seeds) with a bootstrap CI, and mean +- std over seeds."""
    keep = _subset(results, site)
    table = {k: v for k, v in case_table(results, metric, region).items() if k in keep}
    per_case = [float(np.mean(list(v.values()))) for v in table.values()]
    per_seed = [float(np.mean([v[s] for v in table.values() if s in v])) for s in sorted({r["seed"] for r in results})]
    low, high = bootstrap_ci(per_case, n_boot)
    nan = float("nan")
    return ArmSummary(
        mean=float(np.mean(per_case)) if per_case else nan,
        ci95=(low, high),
        cases=len(per_case),
        seeds=len(per_seed),
        seed_mean=float(np.mean(per_seed)) if per_seed else nan,
        seed_std=float(np.std(per_seed)) if per_seed else nan,
    )


def difference_matrix(
    arm: Sequence[dict], reference: Sequence[dict], metric: str, region: str, site: str | Mapping[str, str] | None
) -> tuple[dict[str, list[float]], np.ndarray, list[int]]:
    """arm - reference on the test cases of ``site``: per case, the differences on the seeds both
    finished (case -> list); the (seeds, cases) matrix over the seeds every paired case has; those seeds."""
    keep = _subset(arm, site) & _subset(reference, site)
    a, r = case_table(arm, metric, region), case_table(reference, metric, region)
    shared = {case: set(a.get(case, {})) & set(r.get(case, {})) for case in sorted(keep)}
    shared = {case: seeds for case, seeds in shared.items() if seeds}
    per_case = {case: [a[case][s] - r[case][s] for s in sorted(seeds)] for case, seeds in shared.items()}
    seeds = sorted(set.intersection(*shared.values())) if shared else []  # the seeds every paired case has
    matrix = np.array([[a[case][s] - r[case][s] for case in shared] for s in seeds]).reshape(len(seeds), len(shared))
    return per_case, matrix, seeds


def paired_comparison(
    arm: Sequence[dict], reference: Sequence[dict], metric: str, region: str, site: str | Mapping[str, str] | None, n_boot: int
) -> Comparison:
    """arm - reference per test case over the seeds both finished: mean, bootstrap CI over cases,
    Wilcoxon p; and per seed (the seeds every paired case has) with the two-level CI over seeds and cases."""
    per_case, matrix, seeds = difference_matrix(arm, reference, metric, region, site)
    diffs = [float(np.mean(v)) for v in per_case.values()]
    low, high = bootstrap_ci(diffs, n_boot)
    two_level = bootstrap_ci_two_level(matrix, n_boot)
    return Comparison(
        difference=float(np.mean(diffs)) if diffs else float("nan"),
        ci95=(low, high),
        cases=len(diffs),
        wilcoxon_p=wilcoxon_p(diffs),
        per_seed={str(s): float(row.mean()) for s, row in zip(seeds, matrix)},
        ci95_seeds_and_cases=two_level,
    )


def pooled_comparison(
    cohorts: Mapping[str, tuple[Sequence[dict], Sequence[dict]]],
    metric: str,
    region: str,
    site: str | Mapping[str, str] | None,
    n_boot: int,
) -> PooledComparison:
    """arm - reference pooled over cohorts (cohort name -> (arm results, reference results)).

    The pooled difference is the mean of the cohorts' mean differences (each over the seeds every
    paired case has, then its cases); its interval resamples cohorts, seeds and cases
    (:func:`bootstrap_ci_hierarchical`). Cohorts without a paired case are left out and named.
    """
    matrices, names, empty = [], [], []
    for name, (arm, reference) in cohorts.items():
        matrix = difference_matrix(arm, reference, metric, region, site)[1]
        if matrix.size:
            matrices.append(matrix)
            names.append(name)
        else:
            empty.append(name)
    ci = bootstrap_ci_hierarchical(matrices, n_boot)
    means = [float(m.mean()) for m in matrices]
    return PooledComparison(
        difference=float(np.mean(means)) if means else float("nan"),
        per_cohort=dict(zip(names, means)),
        cohorts=len(matrices),
        seeds=[int(m.shape[0]) for m in matrices],
        cases=[int(m.shape[1]) for m in matrices],
        without_cases=empty,
        ci95_cohorts_seeds_and_cases=ci,
    )
