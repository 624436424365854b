"""Random parameters drawn for a whole batch, as frozen dataclasses that cut and move as one.

The training loop draws everything random for a phase at once (so the stream does not depend on
how the batch is split) and hands each micro-batch its rows; the label-map deformations and the
adaptive augmentation draw the same way. A field is a tensor with the batch first, a list of such
tensors, a nested :class:`Batched`, or None (not drawn: an option that is off).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import torch

__all__ = ["Batched"]

_T = TypeVar("_T", bound="Batched")


def _map(value: Any, fn):
    if value is None:
        return None
    if isinstance(value, Batched):
        return value._each(fn)
    if isinstance(value, list):
        return [fn(v) for v in value]
    if isinstance(value, torch.Tensor):
        return fn(value)
    raise TypeError(f"a batched draw holds tensors, lists of tensors or draws, not {type(value).__name__}")


class Batched:
    """Mixin for frozen dataclasses of batch-first tensors: :meth:`slice` rows, :meth:`to` a device."""

    def _each(self: _T, fn) -> _T:
        fields = {f.name: _map(getattr(self, f.name), fn) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return type(self)(**fields)

    def slice(self: _T, start: int, stop: int) -> _T:
        """Rows ``start:stop`` of every field (views, no copies)."""
        return self._each(lambda t: t[start:stop])

    def to(self: _T, device: torch.device | str) -> _T:
        return self._each(lambda t: t.to(device))
