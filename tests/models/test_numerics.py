"""The optimised paths against the plain ones they replace, within stated tolerances.

- modulated convolution: input scaling + shared convolution + demodulation (and, for one
  subject at inference, style and demodulation folded into the weight) vs the per-sample
  weights of one grouped convolution (StyleGAN2's reference form): within 1e-5 in fp32;
- generation in ``channels_last_3d`` vs the default layout: within 1e-5;
- one fp32 sample's convolution sent to oneDNN vs ``F.conv3d``: within 1e-5, first and second
  derivatives within 1e-4, a channels-last input kept channels-last;
- a labels-mode synthesis layer (SPADE, noise and leaky ReLU in place) vs the same formula out of
  place: values and gradients within 1e-5;
- the discriminator's box downsampling (strided depthwise convolution, nearest-upsampled
  gradient) vs ``avg_pool3d``: values within 1e-12 in fp64, first and second derivatives by
  ``gradcheck`` / ``gradgradcheck``, and
  the discriminator's scores and R1 penalty in ``channels_last_3d`` within 1e-4 of channels-first;
- bf16 generation vs fp32: images within 0.25 on the [-1, 1] scale, labels agreeing on >= 90 %;
- the augmenter's separable resampling vs ``affine_grid`` + ``grid_sample``: within 1e-5
  (bilinear), identical (nearest).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from augment3d.synthesis.resampling import resample
from augment3d.models import Discriminator3D, Generator3D, ModelConfig, ops
from augment3d.models.layers import ModulatedConv3d
from augment3d.models.ops import axis_upsample, block_means, conv3d, downsample2
from augment3d.models.spatial_conditioning import label_maps
from augment3d.training.losses import r1_penalty

SMALL = dict(z_dim=16, w_dim=16, channel_max=16, d_channel_max=8, mapping_layers=2)


def grouped_reference(conv: ModulatedConv3d, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's modulated convolution written out: per-sample weights, one grouped convolution."""
    batch, in_ch = x.shape[:2]
    weight = conv.weight[None] * conv.scale * conv.affine(w)[:, None, :, None, None, None]
    if conv.demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4, 5), keepdim=True) + 1e-8)
    weight = weight.reshape(batch * conv.out_channels, in_ch, *weight.shape[3:])
    out = F.conv3d(x.reshape(1, batch * in_ch, *x.shape[2:]), weight, padding=conv.padding, groups=batch)
    return out.reshape(batch, conv.out_channels, *out.shape[2:])


@pytest.mark.parametrize("batch", [3, 1])  # 1 at inference: the folded weight
@pytest.mark.parametrize("kernel,demodulate", [(3, True), (1, False)])
def test_modulated_conv_matches_grouped_reference(kernel, demodulate, batch):
    torch.manual_seed(0)
    conv = ModulatedConv3d(12, 10, kernel, w_dim=16, demodulate=demodulate)
    with torch.no_grad():
        conv.affine.weight.mul_(3.0)  # styles far from 1, so a missing modulation would show
    x, w, bias = torch.randn(batch, 12, 8, 8, 8), torch.randn(batch, 16), torch.randn(10)
    with torch.no_grad():
        ours, ref = conv(x, w, gain=1.4, bias=bias), grouped_reference(conv, x, w) * 1.4 + bias[:, None, None, None]
    trained = conv(x, w, gain=1.4, bias=bias).detach()  # the training path (grad enabled): the same values
    for out in (ours, trained):
        assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("mode", ["joint", "labels"])
def test_channels_last_generation_matches(mode):
    torch.manual_seed(0)
    g = Generator3D(ModelConfig(shape=16, cond_dim=2, mode=mode, **SMALL)).eval()
    if mode == "labels":
        for module in g.modules():  # the spatial modulation starts at zero: give it weights to test
            if hasattr(module, "scale_shift"):
                torch.nn.init.normal_(module.scale_shift.weight)
    z, c = torch.randn(2, 16), torch.tensor([[1.0, 0], [0, 1]])
    noise = g.make_noise(2, torch.Generator().manual_seed(1))
    labels = torch.randint(0, 4, (2, 16, 16, 16), generator=torch.Generator().manual_seed(2))
    maps = label_maps(labels, torch.ones(2, 16, 16, 16, dtype=torch.bool)) if mode == "labels" else None
    with torch.no_grad():
        ref = g.from_w(g.mapping(z, c), noise, maps)
        g.channels_last = True
        ours = g.from_w(g.mapping(z, c), noise, maps)
    for a, b in zip(ours, ref):
        if a is not None:
            assert a.is_contiguous() and torch.allclose(a, b, atol=1e-5)


def test_box_downsampling_matches_avg_pool_with_its_derivatives():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 6, 8, dtype=torch.float64)
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        xx = x.contiguous(memory_format=layout).requires_grad_()
        y = downsample2(xx)
        assert y.shape == (2, 3, 2, 3, 4) and torch.allclose(y, F.avg_pool3d(x, 2), atol=1e-12)
        # first and second derivatives (R1's double backward goes through the pooling)
        assert torch.autograd.gradcheck(downsample2, (xx,))
        assert torch.autograd.gradgradcheck(downsample2, (xx,))
    # bf16 channels-last stays bf16 channels-last (what the training step relies on for speed)
    xb = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last_3d)
    yb = downsample2(xb)
    assert yb.dtype == torch.bfloat16 and yb.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(yb.double(), F.avg_pool3d(xb.double(), 2), atol=1e-2)
    # odd sizes floor like avg_pool3d
    odd = torch.randn(1, 2, 5, 4, 4)
    assert torch.equal(downsample2(odd), F.avg_pool3d(odd, 2))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
def test_synthesis_layer_in_place_matches_the_formula(layout):
    """The layer adds SPADE's product, the noise and leaky ReLU in place on its own activation:
    lrelu(x * (1 + gamma) + beta + strength * noise) with x the style convolution, within 1e-5,
    and its gradients through autograd as the out-of-place formula's."""
    from augment3d.models.generator import SynthesisLayer
    from augment3d.models.ops import LRELU_GAIN, LRELU_SLOPE

    torch.manual_seed(0)
    layer = SynthesisLayer(8, 8, ModelConfig(shape=8, cond_dim=2, mode="labels", **SMALL))
    with torch.no_grad():
        torch.nn.init.normal_(layer.spatial.scale_shift.weight)
        layer.noise.strength.fill_(0.3)
        layer.bias.normal_()
    x = torch.randn(2, 8, 8, 8, 8).contiguous(memory_format=layout)
    w, noise = torch.randn(2, 16), torch.randn(2, 1, 8, 8, 8)
    labels = torch.randint(0, 4, (2, 8, 8, 8), generator=torch.Generator().manual_seed(1))
    maps = {(8, 8, 8): label_maps(labels, torch.ones(2, 8, 8, 8, dtype=torch.bool)).contiguous(memory_format=layout)}

    def formula():
        h = layer.conv(x, w, gain=LRELU_GAIN, bias=layer.bias * LRELU_GAIN)
        gamma, beta = layer.spatial.scale_shift(layer.spatial.shared(maps[(8, 8, 8)])).chunk(2, dim=1)
        h = torch.addcmul(h + beta, h, gamma)
        return F.leaky_relu(h + layer.noise.strength * LRELU_GAIN * noise, LRELU_SLOPE)

    results = []
    for forward in (lambda: layer(x, w, noise, maps), formula):
        layer.zero_grad()
        out = forward()
        out.square().mean().backward()
        results.append([out.detach(), *(p.grad.clone() for p in layer.parameters())])
    for ours, ref in zip(*results):
        assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("batch", [1, 2])
def test_activated_equal_conv_in_place_matches_the_formula_to_the_second_derivative(batch):
    """EqualConv3d(activate=True) applies leaky ReLU in place on its convolution's output (the
    discriminator's and SPADE's layers): lrelu(conv) * gain's values, and its first and second
    derivatives (R1 differentiates D's input gradient) as the out-of-place formula's."""
    from augment3d.models.layers import EqualConv3d
    from augment3d.models.ops import LRELU_GAIN, LRELU_SLOPE

    torch.manual_seed(0)
    layer = EqualConv3d(4, 6, 3, activate=True)
    with torch.no_grad():
        layer.bias.normal_()
    x0 = torch.randn(batch, 4, 6, 6, 6)

    def formula(x):
        out = F.conv3d(x, layer.weight * layer.scale, layer.bias, padding=1)
        return F.leaky_relu(out, LRELU_SLOPE) * LRELU_GAIN

    results = []
    for forward in (layer, formula):
        layer.zero_grad()
        x = x0.clone().requires_grad_()
        out = forward(x)
        (grad,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        grad.square().sum().backward()
        results.append([out.detach(), grad.detach(), layer.weight.grad.clone(), layer.bias.grad.clone()])
    for ours, ref in zip(*results):
        assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("kernel,stride,groups", [(3, 1, 1), (3, 2, 1), (3, 1, 4), (1, 1, 1)])
def test_one_sample_convolution_matches_torch_and_keeps_the_layout(kernel, stride, groups):
    """``conv3d`` sends one fp32 CPU sample to oneDNN (torch's own kernel for it was 2-6x slower
    and returned channels-first, so the augmenter's generator lost its channels-last layout):
    F.conv3d's values and derivatives, the layout kept, and bf16 under autocast as F.conv3d."""
    torch.manual_seed(0)
    x = torch.randn(1, 8, 8, 8, 8).contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    weight = torch.randn(16, 8 // groups, kernel, kernel, kernel, requires_grad=True)
    bias = torch.randn(16, requires_grad=True)
    args = (stride, kernel // 2, 1, groups)
    ours, ref = conv3d(x, weight, bias, *args), F.conv3d(x.contiguous(), weight, bias, *args)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5 * float(ref.detach().abs().max()))
    if ops._X86 and torch.backends.mkldnn.is_available():  # where conv3d takes oneDNN
        assert ours.is_contiguous(memory_format=torch.channels_last_3d)
    grads = []
    for out in (ours, ref):  # first derivatives, then second ones (R1 differentiates the gradient)
        first = torch.autograd.grad(out.pow(2).sum(), (x, weight, bias), create_graph=True)
        second = torch.autograd.grad(sum(g.pow(2).sum() for g in first), (x, weight))
        grads.append([*first, *second])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.detach().abs().max()))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv3d(x, weight, bias, *args).dtype == F.conv3d(x, weight, bias, *args).dtype == torch.bfloat16


@pytest.mark.parametrize("shape", [(2, 3, 4, 6, 8), (1, 2, 2, 2, 4)])
def test_the_gpu_resampling_matches_torch_with_its_derivatives(shape):
    """block_means and axis_upsample (what a GPU runs on channels-last input) give avg_pool3d's and
    trilinear interpolation's values, keep the layout, and have first and second derivatives."""
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64).contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    for ours, torch_op in (
        (block_means, lambda t: F.avg_pool3d(t, 2)),
        (axis_upsample, lambda t: F.interpolate(t, scale_factor=2, mode="trilinear", align_corners=False)),
    ):
        y = ours(x)
        assert torch.allclose(y, torch_op(x.detach().contiguous()), atol=1e-12)
        assert y.is_contiguous(memory_format=torch.channels_last_3d)
        assert torch.autograd.gradcheck(ours, (x,)) and torch.autograd.gradgradcheck(ours, (x,))
    xb = x.detach().to(torch.bfloat16).contiguous(memory_format=torch.channels_last_3d)
    for ours in (block_means, axis_upsample):
        assert ours(xb).dtype == torch.bfloat16


def test_channels_last_discriminator_and_r1_match():
    torch.manual_seed(0)
    d = Discriminator3D(ModelConfig(shape=16, cond_dim=2, **SMALL))
    images, labels = torch.randn(4, 4, 16, 16, 16), torch.rand(4, 4, 16, 16, 16)
    c = torch.tensor([[1.0, 0], [0, 1], [1, 0], [0, 1]])
    results = []
    for last in (False, True):
        d.channels_last = last
        d.zero_grad()
        inputs = [images.clone().requires_grad_(), labels.clone().requires_grad_()]
        scores = d(*inputs, c)
        penalty = r1_penalty(scores, inputs)
        penalty.backward()  # the double backward, through the downsampling
        results.append((scores.detach(), penalty.detach(), d.blocks[0].conv1.weight.grad.clone()))
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def test_bf16_generation_is_close_to_fp32(tiny_run):
    from augment3d import load_generator

    gen = load_generator(tiny_run)
    condition = {"site": "SSA", "grade": "HGG"}
    images, labels = gen.generate(condition=condition, seeds=range(4))
    images16, labels16 = gen.generate(condition=condition, seeds=range(4), precision="bf16")
    difference = np.abs(images16 - images).max()
    assert 0 < difference < 0.25  # bf16 arithmetic really ran, and stayed close
    assert (labels16 == labels).mean() >= 0.9
    again, _ = gen.generate(condition=condition, seeds=range(4), precision="bf16")
    assert np.array_equal(again, images16)  # and it is deterministic
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        gen.generate(condition=condition, seeds=[0], precision="fp16")


def grid_sample_reference(volumes, grid_affine, affine, shape, mode):
    """The general path, written out: one affine_grid + grid_sample (torch's axes are z, y, x)."""

    def normaliser(sizes):
        n = np.asarray(sizes, dtype=np.float64)
        m = np.eye(4)
        m[:3, :3] = np.diag(2.0 / n)
        m[:3, 3] = 1.0 / n - 1.0
        return m

    theta = normaliser(volumes.shape[1:]) @ np.linalg.inv(grid_affine) @ affine @ np.linalg.inv(normaliser(shape))
    grid = F.affine_grid(torch.from_numpy(theta[:3]).float()[None], [1, 1, *shape[::-1]], align_corners=False)
    vol = torch.from_numpy(np.ascontiguousarray(volumes.transpose(0, 3, 2, 1)))[None]
    out = F.grid_sample(vol, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out[0].numpy().transpose(0, 3, 2, 1)


GEOMETRIES = {
    "isotropic, upsampled": (np.diag([5.9, 5.9, 5.9, 1.0]), np.diag([1.5, 1.5, 1.5, 1.0]), (40, 40, 40)),
    "anisotropic, flipped, shifted, partly outside": (
        np.array([[6.1, 0, 0, -90], [0, 5.7, 0, -120], [0, 0, 6.3, -70], [0, 0, 0, 1.0]]),
        np.array([[-1.0, 0, 0, -10], [0, 1.2, 0, -126], [0, 0, 3.0, -72], [0, 0, 0, 1]]),
        (30, 44, 26),
    ),
    "oblique (general path)": (
        np.diag([5.0, 5.0, 5.0, 1.0]),
        np.array([[1.4, 0.5, 0, -20], [-0.5, 1.4, 0, -18], [0, 0, 1.5, -15], [0, 0, 0, 1]]),
        (24, 24, 24),
    ),
}


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_resampling_matches_grid_sample(geometry):
    grid_affine, affine, shape = GEOMETRIES[geometry]
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 16, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 4, size=(1, 16, 16, 16)).astype(np.float32)
    ours = resample(images, grid_affine, affine, shape, "bilinear")
    assert ours.shape == (4, *shape)
    np.testing.assert_allclose(ours, grid_sample_reference(images, grid_affine, affine, shape, "bilinear"), atol=1e-5)
    ours = resample(labels, grid_affine, affine, shape, "nearest")
    reference = grid_sample_reference(labels, grid_affine, affine, shape, "nearest")
    assert np.array_equal(ours, reference) and (ours > 0).any() and (ours == 0).any()
