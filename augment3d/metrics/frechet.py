"""Fréchet distance (FID) and kernel inception distance (KID) on feature vectors, in float64."""

from __future__ import annotations

import numpy as np

from .settings import KID_SUBSET_SIZE, KID_SUBSETS

__all__ = ["frechet_distance", "kernel_distance"]


def _stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least two feature vectors, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^1/2).

    The trace of the matrix square root is computed from eigenvalues, without
    ``scipy.linalg.sqrtm``: tr((S_a S_b)^1/2) = sum sqrt(eig(S_a^1/2 S_b S_a^1/2)), a symmetric
    positive semi-definite matrix, so ``eigvalsh`` applies and small negative round-off is clipped.
    """
    mu_a, cov_a = _stats(a)
    mu_b, cov_b = _stats(b)
    vals, vecs = np.linalg.eigh(cov_a)
    root_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    middle = root_a @ cov_b @ root_a
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root)
    return max(value, 0.0)


def kernel_distance(
    a: np.ndarray, b: np.ndarray, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, seed: int = 0
) -> tuple[float, float]:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, mean and std over random subsets."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least two vectors in each set")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))
