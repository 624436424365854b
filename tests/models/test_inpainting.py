"""The inpainting mode: a lesion rendered into a crop of a real subject, the rest of the crop kept."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from augment3d.data.crops import crop_at, tumour_crops
from augment3d.models import Generator3D, ModelConfig
from augment3d.models.spatial_conditioning import inpaint_maps, label_maps, tumour_regions

SMALL = dict(shape=16, cond_dim=2, z_dim=16, w_dim=16, channel_max=8, d_channel_max=8, mapping_layers=2, mode="inpaint")


def _crop(seed: int = 0, side: int = 16):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(1, 4, side, side, side, generator=g) * 2 - 1
    labels = torch.zeros(1, side, side, side, dtype=torch.long)
    labels[0, 6:10, 6:10, 6:10] = 2
    labels[0, 7:9, 7:9, 7:9] = 3
    return images, labels


def _render(net, images, labels, region, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = inpaint_maps(label_maps(labels, torch.ones_like(labels, dtype=torch.bool)), images, region)
    with torch.no_grad():
        out, none = net(torch.randn(1, net.config.z_dim, generator=g), torch.eye(2)[:1], maps=maps, generator=g)
    assert none is None
    return out


def test_the_crop_outside_the_region_comes_back_bit_identical_and_the_region_follows_the_map():
    torch.manual_seed(0)
    net = Generator3D(ModelConfig(**SMALL)).eval()
    for p in net.parameters():  # away from the zero-initialised SPADE output, so the map matters
        p.data.add_(torch.randn_like(p) * 0.1)
    images, labels = _crop()
    region = tumour_regions(labels, torch.tensor([2]))
    out = _render(net, images, labels, region)
    outside = region[:, None].expand_as(out) == 0
    assert torch.equal(out[outside], images[outside])  # bit-identical, not close
    assert not torch.allclose(out[~outside], images[~outside])  # the region is rendered anew
    changed = labels.clone()
    changed[0, 7:9, 7:9, 7:9] = 1  # ET -> NETC inside the same region
    again = _render(net, images, changed, region)
    assert torch.equal(again[outside], images[outside])
    differs = (again - out).abs().amax(1)[0]
    assert float(differs[7:9, 7:9, 7:9].mean()) > 0  # where the map changed, the rendering changed
    assert float(differs[region[0] == 0].max()) == 0.0


def test_a_soft_region_blends_and_a_wrong_input_is_refused():
    net = Generator3D(ModelConfig(**SMALL)).eval()
    images, labels = _crop()
    region = tumour_regions(labels, torch.tensor([1])) * 0.5
    out = _render(net, images, labels, region)
    assert torch.equal(out[:, :, 0, 0, 0], images[:, :, 0, 0, 0])
    with pytest.raises(ValueError, match=r"give maps of shape \(B, 9, 16, 16, 16\) \(inpaint_maps\(\)\)"):
        net(torch.randn(1, 16), torch.eye(2)[:1], maps=label_maps(labels, labels >= 0))
    with pytest.raises(ValueError, match="crop is the inpaint mode's"):
        ModelConfig(**{**SMALL, "mode": "labels", "crop": 16})


def test_crops_are_cut_around_the_tumour_with_the_outside_as_background():
    from augment3d.data.preprocess import PreparedCase

    image = np.full((4, 20, 20, 20), 0.5, dtype=np.float32)
    label = np.zeros((20, 20, 20), dtype=np.uint8)
    label[2:5, 2:5, 2:5] = 2  # near a corner: the crop leaves the volume
    case = PreparedCase("a", image, label, np.eye(4), {"site": "SSA"})
    crops = tumour_crops([case], 12, per_case=3, seed=1)
    assert len(crops) == 3 and all(c.images.shape == (4, 12, 12, 12) and c.label.shape == (12, 12, 12) for c in crops)
    for crop in crops:
        assert crop.label.sum() > 0 and crop.conditions == {"site": "SSA"}  # the tumour is inside
        assert (crop.images == -1.0).any() and set(np.unique(crop.images)) <= {-1.0, 0.5}
        assert np.array_equal(crop.label, crop_at(label, crop.centre, 12))
    assert [c.centre for c in crops] == [c.centre for c in tumour_crops([case], 12, per_case=3, seed=1)]  # seeded
    assert crop_at(image, (50, 50, 50), 4, fill=-1.0).min() == -1.0  # wholly outside: background


def test_an_inpainting_loop_trains_resumes_exactly_and_reconstructs(tiny, tmp_path):
    from helpers import generator_weights

    from augment3d.training.loop import TrainingLoop
    from augment3d.training.trainer import train_gan

    model = replace(tiny.model, mode="inpaint")
    train = replace(tiny.train, terms={"reconstruction": {"weight": 1.0}, "label_consistency": {"weight": 1.0, "warmup": 2}})
    loop = TrainingLoop(tiny.data(), model, train, "cpu")
    figures = loop.step(1)
    assert np.isfinite(figures["recon"]) and figures["recon"] > 0
    data = tiny.data()
    train_gan(tmp_path / "straight", data, model, train, tiny.encoder)
    train_gan(tmp_path / "split", data, model, replace(train, steps=3), tiny.encoder)
    train_gan(tmp_path / "split", data, model, train, tiny.encoder, resume=True)
    a, b = generator_weights(tmp_path / "straight"), generator_weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match=r"\[train.terms.reconstruction\] needs an inpainting run"):
        TrainingLoop(tiny.data(), tiny.model, replace(tiny.train, terms={"reconstruction": {"weight": 1.0}}), "cpu")


def test_augment3d_train_makes_an_inpainting_run_that_loads_and_renders_into_crops(cohort, phantom_cohort, tmp_path):
    from typer.testing import CliRunner

    from augment3d.cli import app
    from augment3d.errors import CheckpointError, DataError
    from augment3d.recipes import recipe_path
    from augment3d.synthesis.sampling import load_generator
    from augment3d.transforms.augmenter import SyntheticAugmenter

    recipe = tmp_path / "inpaint.toml"
    text = recipe_path("ci").read_text().replace('mode = "labels"', 'mode = "inpaint"\ncrop = 16')
    recipe.write_text(
        text.replace("shape = 16", "shape = 24").replace("[bench]", "[train.terms.reconstruction]\nweight = 1.0\n\n[bench]")
    )
    run = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(cohort), "--recipe", str(recipe), "--out", str(run), "--steps", "3"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "generator.json").read_text())["model"]["mode"] == "inpaint"
    assert (run / "samples_latest.png").is_file()
    gen = load_generator(run)
    assert gen.inpaints and gen.shape == (16, 16, 16)
    assert tuple(gen.preprocess.shape) == (24, 24, 24)  # the data grid the crops were cut from, not the crop
    images, labels = (t.numpy() for t in _crop(3))
    regions = tumour_regions(torch.from_numpy(labels), torch.tensor([2])).numpy()
    out = gen.inpaint(images, labels, regions, condition={"site": "SSA", "grade": "HGG"}, seeds=[5])
    assert out.shape == images.shape and out.dtype == np.float32
    outside = np.broadcast_to(regions[:, None] == 0, images.shape)
    assert np.array_equal(out[outside], images[outside])
    assert not np.allclose(out[~outside], images[~outside])
    again = gen.inpaint(images, labels, regions, condition={"site": "SSA", "grade": "HGG"}, seeds=[5])
    assert np.array_equal(out, again)  # a seed names the rendering
    with pytest.raises(DataError, match="is an inpainting generator"):
        gen.generate(seeds=[0])
    sampled = runner.invoke(app, ["sample", str(run), str(tmp_path / "out"), "--n", "1"])
    assert sampled.exit_code == 2 and "is an inpainting generator" in sampled.stderr
    with pytest.raises(DataError, match="is an inpainting generator"):
        SyntheticAugmenter(run)  # refused at once, not in a loader's worker
    # evaluate scores an inpainting run on held-out crops (here another cohort's): the challenge's metrics
    # against a trivial fill, the rendered lesions' label consistency, a montage
    evaluated = runner.invoke(app, ["evaluate", str(run), str(phantom_cohort), "--out", str(tmp_path / "eval"), "--n", "4"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "healthy tissue SSIM" in evaluated.stdout and "label consistency" in evaluated.stdout
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["kind"] == "inpainting" and 2 <= metrics["cases"] <= 4 and metrics["crop"] == 16
    for method in ("gan", "fill"):
        assert 0 < metrics["healthy"][method]["ssim"]["mean"] <= 1 and metrics["healthy"][method]["mse"]["mean"] >= 0
    gap = metrics["healthy_gan_minus_fill"]["psnr"]
    assert gap["ci95"][0] <= gap["difference"] <= gap["ci95"][1]
    consistency = metrics["lesion_label_consistency"]
    assert consistency["cases"] >= 1 and set(consistency["real"]) == set(consistency["inpainted"]) == {"WT", "TC", "ET"}
    assert "Healthy tissue" in (tmp_path / "eval" / "report.md").read_text()
    assert (tmp_path / "eval" / "inpainting.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(DataError, match="is an inpainting generator"):
        from augment3d.metrics.evaluate import evaluate_run

        evaluate_run(run, cohort, tmp_path / "eval2")  # the whole-subject metrics say where to go instead
    weights = run / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # damaged
    with pytest.raises(CheckpointError, match="generator"):
        load_generator(run)
