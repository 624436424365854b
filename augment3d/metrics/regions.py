"""BraTS scoring regions and Dice."""

from __future__ import annotations

import numpy as np

__all__ = ["REGIONS", "region_mask", "dice"]

#: whole tumour, tumour core, enhancing tumour (labels 1 NETC, 2 SNFH, 3 ET)
REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


def region_mask(label: np.ndarray, region: str) -> np.ndarray:
    return np.isin(label, REGIONS[region])


def dice(prediction: np.ndarray, truth: np.ndarray, region: str) -> float:
    """Dice of one region; both empty scores 1 (nothing to find, nothing found)."""
    p, t = region_mask(prediction, region), region_mask(truth, region)
    total = p.sum() + t.sum()
    return 1.0 if total == 0 else float(2.0 * (p & t).sum() / total)
