"""Diversity (mean pairwise MS-SSIM) and precision / recall / density / coverage (Naeem et al. 2020)."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from .settings import DATA_RANGE, MSSSIM_BETAS, MSSSIM_KERNEL, PRDC_K, SSIM_SIGMA

__all__ = ["ms_ssim", "mean_pairwise_ms_ssim", "prdc"]


def ms_ssim(a, b) -> float:
    """3-scale MS-SSIM of two volumes (C, X, Y, Z); needs sides > 16 voxels."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as tm_msssim

    x = torch.as_tensor(np.asarray(a), dtype=torch.float32)[None]
    y = torch.as_tensor(np.asarray(b), dtype=torch.float32)[None]
    # MS-SSIM's contrast terms are undefined for negative SSIM: compare in [0, 2]
    return float(
        tm_msssim(
            x + 1,
            y + 1,
            gaussian_kernel=True,
            sigma=SSIM_SIGMA,
            kernel_size=MSSSIM_KERNEL,
            data_range=DATA_RANGE,
            betas=MSSSIM_BETAS,
            normalize="relu",
        )
    )


def mean_pairwise_ms_ssim(volumes, max_pairs: int = 200, seed: int = 0) -> tuple[float, int]:
    """Mean MS-SSIM over pairs (all, or ``max_pairs`` drawn); lower means more diverse."""
    pairs = list(itertools.combinations(range(len(volumes)), 2))
    if not pairs:
        raise ValueError("diversity needs at least two volumes")
    if len(pairs) > max_pairs:
        rng = np.random.default_rng(seed)
        pairs = [pairs[i] for i in rng.choice(len(pairs), max_pairs, replace=False)]
    return float(np.mean([ms_ssim(volumes[i], volumes[j]) for i, j in pairs])), len(pairs)


def prdc(real: np.ndarray, fake: np.ndarray, k: int = PRDC_K) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real`` features (k-NN balls)."""
    from sklearn.metrics import pairwise_distances

    k = min(k, len(real) - 1, len(fake) - 1)
    if k < 1:
        raise ValueError("PRDC needs at least two real and two fake feature vectors")
    d_rr = pairwise_distances(real, real)
    d_ff = pairwise_distances(fake, fake)
    d_rf = pairwise_distances(real, fake)
    r_real = np.sort(d_rr, axis=1)[:, k]  # k-th neighbour (index 0 is the point itself)
    r_fake = np.sort(d_ff, axis=1)[:, k]
    inside = d_rf < r_real[:, None]  # (real i's ball contains fake j)
    return {
        "precision": float(inside.any(axis=0).mean()),
        "recall": float((d_rf < r_fake[None, :]).any(axis=1).mean()),
        "density": float(inside.sum(axis=0).mean() / k),
        "coverage": float((d_rf.min(axis=1) < r_real).mean()),
        "k": k,
    }
