"""Segmentation scores for BraTS regions: Dice, HD95 in millimetres, BraTS-2023 lesion-wise scores.

Written on scipy.ndimage (the ``brats-evaluation`` package scores BraTS-2021 label 4 wrongly and
reports HD95 in voxels). Conventions, as in BraTS 2023:

* empty prediction and empty truth: Dice 1, HD95 0; one empty, the other not: Dice 0, HD95 374;
* HD95 = max of the two directed 95th-percentile surface distances, in mm (voxel spacing used);
* lesion-wise: truth lesions are 26-connected components; a truth lesion's match is every
  predicted component touching it after a one-voxel dilation; its Dice and HD95 are computed
  against the union of those components; a missed lesion and every unmatched predicted
  component score Dice 0 and HD95 374; components smaller than ``min_voxels`` (in truth and
  prediction alike) are ignored - by default BraTS-2023's 50 voxels at 1 mm^3, i.e. 50 mm^3,
  converted with the voxel spacing, so a 6 mm grid does not drop every lesion under 10.8 cm^3; the score is the mean over truth lesions and false
  positives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from augment3d.metrics.regions import REGIONS, dice_score, region_mask

__all__ = ["MISS_HD95", "MIN_LESION_MM3", "hd95", "lesion_wise", "min_lesion_voxels", "score_case"]

MISS_HD95 = 374.0
_STRUCTURE = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=_STRUCTURE, border_value=0)


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """95th-percentile Hausdorff distance in mm between two binary masks."""
    if not pred.any() and not truth.any():
        return 0.0
    if not pred.any() or not truth.any():
        return MISS_HD95
    sp, st = _surface(pred), _surface(truth)
    to_truth = ndimage.distance_transform_edt(~st, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return float(max(np.percentile(to_truth[sp], 95), np.percentile(to_pred[st], 95)))


MIN_LESION_MM3 = 50.0  # BraTS 2023: 50 voxels of 1 mm^3


def min_lesion_voxels(spacing: Sequence[float]) -> int:
    """The lesion size threshold in voxels for this spacing (at least 1)."""
    return max(1, int(math.ceil(MIN_LESION_MM3 / float(np.prod(spacing)) - 1e-9)))


def _components(mask: np.ndarray, min_voxels: int) -> tuple[np.ndarray, list[int]]:
    labels, n = ndimage.label(mask, structure=_STRUCTURE)
    if n == 0:
        return labels, []
    sizes = ndimage.sum_labels(np.ones_like(mask, dtype=np.int64), labels, index=np.arange(1, n + 1))
    return labels, [i + 1 for i, s in enumerate(sizes) if s >= min_voxels]


def lesion_wise(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                min_voxels: int | None = None) -> dict[str, float]:
    """BraTS-2023 lesion-wise Dice and HD95 of binary masks (see the module docstring)."""
    if min_voxels is None:
        min_voxels = min_lesion_voxels(spacing)
    truth_labels, truth_ids = _components(truth, min_voxels)
    pred_labels, pred_ids = _components(pred, min_voxels)
    if not truth_ids and not pred_ids:
        return {"dice": 1.0, "hd95": 0.0, "lesions": 0, "false_positives": 0}
    kept_pred = np.isin(pred_labels, pred_ids)
    dices, dists, matched = [], [], set()
    for lesion in truth_ids:
        region = truth_labels == lesion
        near = ndimage.binary_dilation(region, structure=_STRUCTURE)
        hits = [int(i) for i in np.unique(pred_labels[near & kept_pred]) if i != 0]
        matched.update(hits)
        union = np.isin(pred_labels, hits) if hits else np.zeros_like(region)
        dices.append(dice_score(union, region))
        dists.append(hd95(union, region, spacing) if hits else MISS_HD95)
    false_positives = [i for i in pred_ids if i not in matched]
    dices += [0.0] * len(false_positives)
    dists += [MISS_HD95] * len(false_positives)
    return {"dice": float(np.mean(dices)), "hd95": float(np.mean(dists)), "lesions": len(truth_ids),
            "false_positives": len(false_positives)}


def score_case(pred_labels: np.ndarray, truth_labels: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
               min_voxels: int | None = None) -> dict[str, dict[str, float]]:
    """Dice, HD95 (mm) and lesion-wise scores per region (WT, TC, ET) of label maps (0-3)."""
    out = {}
    for region in REGIONS:
        p, t = region_mask(pred_labels, region), region_mask(truth_labels, region)
        lw = lesion_wise(p, t, spacing, min_voxels)
        out[region] = {"dice": dice_score(p, t), "hd95": hd95(p, t, spacing),
                       "lesion_dice": lw["dice"], "lesion_hd95": lw["hd95"]}
    return out
