"""Building blocks with equalised learning rate: linear, conv, modulated conv, noise, AdaIN."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EqualLinear", "EqualConv3d", "ModulatedConv3d", "AdaINConv3d", "NoiseInjection", "lrelu"]

LRELU_GAIN = math.sqrt(2.0)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (0.2) with the gain that keeps activations' variance."""
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


class EqualLinear(nn.Module):
    """Linear layer whose weights are scaled at run time (equalised learning rate)."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul))
        self.scale = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return lrelu(out) if self.activate else out


class EqualConv3d(nn.Module):
    """3D convolution with equalised learning rate ('same' padding)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel**3)
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(x, self.weight * self.scale, self.bias, padding=self.padding)


class ModulatedConv3d(nn.Module):
    """StyleGAN2 convolution: weights scaled per sample by the style, then demodulated.

    Implemented as one grouped convolution over the batch.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel, kernel))
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_channels * kernel**3)
        self.padding = kernel // 2
        self.demodulate = demodulate
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        batch, in_ch = x.shape[:2]
        style = self.affine(w)  # (B, Cin)
        weight = self.weight[None] * self.scale * style[:, None, :, None, None, None]
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4, 5), keepdim=True) + 1e-8)
        weight = weight.reshape(batch * self.out_channels, in_ch, *weight.shape[3:]).to(x.dtype)
        out = F.conv3d(x.reshape(1, batch * in_ch, *x.shape[2:]), weight, padding=self.padding, groups=batch)
        return out.reshape(batch, self.out_channels, *out.shape[2:])


class AdaINConv3d(nn.Module):
    """The proposal's variant: plain convolution, instance norm, then per-channel scale and shift from w."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, w_dim: int):
        super().__init__()
        self.conv = EqualConv3d(in_channels, out_channels, kernel, bias=False)
        self.affine = EqualLinear(w_dim, 2 * out_channels)
        with torch.no_grad():
            self.affine.bias[:out_channels] = 1.0

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out = F.instance_norm(self.conv(x))
        gamma, beta = self.affine(w).chunk(2, dim=1)
        return out * gamma[:, :, None, None, None] + beta[:, :, None, None, None]


class NoiseInjection(nn.Module):
    """Adds per-voxel noise times a learned strength (starts at zero)."""

    def __init__(self):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            return x
        return x + self.strength * noise.to(x.dtype)
