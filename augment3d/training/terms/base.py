"""The interface of an extra loss term: what the training loop needs to know of it.

The adversarial losses and R1 are the loop's own; every other term (mode seeking, label
consistency, whatever comes next) is a :class:`LossTerm` in its own module of this package, built
from its ``[train.terms.NAME]`` settings (:mod:`.settings`) by :meth:`LossTerm.from_settings`;
the loop calls it at fixed points of a step and otherwise knows nothing about it::

    D phase   term.begin_d_phase(); per real micro-batch term.on_real(...); term.end_d_phase(world)
    G phase   per micro-batch, when term.active(step): total += term.weight * term.loss(fakes)

A term that trains a network of its own (the label-consistency segmenter) names it and its
optimiser in :meth:`networks` and :meth:`optimizers`: they are saved with the training state and
restored by ``--resume``. Each term logs its value (before the weight) under :attr:`name`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from ...models.architecture import ModelConfig
from ..distributed import World
from ..stats import StepStats

__all__ = ["Fakes", "LossTerm", "TermContext"]


@dataclass(frozen=True)
class TermContext:
    """What a term may need to build itself, beside its own settings."""

    #: the training data (``images``, ``labels``, ``masks``, ``conditions``)
    data: Any
    #: the architecture (``image_channels``, ``label_classes``)
    model: ModelConfig
    #: subjects per micro-batch
    micro_batch: int
    #: the run's seed
    seed: int
    device: str
    #: the training's autocast dtype (None: fp32) and memory layout
    dtype: torch.dtype | None = None
    channels_last: bool = False


@dataclass
class Fakes:
    """One micro-batch of G's subjects as the G phase made them (before D's augmentation)."""

    #: images (B, 4, X, Y, Z), float32, unclamped
    images: torch.Tensor
    #: straight-through one-hot labels (B, classes, X, Y, Z): hard values, the softmax's gradient
    labels: torch.Tensor
    #: the latents they were made from (B, z_dim)
    z: torch.Tensor
    #: the encoded conditions they were rendered under (B, condition width)
    conditions: torch.Tensor | None = None
    #: inpaint mode: the real crops G rendered into (B, 4, X, Y, Z) and the regions it rendered (B, X, Y, Z)
    crops: torch.Tensor | None = None
    regions: torch.Tensor | None = None


class LossTerm:
    """Base class: a term of G's loss that does nothing until a subclass says otherwise."""

    #: the key of its value in the log
    name: str = "term"
    #: True when the term compares G's subjects in pairs: subject i and i + half of each
    #: micro-batch then share their condition and noise and differ only in z
    pairs: bool = False

    def __init__(self, weight: float):
        self.weight = float(weight)

    @classmethod
    def from_settings(cls, settings, context: TermContext) -> LossTerm:
        """The term as its ``[train.terms.NAME]`` settings and the run's ``context`` say."""
        raise NotImplementedError

    def networks(self) -> dict[str, torch.nn.Module]:
        """Networks the term trains itself, by the name they are saved under."""
        return {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def begin_d_phase(self) -> None:
        """Called before D's micro-batches."""

    def on_real(self, images: torch.Tensor, onehot: torch.Tensor, weight: float, stats: StepStats) -> None:
        """Sees each real micro-batch of D's phase, as loaded (before D's augmentation)."""

    def end_d_phase(self, world: World) -> None:
        """Called after D's optimiser step."""

    def g_phase(self) -> contextlib.AbstractContextManager:
        """Held around G's phase (e.g. to keep the term's own networks out of G's gradient)."""
        return contextlib.nullcontext()

    def active(self, step: int) -> bool:
        """Whether the term joins G's loss at ``step``."""
        return True

    def loss(self, fakes: Fakes) -> torch.Tensor:
        """The term's value for one micro-batch (a scalar tensor, before its weight)."""
        raise NotImplementedError
