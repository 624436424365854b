"""The discriminator's adaptive augmentation (ADA, Karras et al. 2020), in 3D.

:class:`AdaptiveAugment3D` applies differentiable flips, integer translation, cutout, brightness
and contrast to everything D sees, real and fake alike, each with probability ``p``.
:class:`AugmentTuner` moves ``p`` from the sign of D's outputs on real data: above the target
D is overfitting and ``p`` rises; below, it falls.

Parameters are drawn for a whole (global) batch with :meth:`AdaptiveAugment3D.draw` and applied
to any slice of it with :meth:`AdaptiveAugment3D.apply`, so gradient accumulation and several
processes see exactly the draws one process would. (Not the torchio transform that users put in
their pipelines: that is :class:`augment3d.SyntheticAugmenter`.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..data.batched import Batched

__all__ = ["AdaptiveAugment3D", "AugmentParams", "AugmentTuner"]


@dataclass(frozen=True)
class AugmentParams(Batched):
    """One augmentation per sample: whether each op applies (flip (B, 3), move, cut, bright, contrast)
    and its parameters (shift (B, 3) voxels, cutout centre (B, 3), brightness delta, contrast factor)."""

    flip: torch.Tensor
    move: torch.Tensor
    shift: torch.Tensor
    cut: torch.Tensor
    centre: torch.Tensor
    bright: torch.Tensor
    delta: torch.Tensor
    contrast: torch.Tensor
    factor: torch.Tensor


class AdaptiveAugment3D(nn.Module):
    """Flips, integer translation, cutout (spatial: images and labels alike) and brightness /
    contrast (images only), each applied per sample with probability ``p``."""

    p: torch.Tensor  # a buffer: the training state keeps it

    def __init__(self, p: float = 0.0, max_translate: float = 0.125, cutout: float = 0.25):
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))
        self.max_translate = max_translate
        self.cutout = cutout

    def draw(self, batch: int, spatial: tuple[int, int, int], generator: torch.Generator) -> AugmentParams:
        """Random parameters for ``batch`` samples (CPU draws from ``generator`` in field order; fixed count)."""
        p = float(self.p)
        rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
        limits = [int(s * self.max_translate) for s in spatial]
        return AugmentParams(
            flip=rand(batch, 3) < p,
            move=rand(batch) < p,
            shift=torch.stack([torch.randint(-m, m + 1, (batch,), generator=generator) for m in limits], 1),
            cut=rand(batch) < p,
            centre=torch.stack([torch.randint(0, s, (batch,), generator=generator) for s in spatial], 1),
            bright=rand(batch) < p,
            delta=(rand(batch) - 0.5) * 0.4,
            contrast=rand(batch) < p,
            factor=rand(batch) * 0.7 + 0.7,
        )

    def apply(  # type: ignore[override]  # not nn.Module.apply(fn): augmentation
        self, images: torch.Tensor, labels: torch.Tensor, params: AugmentParams
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply drawn parameters; differentiable in ``images`` and ``labels``."""
        if not any(bool(t.any()) for t in (params.flip, params.move, params.cut, params.bright, params.contrast)):
            return images, labels
        device, dtype = images.device, images.dtype
        spatial = images.shape[2:]
        view = lambda t: t.to(device, non_blocking=True)[:, None, None, None, None]  # noqa: E731
        for axis in range(3):
            flip = params.flip[:, axis]
            if flip.any():
                images = torch.where(view(flip), images.flip(2 + axis), images)
                labels = torch.where(view(flip), labels.flip(2 + axis), labels)
        if params.move.any():
            moved_i, moved_l = [], []
            for i in range(images.shape[0]):
                if params.move[i]:
                    offset = tuple(int(s) for s in params.shift[i])
                    moved_i.append(torch.roll(images[i], offset, (1, 2, 3)))
                    moved_l.append(torch.roll(labels[i], offset, (1, 2, 3)))
                else:
                    moved_i.append(images[i])
                    moved_l.append(labels[i])
            images, labels = torch.stack(moved_i), torch.stack(moved_l)
        if params.cut.any():
            keep = torch.ones(images.shape[0], 1, *spatial, device=device, dtype=dtype)
            for i in torch.nonzero(params.cut)[:, 0].tolist():
                box = []
                for s, c in zip(spatial, params.centre[i].tolist()):
                    half = max(1, int(s * self.cutout) // 2)
                    box.append(slice(max(0, c - half), c + half))
                keep[(i, slice(None), *box)] = 0
            images = images * keep - (1 - keep)
            labels = labels * keep
        images = images + view(params.bright * params.delta).to(dtype)
        factor = view(torch.where(params.contrast, params.factor, torch.ones_like(params.factor))).to(dtype)
        mean = images.mean(dim=(1, 2, 3, 4), keepdim=True)
        return (images - mean) * factor + mean, labels


class AugmentTuner:
    """ADA's controller: sums sign(D(real) - threshold) over the steps and, every ``interval``
    steps, moves ``pipe.p`` by ``batch * interval / speed_images`` towards r_t = ``target``.

    Its sums are part of the training state (:meth:`state_dict`), so a resumed run moves p exactly
    as an uninterrupted one.
    """

    def __init__(
        self, pipe: AdaptiveAugment3D, target: float, interval: int, speed_images: float, batch: int, enabled: bool = True
    ):
        self.pipe, self.target, self.interval, self.enabled = pipe, target, interval, enabled
        self.step_size = batch * interval / speed_images
        self.signs, self.count = 0.0, 0

    def accumulate(self, signs: float, count: float) -> None:
        self.signs += signs
        self.count += int(count)

    def tick(self, step: int) -> float | None:
        """Adjust p at the interval; returns the r_t it acted on (None between adjustments)."""
        if not (self.enabled and step % self.interval == 0 and self.count):
            return None
        r_t = self.signs / self.count
        adjust = math.copysign(1.0, r_t - self.target) * self.step_size
        self.pipe.p.copy_((self.pipe.p + adjust).clamp(0.0, 1.0))
        self.signs, self.count = 0.0, 0
        return r_t

    def state_dict(self) -> dict:
        return {"ada_sum": self.signs, "ada_n": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.signs, self.count = float(state.get("ada_sum", 0.0)), int(state.get("ada_n", 0))
