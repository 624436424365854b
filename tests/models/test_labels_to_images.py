"""The labels-to-images generator: the map is its input, at every resolution, and it is obeyed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from augment3d.data.label_deformation import deform_maps, draw_deformations
from augment3d.models import Generator3D, ModelConfig
from augment3d.models.spatial_conditioning import label_maps, maps_to_labels
from helpers import learning_train

SMALL = dict(z_dim=16, w_dim=16, channel_max=8, d_channel_max=8, mapping_layers=2)


def _maps(centre=(8, 8, 8), radius=3, batch=1, side=16):
    grid = torch.stack(torch.meshgrid(*[torch.arange(side)] * 3, indexing="ij")).float()
    labels = torch.zeros(batch, side, side, side, dtype=torch.long)
    inside = ((grid - torch.tensor(centre).reshape(3, 1, 1, 1)) ** 2).sum(0) <= radius**2
    labels[:, inside] = 2
    brain = ((grid - (side - 1) / 2) ** 2).sum(0) <= (side / 2 - 1) ** 2
    return label_maps(labels, brain.expand(batch, -1, -1, -1))


def test_label_maps_round_trip_and_the_mode_is_recorded():
    maps = _maps()
    assert maps.shape == (1, 4, 16, 16, 16) and torch.equal(maps_to_labels(maps), (maps[:, 2] * 2).to(torch.uint8))
    config = ModelConfig(shape=16, cond_dim=2, **SMALL)
    assert config.mode == "labels" and ModelConfig.from_dict({**config.to_dict(), "mode": "joint"}).mode == "joint"
    old = config.to_dict()
    del old["mode"]
    assert ModelConfig.from_dict(old).mode == "joint"  # generators saved before the option were joint
    assert ModelConfig.from_dict(old).spade_kernel == 3  # and had 3x3x3 SPADE convolutions
    assert ModelConfig.from_dict({**config.to_dict(), "spade_kernel": 1}).spade_kernel == 1
    with pytest.raises(ValueError, match="mode must be one of"):
        ModelConfig(mode="both")
    with pytest.raises(ValueError, match="spade_kernel must be 1 or 3"):
        ModelConfig(spade_kernel=5)


def test_outside_the_brain_is_exact_background_and_maps_are_required():
    torch.manual_seed(0)
    g = Generator3D(ModelConfig(shape=16, cond_dim=2, **SMALL))
    maps = _maps()
    images, logits = g(torch.randn(1, 16), torch.tensor([[1.0, 0.0]]), maps=maps)
    assert logits is None and images.shape == (1, 4, 16, 16, 16)
    outside = maps[0, 0] == 0
    assert torch.equal(images[0][:, outside], torch.full_like(images[0][:, outside], -1.0))
    assert images[0][:, ~outside].std() > 0
    with pytest.raises(ValueError, match="renders images from label maps"):
        g(torch.randn(1, 16), torch.tensor([[1.0, 0.0]]))


@pytest.mark.parametrize("kernel", [3, 1])
def test_the_map_reaches_every_resolution(kernel):
    """Each style layer's output depends on the map through its spatial modulation."""
    torch.manual_seed(0)
    g = Generator3D(ModelConfig(shape=16, cond_dim=2, spade_kernel=kernel, **SMALL))
    layers = [g.first, *[layer for block in g.blocks for layer in (block.layer1, block.layer2)]]
    assert all(layer.spatial is not None for layer in layers)
    with torch.no_grad():
        for layer in layers:  # trained weights are not zero; the zero start is for training only
            layer.spatial.scale_shift.weight.normal_()
    seen = {}
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda m, args, out, i=i: seen.setdefault(i, []).append(out.detach().clone()))
    z, c = torch.randn(1, 16), torch.tensor([[1.0, 0.0]])
    with torch.no_grad():
        g.from_w(g.mapping(z, c), None, _maps((5, 5, 5)))
        g.from_w(g.mapping(z, c), None, _maps((10, 10, 10)))
    for i, (a, b) in seen.items():
        assert not torch.allclose(a, b), f"layer {i} ignores the map"


@pytest.mark.parametrize("shape", [16, (16, 16, 24)])
def test_joint_mode_still_generates_labels(shape):
    g = Generator3D(ModelConfig(shape=shape, cond_dim=2, mode="joint", **SMALL))
    images, logits = g(torch.randn(2, 16), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert logits.shape == (2, 4, *g.config.shape) and images.shape == (2, 4, *g.config.shape)


def test_deformations_keep_classes_and_a_seed_names_one():
    maps = _maps(batch=3)
    a = deform_maps(maps, draw_deformations(3, torch.Generator().manual_seed(5)))
    b = deform_maps(maps, draw_deformations(3, torch.Generator().manual_seed(5)))
    c = deform_maps(maps, draw_deformations(3, torch.Generator().manual_seed(6)))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert (a[:, 2] <= a[:, 0]).all()  # the tumour stays inside the brain: one field moves both
    assert 0.5 < a[:, 2].sum() / maps[:, 2].sum() < 1.6  # scaled by at most 10% per axis, elastic a little


def test_a_short_run_renders_the_tumour_where_the_map_puts_it(tiny, tmp_path):
    """Bright tumours on a dark brain: after 150 steps, moving the map's tumour moves the bright
    region, and the image changes where the map changed far more than elsewhere."""
    from augment3d.synthesis.sampling import load_generator
    from augment3d.training.loop import TrainingData
    from augment3d.training.trainer import train_gan

    rng = torch.Generator().manual_seed(0)
    n, labels = 8, torch.zeros(8, 16, 16, 16, dtype=torch.long)
    images = torch.full((n, 4, 16, 16, 16), -1.0)
    for i in range(n):
        maps = _maps(tuple(int(v) for v in torch.randint(5, 11, (3,), generator=rng)), radius=3)
        labels[i] = maps_to_labels(maps)[0].long()
        images[i][:, maps[0, 0] > 0] = -0.4
        images[i][:, labels[i] > 0] = 0.8
    images += 0.05 * torch.randn(images.shape, generator=rng) * (images > -1)
    conds = torch.from_numpy(tiny.encoder.encode([{"site": "HIC"}, {"site": "SSA"}] * 4))
    config = learning_train(tiny.train, log_every=50)
    train_gan(tmp_path, TrainingData(images, labels, conds), replace(tiny.model, mode="labels"), config, tiny.encoder)
    gen = load_generator(tmp_path)
    before, after = _maps((5, 5, 5), radius=3), _maps((10, 10, 10), radius=3)
    render = [
        gen.generate(
            condition={"site": "HIC"},
            seeds=[0, 1, 2, 3],
            label_maps=(maps_to_labels(m).numpy().repeat(4, 0), m[:, 0].bool().numpy().repeat(4, 0)),
        )[0]
        for m in (before, after)
    ]
    old, new = before[0, 2].bool().numpy(), after[0, 2].bool().numpy()
    assert render[1][:, 0][:, new].mean() > render[0][:, 0][:, new].mean() + 0.3  # bright where the tumour went
    change = np.abs(render[1] - render[0]).mean((0, 1))
    brain = before[0, 0].bool().numpy()
    moved, rest = old | new, brain & ~(old | new)
    assert change[moved].mean() > 3 * change[rest].mean(), (change[moved].mean(), change[rest].mean())
