"""Segmentation scores for BraTS regions: Dice, HD95 in millimetres, BraTS-2023 lesion-wise scores.

Written on scipy.ndimage (the ``brats-evaluation`` package scores BraTS-2021 label 4 wrongly and
reports HD95 in voxels). Conventions, as in BraTS 2023:

* empty prediction and empty truth: Dice 1, HD95 0; one empty, the other not: Dice 0, HD95 374;
* HD95 = max of the two directed 95th-percentile surface distances, in mm (voxel spacing used);
* lesion-wise, by the rules of the challenge's own scorer (the BraTS-2023-Metrics repository,
  ``get_lesion_wise_results``; GLI and SSA: 3 dilations, 50 mm^3):

  1. lesions are 26-connected components; truth lesions whose dilations (``dilation`` iterations
     of the 18-connected structure, in voxels) touch are one lesion;
  2. a truth lesion's hits are the predicted components that meet its dilation; its Dice and HD95
     are taken against the union of its hits (no hit: Dice 0, HD95 374);
  3. every predicted component that is no lesion's hit, whatever its size, is a false positive
     (Dice 0, HD95 374);
  4. truth lesions of at most ``min_volume_mm3`` (50 mm^3, voxel spacing used) are left out of the
     mean, but their hits are not false positives;
  5. the score is the mean over the truth lesions kept and the false positives; with neither,
     Dice 1 and HD95 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from augment3d.metrics.regions import REGIONS, dice_score, region_mask

__all__ = ["LESION_DILATION", "MISS_HD95", "MIN_LESION_MM3", "hd95", "lesion_wise", "score_case"]

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


MIN_LESION_MM3 = 50.0  # BraTS 2023 GLI/SSA: truth lesions of at most 50 mm^3 are left out
LESION_DILATION = 3  # BraTS 2023 GLI/SSA: dilations (18-connected) that join truth lesions and find hits
_DILATE = ndimage.generate_binary_structure(3, 2)  # 18-connectivity


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, structure=_DILATE, iterations=iterations) if iterations else mask


def _truth_lesions(truth: np.ndarray, dilation: int) -> tuple[np.ndarray, int]:
    """Truth lesions numbered 1..n, components whose dilations touch sharing one number (rule 1)."""
    joined, n = ndimage.label(_dilate(truth, dilation), structure=_STRUCTURE)
    return np.where(truth, joined, 0), n


def lesion_wise(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    min_volume_mm3: float = MIN_LESION_MM3,
    dilation: int = LESION_DILATION,
) -> dict[str, float]:
    """BraTS-2023 lesion-wise Dice and HD95 of binary masks (the rules in the module docstring).

    Returns the scores, the number of truth lesions kept (``lesions``), the false positives and the
    truth lesions left out as too small (``small_lesions``).
    """
    truth, pred = np.asarray(truth, dtype=bool), np.asarray(pred, dtype=bool)
    truth_labels, n_truth = _truth_lesions(truth, dilation)
    pred_labels, _ = ndimage.label(pred, structure=_STRUCTURE)
    voxel_mm3 = float(np.prod(spacing))
    dices, dists, hits_seen, small = [], [], {0}, 0
    for lesion in range(1, n_truth + 1):
        region = truth_labels == lesion
        hits = np.unique(pred_labels[_dilate(region, dilation)])
        hits = hits[hits != 0]
        hits_seen.update(int(h) for h in hits)
        if region.sum() * voxel_mm3 <= min_volume_mm3:
            small += 1
            continue
        union = np.isin(pred_labels, hits)
        dices.append(dice_score(union, region))
        dists.append(hd95(union, region, spacing))
    false_positives = len(set(np.unique(pred_labels).tolist()) - hits_seen)
    if not dices and not false_positives:
        return {"dice": 1.0, "hd95": 0.0, "lesions": 0, "false_positives": 0, "small_lesions": small}
    dices += [0.0] * false_positives
    dists += [MISS_HD95] * false_positives
    return {
        "dice": float(np.mean(dices)),
        "hd95": float(np.mean(dists)),
        "lesions": len(dices) - false_positives,
        "false_positives": false_positives,
        "small_lesions": small,
    }


#: the rules lesion-wise scores follow, recorded in every job's result.json: scores made under
#: other (older) rules are left out of a report rather than compared with these
LESION_RULES = "brats2023-scorer"


def score_case(
    pred_labels: np.ndarray,
    truth_labels: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    min_volume_mm3: float = MIN_LESION_MM3,
) -> dict[str, dict[str, float]]:
    """Dice, HD95 (mm) and lesion-wise scores per region (WT, TC, ET) of label maps (0-3)."""
    out = {}
    for region in REGIONS:
        p, t = region_mask(pred_labels, region), region_mask(truth_labels, region)
        lw = lesion_wise(p, t, spacing, min_volume_mm3)
        out[region] = {
            "dice": dice_score(p, t),
            "hd95": hd95(p, t, spacing),
            "lesion_dice": lw["dice"],
            "lesion_hd95": lw["hd95"],
        }
    return out
