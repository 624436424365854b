"""Untrusted or mismatched checkpoints, divergence, and output folders that are never clobbered."""

import json
import os
import pickle
from dataclasses import replace

import pytest
import torch
from test_rel_kill_resume import _killed
from helpers import TINY_ENCODER as ENC, TINY_MODEL as MODEL, TINY_TRAIN as TRAIN, Payload, generator_weights, tiny_data
from typer.testing import CliRunner

from augment3d.errors import CheckpointError
from augment3d.synthesis.sampling import load_generator
from augment3d.training.trainer import TrainingDiverged, train_gan
from cli import app

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def run(tmp_path):
    folder = tmp_path / "run"
    train_gan(folder, tiny_data(), MODEL, replace(TRAIN, steps=3), ENC)
    return folder


def test_truncated_safetensors_is_refused(run):
    path = run / "generator.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_generator(run)


def test_pickle_as_training_state_is_refused_on_resume(run, tmp_path):
    marker = tmp_path / "pwned"
    (run / "train_state.safetensors").write_bytes(pickle.dumps({"x": Payload(str(marker))}))
    with pytest.raises(CheckpointError, match="train_state.safetensors: does not match"):
        train_gan(run, tiny_data(), MODEL, TRAIN, ENC, resume=True)
    assert not marker.exists()


def test_checkpoint_with_other_modalities_is_refused(run):
    meta_path = run / "generator.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "modalities": ["t1", "flair", "t2", "t1ce"]}))
    with pytest.raises(CheckpointError, match="modalities .* are not the t1n, t1c, t2w, t2f"):
        load_generator(run)


def test_checkpoint_conditioned_on_columns_the_data_lacks(run, cohort, tmp_path):
    # the run is conditioned on `site` only; a cohort whose metadata has no `site` cannot be matched
    (cohort / "metadata.csv").write_text("subject_id,scanner\n" + "".join(f"BraTS-TST-{i:05d}-000,A\n" for i in range(3)))
    result = _run("evaluate", run, cohort, "--out", tmp_path / "eval", "--n", 4)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {run / 'generator.json'}: conditioned on site, but {cohort} has no column site to match"
    )
    bench = _run("bench", "--recipe", "ci", "--out", tmp_path / "bench", "--data", cohort, "--generator", run)
    assert bench.exit_code == 2 and "conditioned on site" in bench.stderr
    assert not (tmp_path / "bench").exists()


def test_nan_in_a_weight_stops_without_saving(tmp_path, monkeypatch):
    from augment3d.training.loop import TrainingLoop

    original = TrainingLoop.step

    def poisoned(self, step):
        if step == 4:
            with torch.no_grad():
                next(self.G.parameters()).view(-1)[0] = float("nan")
        return original(self, step)

    monkeypatch.setattr(TrainingLoop, "step", poisoned)
    folder = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="non-finite"):
        train_gan(folder, tiny_data(), MODEL, TRAIN, ENC)
    assert json.loads((folder / "generator.json").read_text())["step"] == 3
    assert json.loads((folder / "train_state.json").read_text())["step"] == 3
    assert all(torch.isfinite(v).all() for v in generator_weights(folder).values())


def test_commands_never_overwrite_without_force(tiny_run, cohort, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    attempts = {
        "phantom": ["phantom", out, "--cases", 2],
        "train": ["train", cohort, "--recipe", "ci", "--out", out],
        "sample": ["sample", tiny_run, out, "--n", 1, "--condition", "site=SSA", "--condition", "grade=HGG"],
        "evaluate": ["evaluate", tiny_run, cohort, "--out", out, "--n", 4],
        "bench": ["bench", "--recipe", "ci", "--out", out],
    }
    for name, args in attempts.items():
        result = _run(*args)
        assert result.exit_code == 2, (name, result.output)
        assert result.stderr.startswith(f"error: {out}"), (name, result.stderr)
        assert sorted(p.name for p in out.iterdir()) == ["mine.txt"] and (out / "mine.txt").read_text() == "keep", name


def test_interrupted_sample_leaves_no_half_written_nifti(tiny_run, tmp_path):
    out = tmp_path / "synthetic"
    env = {**os.environ, "AUGMENT3D_CACHE": str(tmp_path / "cache")}
    condition = ["--condition", "site=SSA", "--condition", "grade=HGG"]
    assert _killed("replace", 3, "sample", tiny_run, out, "--n", 3, *condition, env=env) == -9
    assert not out.exists()  # the partial cohort lives in a hidden staging folder only
    again = _run("sample", tiny_run, out, "--n", 3, *condition)
    assert again.exit_code == 0, again.output
    assert len(list(out.glob("*/*.nii.gz"))) == 15
