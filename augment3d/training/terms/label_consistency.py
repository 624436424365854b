"""The label-consistency term: a small segmenter beside D judges G's images against G's labels.

A 3D U-Net S (:class:`~augment3d.models.TinySegmenter`) trains on every step's real batch (as
loaded) with cross-entropy + soft Dice. After ``warmup`` steps G's loss gains S's loss on G's
images against G's own straight-through labels, so the gradient goes two ways: through S into
the images (show a tumour where the labels put one) and through the soft Dice into the label
logits (put the labels where S sees a tumour). S never learns from G's loss. docs/MODEL.md
("Label consistency") has the measurements.
"""

from __future__ import annotations

import contextlib

import torch

from ...models.segmenter import TinySegmenter, segmentation_loss
from ..distributed import World, all_reduce_grads
from .base import Fakes, LossTerm, TermContext
from ..stats import StepStats

__all__ = ["LabelConsistency"]


class LabelConsistency(LossTerm):
    """S's loss on G's subjects as a term of G's loss; S trained on the reals in D's phase.

    Logs ``seg_real`` (S's loss on the real batch) and ``seg_fake`` (the term, once active).
    """

    name = "seg_fake"

    def __init__(
        self,
        weight: float,
        image_channels: int,
        label_classes: int,
        width: int,
        lr: float,
        warmup: int,
        device: str,
        dtype: torch.dtype | None = None,
        channels_last: bool = False,
    ):
        super().__init__(weight)
        self.S = TinySegmenter(image_channels, label_classes, width).to(device)
        self.optimizer = torch.optim.Adam(self.S.parameters(), lr=lr)
        self.warmup = warmup
        #: the autocast dtype and layout S runs under (None, False: fp32 channels-first); its loss stays fp32
        self.device_type, self.dtype, self.channels_last = torch.device(device).type, dtype, channels_last

    @classmethod
    def from_settings(cls, settings, context: TermContext) -> LabelConsistency:
        on = settings.autocast  # S under the training's autocast and layout, or fp32 channels-first
        return cls(
            settings.weight,
            context.model.image_channels,
            context.model.label_classes,
            settings.width,
            settings.lr,
            settings.warmup,
            context.device,
            context.dtype if on else None,
            context.channels_last and on,
        )

    def _segment(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None):
            return self.S(images)

    def networks(self) -> dict[str, torch.nn.Module]:
        return {"S": self.S}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"S": self.optimizer}

    def begin_d_phase(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def on_real(self, images: torch.Tensor, onehot: torch.Tensor, weight: float, stats: StepStats) -> None:
        loss = segmentation_loss(self._segment(images.detach()), onehot.detach())
        (loss * weight).backward()
        stats.add("seg_real", loss, weight)

    def end_d_phase(self, world: World) -> None:
        all_reduce_grads(self.S, world)
        self.optimizer.step()

    @contextlib.contextmanager
    def g_phase(self):
        self.S.requires_grad_(False)  # G's loss passes through S but does not train it
        try:
            yield
        finally:
            self.S.requires_grad_(True)

    def active(self, step: int) -> bool:
        return step > self.warmup

    def loss(self, fakes: Fakes) -> torch.Tensor:
        return segmentation_loss(self._segment(fakes.images), fakes.labels)
