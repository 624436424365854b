"""A cheap validation metric for early stopping: sliced Wasserstein distance on coarse volumes.

Real and generated subjects (images and label one-hot) are average-pooled to a coarse grid,
flattened, projected on fixed random directions, and the sorted projections compared. Lower is
closer. It is seeded and deterministic, and costs a few milliseconds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["coarse_features", "sliced_wasserstein"]


def coarse_features(images: torch.Tensor, label_probs: torch.Tensor, side: int = 8) -> torch.Tensor:
    x = torch.cat([images.float(), label_probs.float()], dim=1)
    return F.adaptive_avg_pool3d(x, side).flatten(1)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """SWD between two sets of feature vectors (rows), resampled to the same count by quantiles."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(a.shape[1], projections, generator=g, dtype=torch.float64)
    directions /= directions.norm(dim=0, keepdim=True)
    pa = (a.double() @ directions).sort(dim=0).values
    pb = (b.double() @ directions).sort(dim=0).values
    q = torch.linspace(0, 1, max(len(pa), len(pb)), dtype=torch.float64)
    qa = torch.quantile(pa, q, dim=0)
    qb = torch.quantile(pb, q, dim=0)
    return float((qa - qb).abs().mean())
