"""Tumour-label make-up per condition (does a generator draw each condition's lesions as the data
has them?) and placement (do its labels stay off the head's edge?).

Image classifiers on fixed features mostly see texture (noise, blur) and say little about the
tumour itself; the label maps say directly whether, say, HGG subjects get an enhancing rim and
necrotic core and LGG subjects a non-enhancing lesion, or whether one site's tumours are larger.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..brats import LABEL_NAMES

__all__ = ["label_profile", "tumour_at_head_edge"]


def _profile(labels: np.ndarray) -> dict:
    """Mean over subjects: tumour size (% of the grid) and each class's share of the tumour."""
    flat = labels.reshape(len(labels), -1)
    tumour = (flat > 0).sum(1)
    out: dict[str, float | None] = {"n": int(len(labels)), "tumour_percent": float(100.0 * tumour.mean() / flat.shape[1])}
    with_tumour = tumour > 0
    for value, name in LABEL_NAMES.items():
        share = (flat[with_tumour] == value).sum(1) / tumour[with_tumour] if with_tumour.any() else np.zeros(0)
        out[f"{name}_share"] = float(share.mean()) if share.size else None
    return out


def label_profile(labels: np.ndarray, conditions: Sequence[dict[str, str]]) -> dict[str, dict[str, dict]]:
    """Per condition column and category: the label make-up of the subjects with that category.

    ``labels`` (N, X, Y, Z) integer maps, ``conditions`` one dict per subject. Marginals per column
    (all HGG subjects, all SSA subjects, ...) rather than every combination, since small cohorts
    have few subjects per combination.

    Example:
        >>> y = np.zeros((2, 4, 4, 4), np.uint8); y[0, :2] = 3; y[1, :1] = 1
        >>> p = label_profile(y, [{"grade": "HGG"}, {"grade": "LGG"}])
        >>> p["grade"]["HGG"]["tumour_percent"], p["grade"]["HGG"]["ET_share"], p["grade"]["LGG"]["ET_share"]
        (50.0, 1.0, 0.0)
    """
    labels = np.asarray(labels)
    if len(labels) != len(conditions):
        raise ValueError(f"{len(labels)} label maps but {len(conditions)} conditions")
    out: dict[str, dict[str, dict]] = {}
    for column in conditions[0] if conditions else {}:
        values = np.array([c[column] for c in conditions])
        out[column] = {str(v): _profile(labels[values == v]) for v in sorted(set(values))}
    return out


def tumour_at_head_edge(images: np.ndarray, labels: np.ndarray, depth: int = 2, background: float = -0.8) -> float | None:
    """Share of tumour voxels within ``depth`` voxels of the head's edge, averaged over subjects
    with a tumour (None if none has one).

    The head is where the mean of the image channels (in [-1, 1], background -1) is above
    ``background``, holes filled. Real gliomas seldom reach the skull; generated label maps that
    run along the edge of the head (a failure seen in long GAN runs) show up here, independently
    of any segmenter.

    Example:
        >>> x = -np.ones((1, 4, 12, 12, 12), np.float32); x[:, :, 1:11, 1:11, 1:11] = 0.0
        >>> y = np.zeros((1, 12, 12, 12), np.uint8); y[0, 1, 5, 5] = 2; y[0, 6, 6, 6] = 2
        >>> tumour_at_head_edge(x, y)
        0.5
    """
    from scipy import ndimage

    shares = []
    for image, label in zip(np.asarray(images), np.asarray(labels)):
        tumour = label > 0
        if not tumour.any():
            continue
        head = ndimage.binary_fill_holes(image.mean(0) > background)
        inner = ndimage.binary_erosion(head, iterations=depth)
        shares.append(float((tumour & ~inner).sum() / tumour.sum()))
    return float(np.mean(shares)) if shares else None
