"""Early stopping on a cheap validation metric: sliced Wasserstein distance on coarse volumes.

Real and generated subjects (images and label one-hot) are average-pooled to a coarse grid,
flattened, projected on fixed random directions, and the sorted projections compared. Lower is
closer. It is seeded and deterministic, and costs a few milliseconds. :class:`EarlyStopping`
keeps the best value and counts the evaluations since.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["EarlyStopping", "coarse_features", "sliced_wasserstein"]


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


class EarlyStopping:
    """Evaluates every ``every`` steps (0: never); stops after ``patience`` evaluations without
    improvement (0: never). Its state (best value, evaluations since) resumes with the run."""

    def __init__(self, every: int, patience: int):
        self.every, self.patience = every, patience
        self.best, self.bad_evals = math.inf, 0
        self.best_step: int | None = None

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def record(self, step: int, value: float) -> tuple[bool, bool]:
        """Note the validation value at ``step``; returns (improved, stop)."""
        improved = value < self.best
        self.best, self.bad_evals = (value, 0) if improved else (self.best, self.bad_evals + 1)
        self.best_step = step if improved else self.best_step
        return improved, self.patience > 0 and self.bad_evals >= self.patience

    def state_dict(self) -> dict:
        return {"best_metric": self.best, "bad_evals": self.bad_evals, "best_step": self.best_step}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_evals = float(state.get("best_metric", math.inf)), int(state.get("bad_evals", 0))
        self.best_step = state.get("best_step")
