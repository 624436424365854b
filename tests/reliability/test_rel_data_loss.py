"""Nothing a user wrote is ever deleted: --force and --resume only touch folders augment3d wrote,
never an input or a parent of one, never a folder another process is writing, and only after
every check has passed."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by relative path, with its SHA-256: what must survive."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def trained(cohort, tmp_path):
    """A finished ci run (6 steps) on the 3-case cohort."""
    run = tmp_path / "run"
    result = _run("train", cohort, "--recipe", "ci", "--out", run)
    assert result.exit_code == 0, result.output
    return run


def test_train_force_into_its_own_cohort_deletes_nothing(cohort):
    before = _tree(cohort)
    result = _run("train", cohort, "--recipe", "ci", "--out", cohort, "--force")
    assert result.exit_code == 2 and "is an input of this command" in result.stderr
    assert _tree(cohort) == before


def test_train_force_into_a_parent_of_its_cohort_deletes_nothing(cohort, tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    shutil.move(cohort, project / "c")
    (project / "thesis.tex").write_text("\\chapter{Results}")
    before = _tree(project)
    result = _run("train", project / "c", "--recipe", "ci", "--out", project, "--force")
    assert result.exit_code == 2 and "which is an input of this command" in result.stderr
    assert _tree(project) == before


def test_bench_force_into_its_own_data_deletes_nothing(cohort):
    before = _tree(cohort)
    result = _run("bench", "--recipe", "ci", "--data", cohort, "--out", cohort, "--force")
    assert result.exit_code == 2 and "is an input of this command" in result.stderr
    assert _tree(cohort) == before


def test_sample_force_into_its_run_keeps_the_generator(trained):
    before = _tree(trained)
    result = _run("sample", trained, trained, "--n", 1, "--condition", "site=SSA", "--condition", "grade=HGG", "--force")
    assert result.exit_code == 2 and "is an input of this command" in result.stderr
    assert _tree(trained) == before


def test_force_never_deletes_a_folder_with_files_augment3d_did_not_write(trained, cohort):
    (trained / "notes.txt").write_text("what I changed in this run")
    before = _tree(trained)
    result = _run("train", cohort, "--recipe", "ci", "--out", trained, "--force")
    assert result.exit_code == 2 and "holds files augment3d did not write (notes.txt)" in result.stderr
    assert _tree(trained) == before


def test_resume_on_a_folder_that_is_not_a_run_deletes_nothing(cohort, tmp_path):
    folder = tmp_path / "mine"
    (folder / "results").mkdir(parents=True)
    (folder / "results" / "table.csv").write_text("a,b\n")
    (folder / "notes.txt").write_text("notes")
    shutil.copy(Path(__file__).parents[2] / "recipes" / "ci.toml", folder / "recipe.toml")
    before = _tree(folder)
    result = _run("train", cohort, "--recipe", "ci", "--out", folder, "--resume")
    assert result.exit_code == 2 and "is not an augment3d run folder" in result.stderr
    assert _tree(folder) == before


def test_resume_without_training_state_keeps_the_generator(trained, cohort):
    for name in ("train_state.json", "train_state.safetensors"):
        (trained / name).unlink()
    before = _tree(trained)
    result = _run("train", cohort, "--recipe", "ci", "--out", trained, "--resume")
    assert result.exit_code == 2 and "holds a trained generator (step 6) but no training state" in result.stderr
    assert _tree(trained) == before


def test_a_recipe_that_fails_later_leaves_the_old_run(trained, cohort, tmp_path, monkeypatch):
    bad = tmp_path / "bad.toml"
    bad.write_text((Path(__file__).parents[2] / "recipes" / "ci.toml").read_text().replace("g_lr = 2.5e-4", "g_lr = nan"))
    before = _tree(trained)
    result = _run("train", cohort, "--recipe", bad, "--out", trained, "--force")
    assert result.exit_code == 2 and "g_lr must be a finite number" in result.stderr
    assert _tree(trained) == before
    # a failure inside training, before the new run's first checkpoint: the old run comes back
    from augment3d.training.loop import TrainingLoop

    def broken(self, step):
        raise RuntimeError("boom")

    monkeypatch.setattr(TrainingLoop, "step", broken)
    result = _run("train", cohort, "--recipe", "ci", "--out", trained, "--force")
    assert isinstance(result.exception, RuntimeError)
    assert _tree(trained) == before
    assert not [p for p in trained.parent.iterdir() if p.name.startswith(".")]


HOLD = """
import sys, time
from augment3d.io.output_folders import folder_lock
with folder_lock(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_folder_another_process_writes_is_refused(trained, cohort):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(trained)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        before = _tree(trained)
        for extra in (["--force"], ["--resume"]):
            result = _run("train", cohort, "--recipe", "ci", "--out", trained, *extra)
            assert result.exit_code == 2, extra
            assert f"is in use by another augment3d process (PID {holder.pid})" in result.stderr
        assert _tree(trained) == before
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)  # the kernel dropped the lock with the process: the folder is usable again
    assert _run("train", cohort, "--recipe", "ci", "--out", trained, "--force").exit_code == 0


def test_resume_refuses_a_changed_recipe_unless_told_what_may_change(cohort, tmp_path):
    run = tmp_path / "run"
    assert _run("train", cohort, "--recipe", "ci", "--out", run, "--steps", 3).exit_code == 0
    changed = tmp_path / "changed.toml"
    changed.write_text((Path(__file__).parents[2] / "recipes" / "ci.toml").read_text().replace("g_lr = 2.5e-4", "g_lr = 0.5"))
    saved = (run / "recipe.toml").read_text()
    result = _run("train", cohort, "--recipe", changed, "--out", run, "--resume")
    assert result.exit_code == 2 and "train.g_lr: 0.00025 -> 0.5" in result.stderr
    assert (run / "recipe.toml").read_text() == saved
    allowed = _run("train", cohort, "--recipe", changed, "--out", run, "--resume", "--allow-change", "train.g_lr")
    assert allowed.exit_code == 0, allowed.output
    assert json.loads((run / "generator.json").read_text())["step"] == 6


def test_force_replaces_a_run_of_ours(trained, cohort):
    old = json.loads((trained / "generator.json").read_text())["weights_sha256"]
    result = _run("train", cohort, "--recipe", "ci", "--out", trained, "--force", "--steps", 3)
    assert result.exit_code == 0, result.output
    assert json.loads((trained / "generator.json").read_text())["step"] == 3
    assert json.loads((trained / "generator.json").read_text())["weights_sha256"] != old
    assert sorted(p.name for p in trained.parent.iterdir() if p.name.startswith(".")) == []  # the old run is gone
    assert os.path.isfile(trained / ".augment3d.json")
