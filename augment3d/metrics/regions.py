"""Dice of BraTS regions (label values in :data:`augment3d.brats.REGIONS`)."""

from __future__ import annotations

import numpy as np

from ..brats import REGIONS

__all__ = ["REGIONS", "region_mask", "dice", "dice_score"]


def region_mask(label: np.ndarray, region: str) -> np.ndarray:
    return np.isin(label, REGIONS[region])


def dice_score(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks; both empty scores 1 (nothing to find, nothing found).

    Example:
        >>> dice_score(np.array([1, 1, 0], bool), np.array([1, 0, 0], bool))
        0.6666666666666666
    """
    total = prediction.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * (prediction & truth).sum() / total)


def dice(prediction: np.ndarray, truth: np.ndarray, region: str) -> float:
    """Dice of one region (``WT``, ``TC``, ``ET``) between two label maps."""
    return dice_score(region_mask(prediction, region), region_mask(truth, region))
