"""The mode-seeking term (Mao et al., CVPR 2019): G is penalised when two latents of one condition
give subjects more alike than two real subjects of that condition are.

In G's phase each micro-batch's second half gets the first half's conditions and noise, so pair
(i, i + half) differs only in z. docs/lab/model.md ("Diversity") has the measurements.
"""

from __future__ import annotations

import math

import torch

from ...models.segmenter import one_hot
from .base import Fakes, LossTerm, TermContext

__all__ = ["ModeSeeking", "mode_seeking_loss", "real_pair_ratio"]


class ModeSeeking(LossTerm):
    """``weight / ratio`` per pair, the ratio capped at the level real subjects reach.

    Args:
        weight: the term's weight in G's loss.
        data: the training data (``images``, ``labels``, ``conditions``), for the cap.
        label_classes: the number of label classes (one-hot width of G's labels).
        micro_batch: the micro-batch size; pairs need at least 2.
        seed: seeds the draw of real pairs for the cap.
    """

    name = "mode_seeking"
    pairs = True

    def __init__(self, weight: float, data, label_classes: int, micro_batch: int, seed: int):
        super().__init__(weight)
        if micro_batch < 2:
            raise ValueError(
                f"mode_seeking needs pairs of samples: micro-batches of {micro_batch}; use a larger "
                "batch or fewer accumulation steps"
            )

        def subject(i: int) -> torch.Tensor:  # as G's outputs are compared: images, then the label one-hot
            return torch.cat([data.images[i : i + 1], one_hot(data.labels[i : i + 1], label_classes)], 1)[0]

        #: the term stops pulling pairs apart once they differ as much as real subjects
        self.cap = real_pair_ratio(subject, data.conditions, torch.Generator().manual_seed(seed))

    @classmethod
    def from_settings(cls, settings, context: TermContext) -> ModeSeeking:
        return cls(settings.weight, context.data, context.model.label_classes, context.micro_batch, context.seed)

    def loss(self, fakes: Fakes) -> torch.Tensor:
        # compared as users get them: clamped to [-1, 1], where -1.5 and -2 are the same black
        outputs = torch.cat([fakes.images.clamp(-1, 1), fakes.labels], 1)
        return mode_seeking_loss(outputs, fakes.z, self.cap)


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
