"""Building blocks with equalised learning rate: linear, conv, modulated conv, noise, AdaIN (their
kernels in :mod:`.ops`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ops import LRELU_GAIN, LRELU_SLOPE, conv3d, lrelu, scale_shift

__all__ = [
    "EqualLinear",
    "EqualConv3d",
    "ModulatedConv3d",
    "AdaINConv3d",
    "NoiseInjection",
    "SpectralNorm",
    "power_iteration",
]


class SpectralNorm(nn.Module):
    """Spectral normalisation state of one weight: the power-iteration vectors ``u`` and ``v``.

    The layer divides its weight by ``sigma(weight) = u^T W v`` (W the weight as a matrix, u and
    v held constant, as in Miyato et al., ICLR 2018), so its largest singular value is about 1.
    Unlike ``torch.nn.utils.spectral_norm``, a forward pass never updates u and v: the training
    loop calls :func:`power_iteration` once per step, so the result does not depend on how many
    forward passes (micro-batches, R1, processes) a step makes, and a resumed run, whose u and v
    are buffers in the training state, continues exactly.
    """

    u: torch.Tensor
    v: torch.Tensor

    def __init__(self, weight: torch.Tensor, iterations: int = 10):
        super().__init__()
        matrix = weight.detach().flatten(1)
        self.register_buffer("u", F.normalize(torch.randn(matrix.shape[0]), dim=0))
        self.register_buffer("v", F.normalize(torch.randn(matrix.shape[1]), dim=0))
        for _ in range(iterations):
            self.update(weight)

    @torch.no_grad()
    def update(self, weight: torch.Tensor) -> None:
        """One power-iteration step towards the top singular vectors of ``weight``."""
        matrix = weight.detach().float().flatten(1)
        with torch.autocast(matrix.device.type, enabled=False):
            self.v.copy_(F.normalize(matrix.t() @ self.u, dim=0, eps=1e-12))
            self.u.copy_(F.normalize(matrix @ self.v, dim=0, eps=1e-12))

    def sigma(self, weight: torch.Tensor) -> torch.Tensor:
        """The estimated largest singular value of ``weight`` (differentiable in the weight), in fp32
        also under autocast, which would otherwise run the product in bf16/fp16."""
        with torch.autocast(weight.device.type, enabled=False):
            return torch.dot(self.u, weight.float().flatten(1) @ self.v)


def power_iteration(module: nn.Module) -> None:
    """One power-iteration step for every spectrally normalised layer in ``module`` (no-op without)."""
    for layer in module.modules():
        norm = getattr(layer, "spectral", None)
        if isinstance(norm, SpectralNorm) and isinstance(layer.weight, torch.Tensor):
            norm.update(layer.weight)


class _Equalised(nn.Module):
    """Shared by the equalised layers: the weight as used, scaled at run time, or spectrally normalised."""

    weight: nn.Parameter
    scale: float
    spectral: SpectralNorm | None

    def scaled_weight(self, gain: float = 1.0) -> torch.Tensor:
        if self.spectral is None:
            return self.weight * (self.scale * gain)
        return self.weight * (gain / self.spectral.sigma(self.weight)).to(self.weight.dtype)


class EqualLinear(_Equalised):
    """Linear layer whose weights are scaled at run time (equalised learning rate).

    ``spectral``: divide the weight by its largest singular value instead (:class:`SpectralNorm`).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activate: bool = False,
        spectral: bool = False,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul))
        self.scale = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activate = activate
        self.spectral = SpectralNorm(self.weight) if spectral else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.scaled_weight(), self.bias * self.lr_mul)
        return lrelu(out) if self.activate else out


class EqualConv3d(_Equalised):
    """3D convolution with equalised learning rate ('same' padding); ``activate``: then ``lrelu``.

    ``spectral``: divide the weight by its largest singular value instead (:class:`SpectralNorm`).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, bias: bool = True, activate: bool = False, spectral: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel**3)
        self.padding = kernel // 2
        self.activate = activate
        self.spectral = SpectralNorm(self.weight) if spectral else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.activate:
            return conv3d(x, self.scaled_weight(), self.bias, padding=self.padding)
        # lrelu(conv(x)) with the gain folded into weight and bias: one full-size pass fewer; the
        # activation in place on the convolution's fresh output, which no backward pass needs
        # (the same values, one full-size tensor fewer kept for the backward pass)
        bias = None if self.bias is None else self.bias * LRELU_GAIN
        return F.leaky_relu_(conv3d(x, self.scaled_weight(LRELU_GAIN), bias, padding=self.padding), LRELU_SLOPE)


class ModulatedConv3d(nn.Module):
    """StyleGAN2 convolution: weights scaled per sample by the style, then demodulated.

    Computed without per-sample weights: the input is scaled by the style, convolved with the
    shared weight, and the output scaled by the demodulation factor - the same result as one
    grouped convolution over the batch (within 1e-5 in fp32), and faster on CPU, since every
    sample shares one ordinary convolution (1.0-1.1x in fp32, 1.6x in bf16 channels-last at 32^3,
    docs/PERFORMANCE.md).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel, kernel))
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_channels * kernel**3)
        self.padding = kernel // 2
        self.demodulate = demodulate
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor, w: torch.Tensor, gain: float = 1.0, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The modulated convolution, times ``gain``, plus ``bias`` (C,) if given (one fused pass)."""
        style = self.affine(w).float() * self.scale  # (B, Cin)
        factor = None
        if self.demodulate:  # 1 / |style-scaled weight| per sample and output channel
            energy = self.weight.float().pow(2).sum(dim=(2, 3, 4))  # (Cout, Cin)
            factor = gain * torch.rsqrt((style.pow(2)[:, None, :] * energy[None]).sum(2) + 1e-8)  # (B, Cout), fp32
        if x.shape[0] == 1 and not torch.is_grad_enabled():
            # one subject, inference (the augmenter's restyle): style, demodulation, gain and bias
            # go into the convolution's weight and bias, two full-size passes fewer
            scale = factor[0][:, None] if factor is not None else gain
            weight = self.weight.float() * (style[0][None, :] * scale)[:, :, None, None, None]
            return conv3d(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype), padding=self.padding)
        out = conv3d(x * style.to(x.dtype)[:, :, None, None, None], self.weight.to(x.dtype), padding=self.padding)
        if factor is not None:
            return scale_shift(out, factor[:, :, None, None, None], bias)
        return scale_shift(out, gain, bias)


class AdaINConv3d(nn.Module):
    """The proposal's variant: plain convolution, instance norm, then per-channel scale and shift from w."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, w_dim: int):
        super().__init__()
        self.conv = EqualConv3d(in_channels, out_channels, kernel, bias=False)
        self.affine = EqualLinear(w_dim, 2 * out_channels)
        with torch.no_grad():
            self.affine.bias[:out_channels] = 1.0

    def forward(self, x: torch.Tensor, w: torch.Tensor, gain: float = 1.0, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised, styled convolution, times ``gain``, plus ``bias`` (C,) if given."""
        out = F.instance_norm(self.conv(x))
        gamma, beta = self.affine(w).chunk(2, dim=1)
        shift = beta * gain if bias is None else beta * gain + bias
        return scale_shift(out, gamma[:, :, None, None, None] * gain, shift)


class NoiseInjection(nn.Module):
    """Adds per-voxel noise times a learned strength (starts at zero)."""

    def __init__(self):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None, gain: float = 1.0) -> torch.Tensor:
        """``x`` plus the noise times its strength (times ``gain``, when x was scaled by it), added
        into ``x`` itself: the synthesis layer's fresh activation, which no backward pass needs."""
        if noise is None:
            return x
        noise = noise.to(x.dtype)
        if x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last_3d):
            # in channels_last_3d the channels are the innermost axis: broadcasting the one noise
            # channel over them is several times slower than the same addition with the noise
            # expanded (identical values)
            noise = noise.expand(x.shape).contiguous(memory_format=torch.channels_last_3d)
        return x.addcmul_((self.strength * gain).to(x.dtype), noise)
