"""What the transform-cost benchmarks share: wall time per call, and runs of ratios against a
reference measured in the same run (printed per run, then their median and range)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def per_call(call: Callable[[], object], n: int) -> float:
    """Wall seconds per call over ``n`` calls, after one warm-up call (which loads banks and generators)."""
    call()
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n


def ratio_runs(runs: int, reference: str, theirs: Callable[[], float], ours: Mapping[str, Callable[[], float]]) -> None:
    """``runs`` times: ``theirs()`` and each of ``ours`` (seconds per sample), printed with the
    ratios; then each ratio's median and range over the runs."""
    ratios: dict[str, list[float]] = {name: [] for name in ours}
    for run in range(runs):
        t = theirs()
        seconds = {name: measure() for name, measure in ours.items()}
        for name, s in seconds.items():
            ratios[name].append(s / t)
        print(
            f"run {run}: {reference} {t * 1e3:.1f} ms; "
            + "; ".join(f"{name} {s * 1e3:.1f} ms ({s / t:.2f}x)" for name, s in seconds.items())
        )
    for name, values in ratios.items():
        print(
            f"{name} / {reference}: median {statistics.median(values):.2f}, range "
            f"{min(values):.2f}-{max(values):.2f} over {runs} runs"
        )
