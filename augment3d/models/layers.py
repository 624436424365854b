"""Building blocks with equalised learning rate: linear, conv, modulated conv, noise, AdaIN."""

from __future__ import annotations

import math
import platform

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EqualLinear",
    "EqualConv3d",
    "ModulatedConv3d",
    "AdaINConv3d",
    "NoiseInjection",
    "SpectralNorm",
    "lrelu",
    "conv3d",
    "downsample2",
    "upsample2",
    "block_means",
    "axis_upsample",
    "power_iteration",
]

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (slope 0.2) with the gain that keeps activations' variance."""
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


#: where the one-sample route was measured (x86-64 CPUs); elsewhere torch keeps its own choice
_X86 = platform.machine().lower() in ("x86_64", "amd64")


def _one_sample_on_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`conv3d` sends this fp32 CPU convolution of one sample to oneDNN itself."""
    return (
        _X86
        and x.shape[0] == 1
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and bool(torch.backends.mkldnn.enabled)
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def conv3d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0, dilation=1, groups: int = 1
) -> torch.Tensor:
    """``F.conv3d`` (zero padding given as ints), with one fp32 sample on the CPU sent to oneDNN.

    For a batch of one in fp32, torch runs a 3D convolution whose input has at most 20480
    channels x depth x height values (16 channels at 32^3, all of SPADE's map encoders) with its
    own im2col kernel, 2-6x slower than oneDNN at one thread (16 -> 64 channels, 3x3x3, 32^3:
    95 against 19 ms), and returns channels-first whatever the input's layout; that was 78% of the
    restyling augmenter's time in fp32 (docs/PERFORMANCE.md). Larger inputs, batches, bf16 and
    autocast already take oneDNN, so there this is the same call. Differentiable twice, like
    ``F.conv3d``. Only on x86-64, where it was measured.
    """
    if _one_sample_on_onednn(x, weight):
        triple = lambda v: list(v) if isinstance(v, (tuple, list)) else [v] * 3  # noqa: E731
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, triple(padding), triple(stride), triple(dilation), groups)
    return F.conv3d(x, weight, bias, stride, padding, dilation, groups)


class _BoxDown(torch.autograd.Function):
    """2x2x2 average pooling as a depthwise strided convolution; gradient by nearest upsampling.

    Same values as ``F.avg_pool3d(x, 2)`` on even sizes, but it keeps bf16 and
    ``channels_last_3d``: on CPU ``avg_pool3d`` has no bf16 kernel (autocast runs it in fp32) and
    returns channels-first, so every pooling paid two full-size conversions - a quarter of the
    64^3 training step (docs/PERFORMANCE.md). Some oneDNN builds (seen on an AVX2 CPU without
    bf16 instructions) return the depthwise convolution channels-first even so; the output is
    then put back into the input's layout, at an eighth of the input's size. The backward is
    written with differentiable operations, so R1's double backward goes through it.
    """

    @staticmethod
    def forward(ctx, x):
        channels = x.shape[1]
        out = F.conv3d(x, x.new_full((channels, 1, 2, 2, 2), 0.125), stride=2, groups=channels)
        if _channels_last(x) and not _channels_last(out):
            out = out.contiguous(memory_format=torch.channels_last_3d)
        return out

    @staticmethod
    def backward(ctx, grad):
        return F.interpolate(grad * 0.125, scale_factor=2, mode="nearest")


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()


def block_means(x: torch.Tensor) -> torch.Tensor:
    """2x2x2 block means of a ``channels_last_3d`` tensor with even sizes, as one reduction over a
    view of its memory, (B, D/2, 2, H/2, 2, W/2, 2, C): no layout conversion, accumulated in
    fp32 as ``avg_pool3d`` does, differentiable twice. The GPU's downsampling: there ``_BoxDown``
    ran as cuDNN's grouped convolution, 144 ms a 128^3 step forward alone, and ``avg_pool3d``
    returns channels-first (H200: 7 ms forward + backward against 49 and 42 for a 4 x 128 x 128^3
    bf16 input, ``benchmarks/resampling.py``, docs/PERFORMANCE.md)."""
    b, c, d, h, w = x.shape
    blocks = x.permute(0, 2, 3, 4, 1).reshape(b, d // 2, 2, h // 2, 2, w // 2, 2, c)
    return blocks.mean((2, 4, 6)).permute(0, 4, 1, 2, 3)


def _linear_up(y: torch.Tensor, axis: int) -> torch.Tensor:
    """``y`` twice as long along ``axis``, linearly interpolated as ``F.interpolate`` does with
    ``align_corners=False`` (weights 3/4 and 1/4 of each voxel and its neighbour, edges clamped)."""
    n = y.shape[axis]
    before = torch.cat([y.narrow(axis, 0, 1), y.narrow(axis, 0, n - 1)], axis)
    after = torch.cat([y.narrow(axis, 1, n - 1), y.narrow(axis, n - 1, 1)], axis)
    return torch.stack([torch.lerp(y, before, 0.25), torch.lerp(y, after, 0.25)], axis + 1).flatten(axis, axis + 1)


def axis_upsample(x: torch.Tensor) -> torch.Tensor:
    """Trilinear x2 upsampling of a ``channels_last_3d`` tensor one axis at a time, on the
    channel-innermost view of its memory: ``F.interpolate``'s values (rounded differently), the
    layout kept, differentiable twice."""
    y = x.permute(0, 2, 3, 4, 1)
    for axis in (1, 2, 3):
        y = _linear_up(y, axis)
    return y.permute(0, 4, 1, 2, 3)


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Trilinear x2 upsampling (``align_corners=False``), in the input's dtype and layout.

    A ``channels_last_3d`` input on a GPU goes to :func:`axis_upsample`: there the trilinear
    kernel took 25 ms a call for a 4 x 128 x 64^3 bf16 channels-last input (H200 profile,
    docs/PERFORMANCE.md). Everything else to ``F.interpolate``."""
    if x.device.type != "cpu" and _channels_last(x):
        return axis_upsample(x)
    return F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)


def downsample2(x: torch.Tensor) -> torch.Tensor:
    """Average each 2x2x2 block (B, C, D, H, W -> D/2, H/2, W/2), in the input's dtype and layout.

    On the CPU, channels-first fp32 input and odd sizes go to ``F.avg_pool3d`` (fastest there; odd
    sizes floor), the rest to ``_BoxDown``. On a GPU, channels-last input with even sizes goes to
    :func:`block_means`, the rest to ``F.avg_pool3d``.
    """
    even = all(n % 2 == 0 for n in x.shape[2:])
    if x.device.type != "cpu":
        return block_means(x) if even and _channels_last(x) else F.avg_pool3d(x, 2)
    if (x.dtype != torch.float32 or _channels_last(x)) and even:
        return _BoxDown.apply(x)
    return F.avg_pool3d(x, 2)


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


def _scale_shift(x: torch.Tensor, scale: torch.Tensor | float, shift: torch.Tensor | None) -> torch.Tensor:
    """``x * scale + shift`` in one pass, in x's dtype; shift (C,) or (B, C), broadcast over space."""
    if isinstance(scale, torch.Tensor):
        scale = scale.to(x.dtype)
    elif shift is None and scale == 1.0:
        return x
    if shift is None:
        return x * scale
    shift = shift.to(x.dtype)[..., None, None, None]
    if shift.dim() == 4:
        shift = shift[None]
    return torch.addcmul(shift, x, scale) if isinstance(scale, torch.Tensor) else torch.add(shift, x, alpha=scale)


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
            return _scale_shift(out, factor[:, :, None, None, None], bias)
        return _scale_shift(out, gain, bias)


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
        return _scale_shift(out, gamma[:, :, None, None, None] * gain, shift)


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
