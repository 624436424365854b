"""The generator bundled in the package: what its record says, usable by name, refused off its cohort."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import torchio as tio
from test_augmenter import KEYS, make_subject
from typer.testing import CliRunner

from augment3d import SyntheticAugmenter, load_generator
from augment3d.config.recipe import load_recipe
from augment3d.pretrained import available, bundled_path, provenance, run_folder
from cli import app
from segbench.config import bench_config

SPLIT_FIELDS = ("split_seed", "val_fraction", "test_fraction", "test_per_site", "train_per_site")


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_the_bundled_generator_is_the_one_its_record_names_and_the_demo_uses_it_on_its_own_cohort():
    assert "phantom" in available()
    folder = bundled_path("phantom")
    record = provenance(folder)
    assert hashlib.sha256((folder / "generator.safetensors").read_bytes()).hexdigest() == record["generator_sha256"]
    trained = load_recipe(folder / "recipe.toml")
    assert {k: getattr(trained.phantom, k) for k in record["phantom"]} == record["phantom"]
    subjects = json.loads((folder / "subjects.json").read_text())
    assert len(subjects["train"]) == record["train_subjects"] and subjects["data"] == "phantom"
    # the demo: same phantom cohort and the same split, so no test case of the demo was trained on
    quick = load_recipe("quick")
    assert bench_config(quick).generator == "phantom"
    assert {k: getattr(quick.phantom, k) for k in record["phantom"]} == record["phantom"]
    ours, theirs = bench_config(quick), bench_config(trained)
    assert {k: getattr(ours, k) for k in SPLIT_FIELDS} == {k: getattr(theirs, k) for k in SPLIT_FIELDS}
    assert quick.data == trained.data


def test_sample_and_the_augmenter_take_the_bundled_generator_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no folder called "phantom" here: the name means the bundled one
    assert run_folder("phantom") == bundled_path("phantom")
    assert load_generator("phantom").path == bundled_path("phantom")
    out = tmp_path / "synthetic"
    result = _invoke("sample", "phantom", out, "--n", "2", "--condition", "site=SSA", "--seed", "5")
    assert result.exit_code == 0, result.output
    segs = sorted(out.rglob("*-seg.nii.gz"))
    assert len(segs) == 2
    assert set(np.unique(np.asarray(nib.load(segs[0]).dataobj)).tolist()) <= {0, 1, 2, 3}

    subject = make_subject(tmp_path / "real")
    transform = tio.Compose([tio.RandomFlip(axes=(0,)), SyntheticAugmenter("phantom", p=1.0, seed=3)])
    augmented = transform(subject)
    assert augmented["site"] == "SSA"
    assert set(augmented.get_images_names()) == set(KEYS)
    replayed = augmented.get_composed_history()(subject)
    assert all(np.array_equal(augmented[k].numpy(), replayed[k].numpy()) for k in KEYS)


def test_a_folder_of_that_name_wins_over_the_bundled_generator(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "phantom").mkdir()
    assert run_folder("phantom").resolve() == (tmp_path / "phantom").resolve()
    assert str(run_folder("no-such-generator")) == "no-such-generator"  # neither: the path as given, for the caller's error


def test_a_bench_on_another_phantom_cohort_refuses_the_bundled_generator(tmp_path):
    recipe = tmp_path / "other.toml"
    text = load_recipe("quick").path.read_text(encoding="utf-8")
    recipe.write_text(text.replace("[phantom]", "[phantom]\nseed = 7", 1), encoding="utf-8")
    out = tmp_path / "bench"
    result = _invoke("bench", "--recipe", recipe, "--out", out, "--setup-only")
    assert result.exit_code == 2, result.output
    assert "another phantom cohort" in result.output and "seed 7 (generator: 0)" in result.output
    assert not out.exists()
    healthy = tmp_path / "healthy.toml"
    healthy.write_text(text.replace("[phantom]", "[phantom]\nhealthy_fraction = 0.25", 1), encoding="utf-8")
    result = _invoke("bench", "--recipe", healthy, "--out", out, "--setup-only")  # a setting it does not record
    assert result.exit_code == 2 and "healthy_fraction 0.25 (generator: 0.0)" in result.output, result.output
    assert not out.exists()


def test_the_recipes_generator_serves_its_own_phantom_cohort_and_your_data_trains_one(tmp_path, monkeypatch):
    import segbench.bench as bench

    seen = []

    def setup(recipe, out, *, data=None, generator=None, **kwargs):
        seen.append((data, generator))
        raise SystemExit  # stop before any work: only what run_bench hands over is checked

    monkeypatch.setattr(bench, "setup_bench", setup)
    quick = load_recipe("quick")
    for data in (None, tmp_path / "cohort"):
        try:
            bench.run_bench(quick, tmp_path / "out", data=data)
        except SystemExit:
            pass
    assert seen == [(None, "phantom"), (tmp_path / "cohort", None)]
