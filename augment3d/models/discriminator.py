"""Discriminator3D: residual downsampling, minibatch standard deviation, projection conditioning."""

from __future__ import annotations

import math

import torch
from torch import nn

from .architecture import ModelConfig, synthesis_plan
from .layers import EqualConv3d, EqualLinear
from .ops import downsample2

__all__ = ["Discriminator3D", "minibatch_stddev"]


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append one channel: the std of features across a group of samples, averaged."""
    batch = x.shape[0]
    g = max(d for d in range(1, min(group, batch) + 1) if batch % d == 0)
    y = x.reshape(g, -1, *x.shape[1:]).float()
    y = (y - y.mean(dim=0)).pow(2).mean(dim=0).add(1e-8).sqrt()
    y = y.mean(dim=tuple(range(1, y.dim())))  # (batch / g,)
    y = y.reshape(-1, 1, 1, 1, 1).repeat(g, 1, *x.shape[2:]).to(x.dtype)
    return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, spectral: bool = False):
        super().__init__()
        self.conv1 = EqualConv3d(in_ch, in_ch, 3, activate=True, spectral=spectral)
        self.conv2 = EqualConv3d(in_ch, out_ch, 3, activate=True, spectral=spectral)
        self.skip = EqualConv3d(in_ch, out_ch, 1, bias=False, spectral=spectral)

    def forward(self, x):
        skip = self.skip(downsample2(x))
        x = downsample2(self.conv2(self.conv1(x)))
        return (x + skip) / math.sqrt(2.0)


class Discriminator3D(nn.Module):
    """Scores (images, label one-hot / softmax) given a condition vector; higher means real.

    With ``config.d_spectral_norm`` every layer's weight is spectrally normalised
    (:class:`~augment3d.models.layers.SpectralNorm`); the training loop then calls
    :func:`~augment3d.models.layers.power_iteration` on D once per step.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        base, doublings = synthesis_plan(config.shape)
        res = [min(config.shape) // 2**i for i in range(doublings + 1)]
        ch = [config.channels(r, discriminator=True) for r in res]
        sn = config.d_spectral_norm
        self.from_input = EqualConv3d(config.image_channels + config.label_classes, ch[0], 1, activate=True, spectral=sn)
        self.blocks = nn.ModuleList(DiscriminatorBlock(ch[i], ch[i + 1], sn) for i in range(doublings))
        top = ch[-1]
        self.conv = EqualConv3d(top + 1, top, 3, activate=True, spectral=sn)
        self.fc = EqualLinear(top * math.prod(base), top, activate=True, spectral=sn)
        self.out = EqualLinear(top, 1, spectral=sn)
        self.embed = EqualLinear(config.cond_dim, top, spectral=sn) if config.cond_dim else None
        #: run the convolutions in ``channels_last_3d`` memory layout (same values, see Generator3D)
        self.channels_last = False

    def forward(self, images: torch.Tensor, labels: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (B,): higher means real."""
        x = torch.cat([images, labels.to(images.dtype)], dim=1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x = self.from_input(x)
        for block in self.blocks:
            x = block(x)
        x = self.conv(minibatch_stddev(x, self.config.mbstd_group))
        h = self.fc(x.flatten(1))
        score = self.out(h)
        if self.embed is not None:
            score = score + (h * self.embed(c)).sum(dim=1, keepdim=True) / math.sqrt(h.shape[1])
        return score[:, 0]
