"""GAN losses: LSGAN (the proposal's default) and non-saturating logistic, plus the R1 penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "condition_loss", "d_loss", "g_loss", "r1_penalty"]

LOSSES = ("lsgan", "nonsaturating")


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


def r1_penalty(real_scores: torch.Tensor, real_inputs: list[torch.Tensor]) -> torch.Tensor:
    """Squared gradient norm of D's real scores with respect to its real inputs (per sample, mean)."""
    grads = torch.autograd.grad(real_scores.sum(), real_inputs, create_graph=True)
    return sum(g.pow(2).flatten(1).sum(1) for g in grads).mean()


def condition_loss(logits: torch.Tensor, conditions: torch.Tensor, groups: list[int]) -> torch.Tensor:
    """Cross-entropy of condition logits against one-hot conditions, summed over the columns.

    ``groups`` holds each column's number of categories, in the condition vector's order
    (``ConditionEncoder.sizes``).
    """
    loss, start = logits.new_zeros(()), 0
    for size in groups:
        block = slice(start, start + size)
        loss = loss + F.cross_entropy(logits[:, block].float(), conditions[:, block].max(1).indices)
        start += size
    return loss
