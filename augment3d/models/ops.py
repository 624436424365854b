"""The kernels under the networks' layers: activation, convolution dispatch, the box and linear
resamplers and a fused scale-and-shift. Performance work happens here (and is measured in
``benchmarks/``); the layers in :mod:`.layers` only call these.
"""

from __future__ import annotations

import math
import platform

import torch
import torch.nn.functional as F

__all__ = [
    "LRELU_GAIN",
    "LRELU_SLOPE",
    "axis_upsample",
    "block_means",
    "conv3d",
    "downsample2",
    "lrelu",
    "scale_shift",
    "upsample2",
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


def scale_shift(x: torch.Tensor, scale: torch.Tensor | float, shift: torch.Tensor | None) -> torch.Tensor:
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
