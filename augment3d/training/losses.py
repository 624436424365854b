"""GAN losses: LSGAN (the proposal's default) and non-saturating logistic, the R1 penalty, the
LeCam regulariser and the mode-seeking term."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "condition_loss", "d_loss", "g_loss", "lecam_penalty", "mode_seeking_loss", "r1_penalty", "real_pair_ratio",
           "scale_gradient"]

LOSSES = ("lsgan", "nonsaturating")


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` unchanged in value, with the gradient flowing back through it multiplied by ``factor``.

    Example:
        >>> x = torch.ones(3, requires_grad=True)
        >>> scale_gradient(x, 0.25).sum().backward()
        >>> x.grad.tolist()
        [0.25, 0.25, 0.25]
    """
    if factor == 1.0:
        return x
    detached = x.detach()
    return detached if factor == 0.0 else detached + factor * (x - detached)


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


def lecam_penalty(real_scores: torch.Tensor, fake_scores: torch.Tensor, real_mean: float, fake_mean: float) -> torch.Tensor:
    """LeCam regulariser (Tseng et al., CVPR 2021) for D under limited data.

    Real scores above the running mean of D's fake scores, and fake scores below the running mean
    of its real scores, are penalised by their squared excess: D cannot push the two apart without
    bound, as it does when it memorises a small cohort.
    """
    return (F.relu(real_scores - fake_mean).pow(2).mean() + F.relu(real_mean - fake_scores).pow(2).mean())


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


def mode_seeking_loss(outputs: torch.Tensor, z: torch.Tensor, cap: float = math.inf, eps: float = 1e-5) -> torch.Tensor:
    """Mode-seeking term (Mao et al., CVPR 2019): small when two latents give different subjects.

    Sample ``i`` of the first half of the batch is paired with sample ``i`` of the second half (the
    caller gives each pair the same condition). Per pair, the mean absolute difference of the
    outputs over that of the latents, clamped at ``cap``; the loss is the mean of its inverse, so
    a generator that maps different ``z`` to the same subject (conditional mode collapse) is pushed
    apart - up to ``cap``, past which the term no longer pulls (``real_pair_ratio`` gives the cap
    at which pairs differ as much as real subjects do). An odd last sample is left out; a batch of
    one gives 0.
    """
    half = outputs.shape[0] // 2
    if half == 0:
        return outputs.new_zeros((), dtype=torch.float32)
    out = outputs[: 2 * half].float().flatten(1)
    lat = z[: 2 * half].float().flatten(1)
    ratio = (out[:half] - out[half:]).abs().mean(1) / (lat[:half] - lat[half:]).abs().mean(1)
    return (1.0 / (ratio.clamp(max=cap) + eps)).mean()


def real_pair_ratio(subject, conditions: torch.Tensor, generator: torch.Generator, pairs: int = 128) -> float:
    """The mode-seeking ratio real subjects reach: mean absolute difference of ``pairs`` random
    pairs of subjects with the same condition (any two when no condition has two), over the mean
    absolute difference of two standard normal latents (2 / sqrt(pi)). ``subject(i)`` gives real
    subject ``i`` as G's outputs are compared, ``conditions`` is (N, C); inf for fewer than two.
    """
    n = conditions.shape[0]
    if n < 2:
        return math.inf
    _, group = torch.unique(conditions, dim=0, return_inverse=True)
    if int(torch.bincount(group).max()) < 2:
        group = torch.zeros_like(group)
    has_mate = torch.nonzero(torch.bincount(group)[group] >= 2).flatten()
    total = 0.0
    for _ in range(pairs):
        i = int(has_mate[torch.randint(0, has_mate.numel(), (), generator=generator)])
        mates = torch.nonzero((group == group[i]) & (torch.arange(n) != i)).flatten()
        j = int(mates[torch.randint(0, mates.numel(), (), generator=generator)])
        total += float((subject(i).float() - subject(j).float()).abs().mean())
    return total / pairs / (2.0 / math.sqrt(math.pi))
