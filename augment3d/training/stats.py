"""Named statistics of one training step, summed over micro-batches and processes."""

from __future__ import annotations

import torch

from .distributed import World, all_reduce_sum

__all__ = ["StepStats"]


class StepStats:
    """Collects named figures during a step; :meth:`reduce` sums them over the processes.

    A figure given with ``weight`` 1 / (micro-batches) per micro-batch adds up to the step's mean;
    with weight 1 to a total (counts, sums of signs).

    Example:
        >>> stats = StepStats()
        >>> for loss in (0.25, 0.75):
        ...     stats.add("d_loss", torch.tensor(loss), 0.5)
        >>> stats.reduce(World())
        {'d_loss': 0.5}
    """

    def __init__(self):
        self._terms: dict[str, list[tuple[torch.Tensor | float, float]]] = {}

    def add(self, name: str, value: torch.Tensor | float, weight: float = 1.0) -> None:
        # a tensor is read at reduce(): reading it here would make the host wait for the GPU
        # mid-step, before it can queue the backward pass
        self._terms.setdefault(name, []).append((value.detach() if torch.is_tensor(value) else value, weight))

    def reduce(self, world: World) -> dict[str, float]:
        """Every figure summed over the processes (all of them must add the same names)."""
        names = sorted(self._terms)
        sums = []
        for name in names:
            total = 0.0
            for value, weight in self._terms[name]:
                total += float(value) * weight
            sums.append(total)
        return dict(zip(names, all_reduce_sum(sums, world)))
