"""SSIM and MSE/PSNR of 3D volumes, and nearest-neighbour statistics between two sets."""

from __future__ import annotations

import numpy as np
import torch

from .settings import DATA_RANGE, SSIM_KERNEL, SSIM_SIGMA

__all__ = ["ssim", "mse", "psnr", "pairwise", "nearest"]


def _as_batch(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    while t.dim() < 5:
        t = t[None]
    return t


def ssim(a, b, mask=None) -> float:
    """SSIM of two volumes (C, X, Y, Z) in [-1, 1]: torchmetrics, Gaussian window, data range 2.

    With ``mask`` (X, Y, Z) the SSIM map is averaged inside it (e.g. the brain).
    """
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    x, y = _as_batch(a), _as_batch(b)
    if mask is None:
        value = tm_ssim(x, y, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_KERNEL, data_range=DATA_RANGE)
        assert isinstance(value, torch.Tensor)  # no full image asked for: one tensor
        return float(value)
    _, full = tm_ssim(
        x, y, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_KERNEL, data_range=DATA_RANGE, return_full_image=True
    )
    m = torch.as_tensor(np.asarray(mask), dtype=torch.bool)
    return float(full[0][:, m].mean())


def mse(a, b, mask=None) -> float:
    d = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2
    return float(d[..., np.asarray(mask, dtype=bool)].mean() if mask is not None else d.mean())


def psnr(a, b, mask=None) -> float:
    m = mse(a, b, mask)
    return float("inf") if m == 0 else float(10.0 * np.log10(DATA_RANGE**2 / m))


def pairwise(set_a, set_b, metric=ssim, chunk: int = 32) -> np.ndarray:
    """``metric`` for every pair: array (len(set_a), len(set_b)). SSIM is computed in batches."""
    if metric is not ssim:
        return np.array([[metric(a, b) for b in set_b] for a in set_a], dtype=np.float64)
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    a = torch.as_tensor(np.asarray(set_a), dtype=torch.float32)
    b = torch.as_tensor(np.asarray(set_b), dtype=torch.float32)
    pairs = [(i, j) for i in range(len(a)) for j in range(len(b))]
    out = np.zeros((len(a), len(b)), dtype=np.float64)
    for start in range(0, len(pairs), chunk):
        part = pairs[start : start + chunk]
        x = a[[i for i, _ in part]]
        y = b[[j for _, j in part]]
        values = tm_ssim(
            x, y, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_KERNEL, data_range=DATA_RANGE, reduction="none"
        )
        assert isinstance(values, torch.Tensor)
        for (i, j), v in zip(part, values.tolist()):
            out[i, j] = v
    return out


def nearest(matrix: np.ndarray, higher_is_closer: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the closest column's value and index."""
    idx = matrix.argmax(axis=1) if higher_is_closer else matrix.argmin(axis=1)
    return matrix[np.arange(len(matrix)), idx], idx
