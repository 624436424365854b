"""Crops around tumours: what an inpainting generator trains on and renders into.

An inpainting run (``[model] mode = "inpaint"``) works on cubes of ``[model] crop`` voxels cut
from the prepared subjects (the recipe's ``[data]`` grid, so the crop's voxel size is the
grid's): the generator sees a crop of a real subject with a region voided and renders the region
again, the rest of the crop kept. :func:`tumour_crops` cuts the training crops: per subject
``per_case`` cubes centred near its tumour (the centroid moved by up to a quarter of the crop,
drawn from ``seed``), or near a random brain voxel when the subject has no tumour; voxels
outside the subject are background (images -1, label 0).

Example:
    >>> import numpy as np
    >>> image = np.arange(4 * 6 * 6 * 6, dtype=np.float32).reshape(4, 6, 6, 6)
    >>> crop_at(image, (0, 0, 0), 4, fill=-1.0)[0, :, 2, 2].tolist()  # the corner voxel lands at (2, 2, 2)
    [-1.0, -1.0, 0.0, 36.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Crop", "crop_at", "crop_box", "tumour_crops"]


def crop_box(centre: Sequence[int], size: int) -> list[tuple[int, int]]:
    """Per axis, the [start, stop) of a ``size`` cube centred at ``centre`` (may leave the volume)."""
    return [(int(c) - size // 2, int(c) - size // 2 + size) for c in centre]


def crop_at(volume: np.ndarray, centre: Sequence[int], size: int, fill: float = 0.0) -> np.ndarray:
    """The ``size`` cube of ``volume``'s last three axes centred at ``centre``, ``fill`` outside it."""
    spatial = volume.shape[-3:]
    out = np.full((*volume.shape[:-3], size, size, size), fill, dtype=volume.dtype)
    src: list[slice] = []
    dst: list[slice] = []
    for (start, stop), side in zip(crop_box(centre, size), spatial):
        lo, hi = max(start, 0), min(stop, side)
        if lo >= hi:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    lead = (slice(None),) * (volume.ndim - 3)
    out[lead + tuple(dst)] = volume[lead + tuple(src)]
    return out


@dataclass
class Crop:
    """One training crop: ``images`` (4, s, s, s) in [-1, 1], ``label`` (s, s, s) uint8, where it
    was cut (``centre`` on the subject's grid) and from whom."""

    subject_id: str
    images: np.ndarray
    label: np.ndarray
    centre: tuple[int, int, int]
    conditions: dict


def tumour_crops(cases, size: int, per_case: int = 4, seed: int = 0) -> list[Crop]:
    """``per_case`` crops of ``size`` voxels per prepared case, near its tumour (see the module)."""
    rng = np.random.default_rng(seed)
    crops = []
    for case in cases:
        tumour = np.argwhere(case.label > 0)
        brain = np.argwhere((case.images > -1.0 + 1e-3).any(0))
        for _ in range(per_case):
            if len(tumour):
                centre = tumour.mean(0) + rng.uniform(-size / 4, size / 4, 3)
            elif len(brain):
                centre = brain[rng.integers(len(brain))].astype(float)
            else:
                centre = np.array(case.label.shape) / 2
            centre = tuple(int(round(c)) for c in centre)
            crops.append(
                Crop(
                    case.subject_id,
                    crop_at(case.images, centre, size, fill=-1.0),
                    crop_at(case.label, centre, size, fill=0),
                    centre,
                    dict(case.conditions),
                )
            )
    return crops
