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
        self._sums: dict[str, float] = {}

    def add(self, name: str, value: torch.Tensor | float, weight: float = 1.0) -> None:
        value = float(value.detach()) if torch.is_tensor(value) else float(value)
        self._sums[name] = self._sums.get(name, 0.0) + value * weight

    def reduce(self, world: World) -> dict[str, float]:
        """Every figure summed over the processes (all of them must add the same names)."""
        names = sorted(self._sums)
        return dict(zip(names, all_reduce_sum([self._sums[n] for n in names], world)))
