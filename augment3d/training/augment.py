"""3D differentiable augmentation applied identically to real and fake batches (ADA-style).

``p`` is a buffer that the training loop adapts from the sign of D's outputs on real data:
above the target, D is overfitting and ``p`` rises; below, it falls.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DiffAugment3D"]


class DiffAugment3D(nn.Module):
    """Flips, integer translation, cutout (spatial: images and labels alike) and brightness /
    contrast (images only), each applied per sample with probability ``p``."""

    def __init__(self, p: float = 0.0, max_translate: float = 0.125, cutout: float = 0.25):
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))
        self.max_translate = max_translate
        self.cutout = cutout

    def _mask(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(batch, generator=generator) < self.p.item()

    def forward(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
        """Augment a batch; random draws come from ``generator`` (CPU) so runs are reproducible."""
        if self.p.item() <= 0:
            return images, labels
        batch, device = images.shape[0], images.device
        spatial = images.shape[2:]
        for axis in range(3):
            flip = self._mask(batch, generator).to(device)
            if flip.any():
                images = torch.where(flip[:, None, None, None, None], images.flip(2 + axis), images)
                labels = torch.where(flip[:, None, None, None, None], labels.flip(2 + axis), labels)
        move = self._mask(batch, generator)
        shifts = [torch.randint(-int(s * self.max_translate), int(s * self.max_translate) + 1, (batch,),
                                generator=generator) for s in spatial]
        if move.any():
            images, labels = images.clone(), labels.clone()
            for i in torch.nonzero(move)[:, 0].tolist():
                dims = (1, 2, 3)
                offset = tuple(int(s[i]) for s in shifts)
                images[i] = torch.roll(images[i], offset, dims)
                labels[i] = torch.roll(labels[i], offset, dims)
        cut = self._mask(batch, generator)
        centres = [torch.randint(0, s, (batch,), generator=generator) for s in spatial]
        if cut.any():
            keep = torch.ones(batch, 1, *spatial, device=device, dtype=images.dtype)
            for i in torch.nonzero(cut)[:, 0].tolist():
                sl = [slice(None), slice(None)]
                for s, c in zip(spatial, centres):
                    half = max(1, int(s * self.cutout) // 2)
                    sl.append(slice(max(0, int(c[i]) - half), int(c[i]) + half))
                keep[i][tuple(sl[1:])] = 0
            images = images * keep + (-1.0) * (1 - keep)
            labels = labels * keep
        bright = self._mask(batch, generator).to(device)
        delta = ((torch.rand(batch, generator=generator) - 0.5) * 0.4).to(device)
        images = images + (bright * delta)[:, None, None, None, None].to(images.dtype)
        contrast = self._mask(batch, generator).to(device)
        factor = (torch.rand(batch, generator=generator) * 0.7 + 0.7).to(device)
        factor = torch.where(contrast, factor, torch.ones_like(factor))[:, None, None, None, None].to(images.dtype)
        mean = images.mean(dim=(1, 2, 3, 4), keepdim=True)
        return (images - mean) * factor + mean, labels
