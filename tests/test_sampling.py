"""The trained generator as users load it: seeds, style mixing, untrusted and older checkpoints."""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import Payload

from augment3d.data.preprocess import PreprocessConfig
from augment3d.errors import CheckpointError
from augment3d.models import Generator3D
from augment3d.synthesis.sampling import load_generator, save_generator
from augment3d.training.trainer import train_gan


@pytest.fixture
def run(tiny, tmp_path):
    folder = tmp_path / "run"
    train_gan(folder, tiny.data(), tiny.model, replace(tiny.train, steps=2, style_mixing=0.9), tiny.encoder)
    return folder


def test_a_seed_names_a_subject(run):
    gen = load_generator(run)
    a_img, a_lab = gen.generate(condition={"site": "SSA"}, seeds=[5, 6], psi=0.7)
    again_img, again_lab = gen.generate(condition={"site": "SSA"}, seeds=[5, 6], psi=0.7)
    np.testing.assert_array_equal(a_img, again_img)  # same call, same bytes
    np.testing.assert_array_equal(a_lab, again_lab)
    # in another batch the same seed gives the same subject up to float rounding of batched convs
    b_img, b_lab = gen.generate(condition={"site": "SSA"}, seeds=[6], psi=0.7)
    np.testing.assert_allclose(a_img[1], b_img[0], atol=1e-5)
    assert (a_lab[1] == b_lab[0]).mean() > 0.999
    assert not np.array_equal(a_img[0], a_img[1])
    assert a_img.min() >= -1 and a_img.max() <= 1 and set(np.unique(a_lab)) <= {0, 1, 2, 3}
    assert gen.conditions == {"site": ["HIC", "SSA"]} and gen.shape == (16, 16, 16)


def test_style_mixing_when_sampling(run):
    gen = load_generator(run)
    ssa = {"site": "SSA"}
    plain, _ = gen.generate(condition=ssa, seeds=[3, 4])
    unmixed, _ = gen.generate(condition=ssa, seeds=[3, 4], mix_seeds=[8, 9], mix_cutoff=gen.network.num_ws)
    np.testing.assert_array_equal(plain, unmixed)  # a cutoff past the last style input mixes nothing
    mixed, _ = gen.generate(condition=ssa, seeds=[3, 4], mix_seeds=[8, 9], mix_cutoff=2)
    again, _ = gen.generate(condition=ssa, seeds=[3, 4], mix_seeds=[8, 9], mix_cutoff=2)
    donor, _ = gen.generate(condition=ssa, seeds=[8, 9])
    np.testing.assert_array_equal(mixed, again)
    assert not np.allclose(mixed, plain, atol=1e-3) and not np.allclose(mixed, donor, atol=1e-3)
    with pytest.raises(ValueError, match="both mix_seeds and mix_cutoff"):
        gen.generate(condition=ssa, seeds=[3], mix_seeds=[8])
    with pytest.raises(ValueError, match="one per subject"):
        gen.generate(condition=ssa, seeds=[3, 4], mix_seeds=[8], mix_cutoff=2)
    with pytest.raises(ValueError, match="mix_cutoff must be between 0 and"):
        gen.generate(condition=ssa, seeds=[3], mix_seeds=[8], mix_cutoff=gen.network.num_ws + 1)


def test_forged_pickle_is_refused_without_running_it(run, tmp_path):
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"weights": Payload(str(marker))})
    (run / "generator.safetensors").write_bytes(blob)
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_generator(run)
    # even with the hash forged to match, the file is parsed as safetensors and refused
    meta = json.loads((run / "generator.json").read_text())
    meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    (run / "generator.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_generator(run)
    assert not marker.exists()


def test_untrusted_and_damaged_checkpoints(run, tmp_path):
    meta_path = run / "generator.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(CheckpointError, match="newer than this augment3d reads"):
        load_generator(run)
    meta_path.write_text(json.dumps({**meta, "format": "someone.else"}))
    with pytest.raises(CheckpointError, match="not an augment3d generator"):
        load_generator(run)
    meta_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not a JSON file"):
        load_generator(run)
    meta_path.write_text(json.dumps({**meta, "model": {**meta["model"], "channel_max": 32}}))
    with pytest.raises(CheckpointError, match="does not describe a usable generator"):
        load_generator(run)
    with pytest.raises(CheckpointError, match="not a run folder"):
        load_generator(tmp_path / "absent")


def _rewrite_meta(folder, change) -> None:
    path = folder / "generator.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_generators_saved_by_earlier_versions_still_load(tiny, tmp_path):
    """Before the condition bypass (no ``cond_bypass`` key), with ``noise_style = false`` written
    out, and with ``voxel_mm`` and ``recipe`` inside ``preprocess``: all load as they were."""
    old = Generator3D(replace(tiny.model, cond_bypass=False, mode="joint"))
    save_generator(tmp_path, old, tiny.encoder, PreprocessConfig(shape=16, margin_mm=3.0), step=1)

    def as_written_before(meta):
        del meta["model"]["cond_bypass"]
        del meta["model"]["mode"]
        meta["model"]["noise_style"] = False
        meta["preprocess"].update(voxel_mm=4.0, recipe="quick")

    _rewrite_meta(tmp_path, as_written_before)
    gen = load_generator(tmp_path)
    assert gen.network.mapping.bypass is None
    assert gen.preprocess == PreprocessConfig(shape=16, margin_mm=3.0) and gen.voxel_mm == 4.0
    images, _ = gen.generate(condition={"site": "SSA"}, seeds=[0])
    assert images.shape == (1, 4, 16, 16, 16)
    _rewrite_meta(tmp_path, lambda meta: meta["model"].update(noise_style=True))
    with pytest.raises(CheckpointError, match="noise_style.*no longer builds"):
        load_generator(tmp_path)


def test_the_run_records_its_preprocessing_and_voxel_size(tiny, tmp_path):
    train_gan(
        tmp_path,
        tiny.data(),
        tiny.model,
        replace(tiny.train, steps=1),
        tiny.encoder,
        PreprocessConfig(shape=16, clip_percentiles=(1.0, 99.0)),
        generator_info={"voxel_mm": 6.0},
    )
    gen = load_generator(tmp_path)
    assert gen.preprocess == PreprocessConfig(shape=16, clip_percentiles=(1.0, 99.0))
    assert gen.voxel_mm == 6.0 and np.allclose(np.diag(gen.affine), [6.0, 6.0, 6.0, 1.0])


def test_labels_mode_renders_given_maps_and_draws_its_own(tiny, tmp_path):
    data = tiny.data()
    data.labels[:] = 0
    data.labels[:, 4:8, 4:8, 4:8] = 3
    train_gan(tmp_path, data, tiny.model, replace(tiny.train, steps=1), tiny.encoder)
    gen = load_generator(tmp_path)
    assert gen.takes_labels and len(gen.bank.subjects) == 4
    labels = np.zeros((2, 16, 16, 16), np.uint8)
    labels[1, 2:6, 2:6, 2:6] = 1
    masks = np.ones((2, 16, 16, 16), bool)
    images, out = gen.generate(condition={"site": "SSA"}, seeds=[0, 1], label_maps=(labels, masks))
    assert np.array_equal(out, labels) and images.shape == (2, 4, 16, 16, 16)
    drawn, drawn_labels = gen.generate(condition={"site": "SSA"}, seeds=[0, 1])  # the run's own maps, deformed
    again, _ = gen.generate(condition={"site": "SSA"}, seeds=[0, 1])
    assert np.array_equal(drawn, again) and set(np.unique(drawn_labels)) <= {0, 3} and (drawn_labels == 3).any()
    assert {gen.bank.conditions[gen.bank.subjects.index(s)]["site"] for s in gen.map_sources([0, 1, 2], {"site": "SSA"})} == {
        "SSA"
    }
    with pytest.raises(ValueError, match="label_maps must be two arrays of shape"):
        gen.generate(condition={"site": "SSA"}, seeds=[0], label_maps=(labels, masks))
    with pytest.raises(ValueError, match="outside 0-3"):
        gen.generate(condition={"site": "SSA"}, seeds=[0, 1], label_maps=(labels + 4, masks))


def test_maps_matching_renders_every_sites_tumours_as_the_scarce_site(tiny, tmp_path):
    """``maps_matching`` names the condition columns a drawn training map shares with the subject's
    condition: ``[]`` lets an SSA subject render a deformed map of either site (the well-resourced
    site's tumour shapes in the scarce site's appearance; ``["grade"]`` on a site x grade run), still
    named by its seed; the torchio dataset passes the option through."""
    import torch

    from augment3d import SyntheticSubjectsDataset

    data = tiny.data()
    data.labels[:] = 0
    for i in range(4):
        data.labels[i, 2 + i : 6 + i, 4:8, 4:8] = 2  # every subject's tumour in its own place
    train_gan(tmp_path, data, tiny.model, replace(tiny.train, steps=1), tiny.encoder)
    gen = load_generator(tmp_path)
    ssa, seeds = {"site": "SSA"}, list(range(12))
    own = {gen.bank.conditions[gen.bank.subjects.index(s)]["site"] for s in gen.map_sources(seeds, ssa)}
    shared = {gen.bank.conditions[gen.bank.subjects.index(s)]["site"] for s in gen.map_sources(seeds, ssa, maps_matching=[])}
    assert own == {"SSA"} and shared == {"HIC", "SSA"}
    images, labels = gen.generate(condition=ssa, seeds=seeds[:6], maps_matching=[])
    again = gen.generate(condition=ssa, seeds=seeds[:6], maps_matching=[])
    assert np.array_equal(images, again[0]) and np.array_equal(labels, again[1])
    assert not np.array_equal(labels, gen.generate(condition=ssa, seeds=seeds[:6])[1])
    dataset = SyntheticSubjectsDataset(tmp_path, 6, condition=ssa, precision="fp32", maps_matching=[])
    assert np.array_equal(torch.stack([dataset[i]["seg"].data[0] for i in range(6)]).numpy(), labels)
    with pytest.raises(ValueError, match="maps_matching must list condition columns"):
        gen.generate(condition=ssa, seeds=[0], maps_matching=["grade"])


def test_a_joint_run_from_before_labels_to_images_still_loads_and_samples(tiny, tmp_path):
    torch.manual_seed(0)  # joint runs are no longer trained: one as training saved it, untrained weights
    joint = Generator3D(replace(tiny.model, mode="joint"))
    save_generator(tmp_path / "run", joint, tiny.encoder, PreprocessConfig(shape=16), step=1)
    _rewrite_meta(tmp_path / "run", lambda meta: meta["model"].pop("mode"))  # as written before the option
    gen = load_generator(tmp_path / "run")
    assert not gen.takes_labels and gen.bank is None
    images, labels = gen.generate(condition={"site": "HIC"}, seeds=[0, 1])
    assert images.shape == (2, 4, 16, 16, 16) and labels.shape == (2, 16, 16, 16)
    with pytest.raises(ValueError, match="draws its own labels"):  # no training maps to pick from
        gen.generate(condition={"site": "HIC"}, seeds=[0], maps_matching=[])
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(
        app, ["sample", str(tmp_path / "run"), str(tmp_path / "out"), "--n", "2", "--condition", "site=SSA"]
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").glob("*/*-seg.nii.gz"))) == 2
