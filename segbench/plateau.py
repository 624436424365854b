"""When a segmentation job has learned what it will: the plateau of its validation curve.

A gain over an undertrained baseline is no gain, so a bench's arms train until their validation
Dice stops improving, up to a cap on steps. One validation of a dozen cases is noisy (consecutive
points of a flat curve differ by 0.02-0.03 on the phantom recipe), so the rule reads a trailing
mean of the last ``window`` validations: the job has plateaued when that mean has gone
``patience`` validations without beating its best by more than ``min_delta``.

The report also checks a finished curve after the fact (:func:`last_quarter_gain`): the best
validation Dice of the last quarter of training against the best before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["smoothed", "plateau_index", "last_quarter_gain", "PLATEAU_GAIN"]

#: the report's after-the-fact check: a job counts as trained to a plateau when its best validation
#: Dice in the last quarter of training beats the best before it by less than this
PLATEAU_GAIN = 0.01


def smoothed(values: Sequence[float], window: int) -> np.ndarray:
    """The trailing mean of each point and the ``window - 1`` before it (fewer at the start)."""
    v = np.asarray(values, dtype=np.float64)
    return np.array([v[max(0, i - window + 1) : i + 1].mean() for i in range(v.size)])


def plateau_index(values: Sequence[float], patience: int, window: int, min_delta: float) -> int | None:
    """The first validation (0-based) at which the smoothed curve has gone ``patience`` validations
    without beating its best by more than ``min_delta``; None while it still improves."""
    if patience < 1:
        return None
    curve = smoothed(values, window)
    best, best_at = -np.inf, 0
    for i, value in enumerate(curve):
        if value > best + min_delta:
            best, best_at = value, i
        elif i - best_at >= patience:
            return i
    return None


def last_quarter_gain(curve: Sequence[dict], steps: int) -> float | None:
    """Best validation Dice after 3/4 of ``steps`` minus the best up to it; None without points on both sides."""
    cut = steps * 0.75
    before = [c["val_dice"] for c in curve if c["step"] <= cut]
    after = [c["val_dice"] for c in curve if c["step"] > cut]
    return None if not before or not after else max(after) - max(before)
