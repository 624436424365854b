"""Set distances that cannot mislead at small N: bootstrap intervals for the synthetic value and
its real-vs-real floor, and a verdict in words.

BraTS-Africa has about 60 training cases, so N is small by nature, and FID at small N is noisy
and biased: a barely trained generator once scored FID 0.125 against a floor of 0.55 at N = 8,
"better than real". The verdict never says that: a value below the floor at small N is noise.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["bootstrap_interval", "distance_verdict", "SMALL_N"]

#: below this many subjects per set the report recommends KID over FID and says N is small
SMALL_N = 50


def bootstrap_interval(
    distance: Callable[[np.ndarray, np.ndarray], float],
    reference: np.ndarray,
    other: np.ndarray,
    resamples: int = 100,
    seed: int = 0,
) -> list[float]:
    """Percentile bootstrap 95% interval of ``distance(reference, other)``, both sets resampled
    (subjects with replacement, seeded)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        a = reference[rng.integers(0, len(reference), len(reference))]
        b = other[rng.integers(0, len(other), len(other))]
        values.append(distance(a, b))
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def distance_verdict(name: str, value: float, interval: list[float], floor: float, floor_interval: list[float], n: int) -> str:
    """What ``value`` (synthetic vs training real) says against the floor (held-out real vs
    training real), in words; never that the generator is closer than real data."""
    synthetic = f"{name} {value:.3g} [{interval[0]:.3g}, {interval[1]:.3g}]"
    reference = f"the real-vs-real floor {floor:.3g} [{floor_interval[0]:.3g}, {floor_interval[1]:.3g}]"
    note = f" At N={n} the intervals are wide" + ("; KID is the steadier measure at small N." if name == "FID" else ".")
    note = note if n < SMALL_N else ""
    if interval[0] > floor_interval[1]:
        return f"{synthetic} lies above {reference}: the synthetic subjects are told apart from real ones."
    if interval[1] < floor_interval[0]:
        return (
            f"{synthetic} lies below {reference}. Synthetic subjects cannot be nearer the training cases than "
            "held-out real cases are except by chance or by copying them (see the memorisation audit): this is "
            f"not a better-than-real generator.{note}"
        )
    return f"{synthetic} overlaps {reference}: at this N the synthetic subjects cannot be told apart from real data.{note}"
