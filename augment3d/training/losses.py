"""The adversarial losses, LSGAN (the proposal's default) and non-saturating logistic, and the R1
gradient penalty. Extra terms of G's loss live in their own modules (``training.terms``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .train_config import LOSSES

__all__ = ["LOSSES", "d_loss", "g_loss", "r1_penalty", "real_sign_threshold"]


def d_loss(kind: str, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    if kind == "lsgan":
        return 0.5 * ((real_scores - 1.0).pow(2).mean() + fake_scores.pow(2).mean())
    if kind == "nonsaturating":
        return F.softplus(fake_scores).mean() + F.softplus(-real_scores).mean()
    raise ValueError(f"unknown loss {kind!r} (choose from {LOSSES})")


def g_loss(kind: str, fake_scores: torch.Tensor) -> torch.Tensor:
    if kind == "lsgan":
        return 0.5 * (fake_scores - 1.0).pow(2).mean()
    if kind == "nonsaturating":
        return F.softplus(-fake_scores).mean()
    raise ValueError(f"unknown loss {kind!r} (choose from {LOSSES})")


def real_sign_threshold(kind: str) -> float:
    """The score between D's 'fake' and 'real' answers (ADA's r_t counts reals above it)."""
    return 0.5 if kind == "lsgan" else 0.0


def r1_penalty(real_scores: torch.Tensor, real_inputs: list[torch.Tensor]) -> torch.Tensor:
    """Squared gradient norm of D's real scores with respect to its real inputs (per sample, mean)."""
    grads = torch.autograd.grad(real_scores.sum(), real_inputs, create_graph=True)
    norms = [g.pow(2).flatten(1).sum(1) for g in grads]
    total = norms[0]
    for norm in norms[1:]:
        total = total + norm
    return total.mean()
