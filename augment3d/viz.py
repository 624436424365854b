"""PNG montages for people to look at: three planes x four modalities with the label overlay.

matplotlib is imported inside the functions, so ``import augment3d`` stays light.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .io.atomic import atomic_write_bytes
from .brats import MODALITY_TITLES

__all__ = ["OUTLINES", "save_montage"]

#: outlines drawn, in order: whole tumour (green, so oedema is between green and the rest),
#: enhancing tumour (yellow), necrotic / non-enhancing core (red)
OUTLINES = (((1, 2, 3), (0.1, 0.9, 0.2)), ((3,), (1.0, 0.9, 0.0)), ((1,), (1.0, 0.15, 0.15)))


def _as_dict(images) -> dict[str, np.ndarray]:
    if isinstance(images, Mapping):
        return dict(images)
    return dict(zip(MODALITY_TITLES, np.asarray(images)))


def _centre(label: np.ndarray | None, shape) -> tuple[int, ...]:
    if label is not None and np.any(label > 0):
        return tuple(int(round(c)) for c in np.argwhere(label > 0).mean(axis=0))
    return tuple(s // 2 for s in shape)


def _planes(volume: np.ndarray, centre) -> list[np.ndarray]:
    x, y, z = centre
    return [volume[:, :, z].T, volume[:, y, :].T, volume[x, :, :].T]


def _draw_label(ax, label_plane: np.ndarray, aspect: float) -> None:
    """Outline the label regions, so the tissue underneath stays visible."""
    for values, colour in OUTLINES:
        region = np.isin(label_plane, values).astype(np.float32)
        if region.any():
            ax.contour(region, levels=[0.5], colors=[colour], linewidths=0.8, origin="lower")
    ax.set_aspect(aspect)


def save_montage(
    subjects: Sequence[tuple[str, object, np.ndarray | None]],
    path: str | os.PathLike,
    *,
    zooms: Sequence[float] | None = None,
) -> Path:
    """Save a montage PNG: for each subject three rows (axial, coronal, sagittal), four columns.

    Args:
        subjects: ``(title, images, label)`` triples; ``images`` is ``{modality: volume}`` or an
            array ``(4, X, Y, Z)`` in t1n, t1c, t2w, t2f order; volumes in RAS voxel order.
        path: the PNG to write (atomically).
        zooms: voxel size, to draw anisotropic grids with the right aspect.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import io

    import matplotlib.pyplot as plt

    rows = 3 * len(subjects)
    fig, axes = plt.subplots(rows, 4, figsize=(8, 2.0 * rows), squeeze=False)
    zx, zy, zz = zooms or (1.0, 1.0, 1.0)
    aspects = [zy / zx, zz / zx, zz / zy]
    for s, (title, images, label) in enumerate(subjects):
        images = _as_dict(images)
        first = next(iter(images.values()))
        centre = _centre(label, first.shape)
        label_planes = _planes(label, centre) if label is not None else [None] * 3
        for c, (key, volume) in enumerate(images.items()):
            brain = volume[volume > volume.min()]
            lo, hi = np.percentile(brain, [1, 99]) if brain.size else (volume.min(), volume.max() + 1e-6)
            for r, plane in enumerate(_planes(volume, centre)):
                ax = axes[3 * s + r, c]
                ax.imshow(plane, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspects[r], interpolation="nearest")
                plane_label = label_planes[r]
                if plane_label is not None:
                    _draw_label(ax, plane_label, aspects[r])
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0 and s == 0:
                    ax.set_title(MODALITY_TITLES.get(key, key), fontsize=9)
            axes[3 * s, 0].set_ylabel(title, fontsize=7)
    fig.tight_layout(pad=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
