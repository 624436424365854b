"""TinySegmenter, a small 3D U-Net, and the segmentation loss it trains with.

Two users: the label-consistency judge in ``augment3d.metrics`` (trained on real volumes after
the GAN, it scores synthetic subjects) and the GAN trainer's label-consistency term (trained on
real volumes alongside the GAN, it tells G where its labels disagree with its images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TinySegmenter", "one_hot", "segmentation_loss", "soft_dice"]


class TinySegmenter(nn.Module):
    """A two-level 3D U-Net: enough to find a tumour at 16-64^3, cheap on a CPU."""

    def __init__(self, in_channels: int = 4, classes: int = 4, width: int = 16):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(
                nn.Conv3d(cin, cout, 3, padding=1),
                nn.InstanceNorm3d(cout),
                nn.LeakyReLU(0.1),
                nn.Conv3d(cout, cout, 3, padding=1),
                nn.InstanceNorm3d(cout),
                nn.LeakyReLU(0.1),
            )

        self.enc1, self.enc2 = block(in_channels, width), block(width, 2 * width)
        self.bottom = block(2 * width, 4 * width)
        self.dec2, self.dec1 = block(6 * width, 2 * width), block(3 * width, width)
        self.head = nn.Conv3d(width, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool3d(e1, 2))
        b = self.bottom(F.max_pool3d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(b, size=e2.shape[2:], mode="trilinear"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[2:], mode="trilinear"), e1], 1))
        return self.head(d1)


def one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """(B, X, Y, Z) integer labels -> (B, classes, X, Y, Z) float one-hot."""
    return F.one_hot(labels.long(), classes).permute(0, 4, 1, 2, 3).float()


def segmentation_loss(logits: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + soft Dice (foreground classes, pooled over the batch) of ``logits``
    (B, K, ...) against the label map ``onehot`` (B, K, ...).

    ``onehot`` may carry a gradient (a straight-through one-hot from the generator): the soft Dice
    then also pulls the labels towards the segmentation; the cross-entropy's target is its argmax.
    """
    logits = logits.float()
    onehot = onehot.float()
    probs = logits.softmax(1)
    return F.cross_entropy(logits, onehot.argmax(1)) + (1 - soft_dice(probs, onehot)[1:].mean())


def soft_dice(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice per channel of (B, K, ...) maps, pooled over the batch and space, with ``smooth``
    added above and below (so a channel empty in both scores 1).

    Example:
        >>> soft_dice(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2)).tolist()
        [1.0]
    """
    dims = (0, *range(2, probs.dim()))
    return (2 * (probs * target).sum(dims) + smooth) / (probs.sum(dims) + target.sum(dims) + smooth)
