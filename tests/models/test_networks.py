"""The conditional 3D StyleGAN's networks: shapes, conditioning, seeds, and that they learn."""

from __future__ import annotations

import pytest
import torch

from augment3d.models import Discriminator3D, Generator3D, ModelConfig
from augment3d.models.layers import power_iteration
from augment3d.training.losses import d_loss, g_loss

SMALL = dict(z_dim=16, w_dim=16, channel_max=8, d_channel_max=8, mapping_layers=2, mode="joint")


@pytest.mark.parametrize("style_mode", ["modulated", "adain"])
@pytest.mark.parametrize("shape", [(16, 16, 16), (24, 24, 24), (16, 16, 24)])
def test_shapes_and_conditioning(style_mode, shape):
    torch.manual_seed(0)
    cfg = ModelConfig(shape=shape, cond_dim=4, style_mode=style_mode, **SMALL)
    g, d = Generator3D(cfg), Discriminator3D(cfg)
    z = torch.randn(1, 16).repeat(2, 1)
    c = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1]])
    images, logits = g(z, c, noise="none")
    assert images.shape == (2, 4, *shape) and logits.shape == (2, 4, *shape)
    assert not torch.allclose(images[0], images[1])  # same z, different condition -> different subject
    scores = d(images, logits.softmax(1), c)
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_condition_shape_is_checked():
    g = Generator3D(ModelConfig(shape=16, cond_dim=4, **SMALL))
    with pytest.raises(ValueError, match="condition must have shape"):
        g(torch.randn(2, 16), torch.zeros(2, 3))


def test_truncation_pulls_to_the_centre():
    torch.manual_seed(0)
    g = Generator3D(ModelConfig(shape=16, cond_dim=2, **SMALL))
    z, c = torch.randn(3, 16), torch.tensor([[1.0, 0]] * 3)
    centre = g.mapping(torch.randn(256, 16), c[:1].expand(256, -1)).mean(0, keepdim=True)
    a, _ = g(z, c, truncation_psi=0.0, w_centre=centre, noise="none")
    assert torch.allclose(a[0], a[1], atol=1e-5) and torch.allclose(a[0], a[2], atol=1e-5)
    b, _ = g(z, c, noise="none")
    assert not torch.allclose(b[0], b[1])


@pytest.mark.parametrize("spectral", [False, True], ids=["plain-d", "spectral-d"])
@pytest.mark.parametrize("loss", ["lsgan", "nonsaturating"])
def test_discriminator_and_generator_learn(loss, spectral):
    """A few real optimiser steps lower D's loss (G fixed) and then G's loss (D fixed)."""
    torch.manual_seed(0)
    cfg = ModelConfig(shape=16, cond_dim=2, d_spectral_norm=spectral, **SMALL)
    g, d = Generator3D(cfg), Discriminator3D(cfg)
    real = torch.rand(4, 4, 16, 16, 16) * 2 - 1
    real_lab = torch.nn.functional.one_hot(torch.randint(0, 4, (4, 16, 16, 16)), 4).permute(0, 4, 1, 2, 3).float()
    c = torch.tensor([[1.0, 0], [0, 1]] * 2)
    z = torch.randn(4, 16)
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.0, 0.99))
    with torch.no_grad():
        fake, logits = g(z, c, noise="none")
    losses = []
    for _ in range(8):
        loss_d = d_loss(loss, d(real, real_lab, c), d(fake, logits.softmax(1), c))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        losses.append(loss_d.item())
    assert losses[-1] < losses[0]
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.0, 0.99))
    losses = []
    for _ in range(8):
        fake, logits = g(z, c, noise="none")
        loss_g = g_loss(loss, d(fake, logits.softmax(1), c))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        losses.append(loss_g.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("side", [32, 48, 64, 128])
def test_generator_reaches_recipe_grids(side):
    """Every grid the recipes use (up to the proposal's 128^3) is built and generated."""
    cfg = ModelConfig(shape=side, cond_dim=2, **{**SMALL, "channel_max": 4, "d_channel_max": 4})
    g = Generator3D(cfg)
    with torch.no_grad():
        images, logits = g(torch.randn(1, 16), torch.tensor([[0.0, 1.0]]), noise="none")
    assert images.shape == (1, 4, side, side, side) and logits.shape == (1, 4, side, side, side)
    assert Discriminator3D(cfg)(images, logits.softmax(1), torch.tensor([[0.0, 1.0]])).shape == (1,)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="cannot be reached by doubling"):
        ModelConfig(shape=(9, 9, 9))
    with pytest.raises(ValueError, match="style_mode"):
        ModelConfig(style_mode="wavelet")


def test_style_mixing_takes_coarse_styles_from_one_latent_and_fine_ones_from_the_other():
    torch.manual_seed(0)
    g = Generator3D(ModelConfig(shape=16, cond_dim=2, **SMALL))
    c = torch.tensor([[1.0, 0]] * 2)
    with torch.no_grad():
        w, w_mix = g.mapping(torch.randn(2, 16), c), g.mapping(torch.randn(2, 16), c)
    seen = {}  # the style each watched layer was given
    for name, layer in [("coarsest", g.first), ("finest", g.blocks[-1].layer2)]:
        layer.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[1].clone()))
    cutoff = torch.tensor([2, g.num_ws])  # sample 0: w_mix from the first doubling on; sample 1: no mixing
    with torch.no_grad():
        plain, _ = g.from_w(w)
        other, _ = g.from_w(w_mix)
        mixed, _ = g.from_w(g.mix_styles(w, w_mix, cutoff))  # the call the hooks keep
    assert torch.equal(seen["coarsest"], w)
    assert torch.equal(seen["finest"][0], w_mix[0]) and torch.equal(seen["finest"][1], w[1])
    assert torch.allclose(mixed[1], plain[1], atol=1e-6)
    assert not torch.allclose(mixed[0], plain[0], atol=1e-3) and not torch.allclose(mixed[0], other[0], atol=1e-3)
    assert torch.equal(g.mix_styles(w, w_mix, 0), w_mix[:, None].expand(-1, g.num_ws, -1))


def test_spectral_norm_bounds_every_discriminator_weight():
    """Each D layer's weight, as used, has its largest singular value at 1 (times the layer's gain),
    and only ``power_iteration`` moves the estimate: forward and backward passes leave it alone."""
    torch.manual_seed(0)
    cfg = ModelConfig(shape=16, cond_dim=2, d_spectral_norm=True, **SMALL)
    d = Discriminator3D(cfg)
    layers = [m for m in d.modules() if hasattr(m, "scaled_weight")]
    assert layers and all(m.spectral is not None for m in layers)
    assert all(
        m.spectral is None
        for m in Discriminator3D(ModelConfig(shape=16, cond_dim=2, **SMALL)).modules()
        if hasattr(m, "scaled_weight")
    )
    for _ in range(50):
        power_iteration(d)
    for m in layers:
        top = torch.linalg.matrix_norm(m.scaled_weight().detach().flatten(1), ord=2)
        assert float(top) == pytest.approx(1.0, rel=1e-3)
    estimates = {k: v.clone() for k, v in d.state_dict().items() if k.endswith((".u", ".v"))}
    images, labels, c = torch.randn(2, 4, 16, 16, 16), torch.rand(2, 4, 16, 16, 16), torch.tensor([[1.0, 0], [0, 1]])
    d(images, labels, c).sum().backward()
    assert all(torch.equal(estimates[k], d.state_dict()[k]) for k in estimates)
    assert all(m.weight.grad is not None for m in layers)  # the gradient flows through the normalisation


def test_spectral_norm_under_autocast():
    """The recipes train D under bf16 autocast: the estimate stays fp32 there and equals fp32's."""
    torch.manual_seed(0)
    d = Discriminator3D(ModelConfig(shape=16, cond_dim=2, d_spectral_norm=True, **SMALL))
    layer = next(m for m in d.modules() if getattr(m, "spectral", None) is not None)
    plain = layer.spectral.sigma(layer.weight)
    images, labels, c = torch.randn(2, 4, 16, 16, 16), torch.rand(2, 4, 16, 16, 16), torch.tensor([[1.0, 0], [0, 1]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sigma = layer.spectral.sigma(layer.weight)
        d(images, labels, c).float().sum().backward()
        power_iteration(d)
    assert sigma.dtype == torch.float32 and torch.equal(sigma, plain)
    assert layer.weight.grad is not None and layer.spectral.u.dtype == torch.float32
