"""Full disks, read-only and unreadable paths, SIGTERM and Ctrl-C: one line naming the path, and
nothing half-written or lost. Tests run as root, where permission bits stop nothing, so the
failing system calls are injected where the code makes them."""

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import path_of
from typer.testing import CliRunner

from cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def _one_line(result) -> str:
    """The one error line (progress lines, printed where stderr is not a terminal, aside)."""
    lines = [line for line in result.stderr.strip().splitlines() if not re.match(r"\[[\w -]+\] \d", line)]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def _weights(run: Path) -> dict:
    from augment3d.synthesis.sampling import load_generator

    return load_generator(run).network.state_dict()


def test_a_full_disk_during_training_stops_cleanly_and_resume_continues(cohort, tmp_path, monkeypatch):
    from augment3d import checkpoint

    straight = tmp_path / "straight"
    assert _run("train", cohort, "--recipe", "ci", "--out", straight).exit_code == 0
    run = tmp_path / "run"
    real, calls = checkpoint.atomic_write_bytes, [0]

    def full(path, data):
        calls[0] += Path(path).name.startswith("train_state.safetensors")
        if calls[0] == 2:  # the second checkpoint's (step 6) training state
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", full)
    line = _one_line(_run("train", cohort, "--recipe", "ci", "--out", run))
    assert "No space left on device; free some space and run again (train: with --resume)" in line
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", real)
    assert json.loads((run / "generator.json").read_text())["step"] == 3  # the step-3 checkpoint is intact
    resumed = _run("train", cohort, "--recipe", "ci", "--out", run, "--resume")
    assert resumed.exit_code == 0, resumed.output
    expected, got = _weights(straight), _weights(run)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_a_full_disk_during_sample_leaves_nothing(tiny_run, tmp_path, monkeypatch):
    from augment3d.synthesis import export

    real, calls = export.write_nifti, [0]

    def full(path, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(export, "write_nifti", full)
    out = tmp_path / "synthetic"
    line = _one_line(_run("sample", tiny_run, out, "--n", 2, "--condition", "site=SSA", "--condition", "grade=HGG"))
    assert "No space left on device" in line
    assert sorted(p.name for p in tmp_path.iterdir() if "synthetic" in p.name) == []


def _deny(monkeypatch, owner, name: str, denied, code: int = errno.EACCES) -> None:
    """``owner.name(path, ...)`` fails with ``code`` (EACCES: a PermissionError) for the paths
    ``denied(path)`` picks, as the system would for root on a read-only mount or an ACL."""
    real = getattr(owner, name)

    def failing(path=".", *args, **kwargs):
        if denied(Path(path)):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


def test_a_read_only_output_folder_is_one_line(cohort, tmp_path, monkeypatch):
    read_only = tmp_path / "ro"
    _deny(monkeypatch, Path, "mkdir", lambda p: read_only in (p, *p.parents), errno.EROFS)
    line = _one_line(_run("train", cohort, "--recipe", "ci", "--out", read_only / "run"))
    assert line == f"error: {read_only / 'run'}: Read-only file system; write to another folder"


def test_a_read_only_cache_is_worked_around_with_a_warning(cohort, tmp_path, monkeypatch):
    from augment3d.data import cache

    def refuse(path, data):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(cache, "atomic_write_bytes", refuse)
    result = _run("prepare", cohort, "--recipe", "ci", "--cache", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert "cannot write the prepared-case cache (Permission denied); continuing without it" in result.stderr
    assert "prepared 3 cases" in result.stdout


def test_an_unreadable_file_is_named_and_skippable(cohort, tmp_path, monkeypatch):
    locked = path_of(cohort, "BraTS-TST-00001-000", "t2f")
    _deny(monkeypatch, Path, "read_bytes", lambda p: p == locked)
    result = _run("validate", cohort)
    assert result.exit_code == 1 and f"{locked}: cannot read the file (Permission denied)" in result.stderr
    skipped = _run("prepare", cohort, "--recipe", "ci", "--skip-bad")
    assert skipped.exit_code == 0, skipped.output
    assert "skipped BraTS-TST-00001-000" in skipped.stderr and "prepared 2 cases" in skipped.stdout


def test_an_unreadable_case_folder_is_named_and_skippable(cohort, monkeypatch):
    locked = cohort / "BraTS-TST-00002-000"
    _deny(monkeypatch, os, "listdir", lambda p: p == locked)
    result = _run("validate", cohort)
    assert result.exit_code == 1 and f"{locked}: cannot list the case folder (Permission denied)" in result.stderr
    skipped = _run("prepare", cohort, "--recipe", "ci", "--skip-bad")
    assert skipped.exit_code == 0 and "skipped BraTS-TST-00002-000" in skipped.stderr


# Run the real command line (``cli.main``, which installs the SIGTERM handler) in a fresh
# interpreter and send ``signal`` to itself at the N-th call of ``module.function``.
SIGNALLER = r"""
import importlib, os, signal, sys
module, name, limit, sig = sys.argv[1], sys.argv[2], int(sys.argv[3]), getattr(signal, sys.argv[4])
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background shell starts us with Ctrl-C ignored
target = importlib.import_module(module)
real, calls = getattr(target, name), [0]
def hooked(*args, **kwargs):
    calls[0] += 1
    if calls[0] == limit:
        os.kill(os.getpid(), sig)
    return real(*args, **kwargs)
setattr(target, name, hooked)
sys.argv = ["augment3d", *sys.argv[5:]]
from cli import main
main()
"""


def _signalled(module: str, name: str, limit: int, sig: str, *args, env=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", SIGNALLER, module, name, str(limit), sig, *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_sigterm_during_sample_leaves_no_staging_folder(tiny_run, tmp_path):
    out = tmp_path / "synthetic"
    condition = ["--condition", "site=SSA", "--condition", "grade=HGG"]
    done = _signalled("augment3d.synthesis.export", "write_nifti", 3, "SIGTERM", "sample", tiny_run, out, "--n", 2, *condition)
    assert done.returncode == 143 and "terminated" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == []  # neither the output nor a hidden .partial folder


def test_a_killed_sample_s_staging_folder_is_removed_by_the_next_run(tiny_run, tmp_path):
    out = tmp_path / "synthetic"
    condition = ["--condition", "site=SSA", "--condition", "grade=HGG"]
    done = _signalled("augment3d.synthesis.export", "write_nifti", 3, "SIGKILL", "sample", tiny_run, out, "--n", 2, *condition)
    assert done.returncode == -9
    assert [p.name.split("-")[0] for p in tmp_path.iterdir()] == [".synthetic.partial"]  # SIGKILL cannot clean up
    again = _run("sample", tiny_run, out, "--n", 2, *condition)
    assert again.exit_code == 0, again.output
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]


def test_ctrl_c_during_evaluate_leaves_nothing_and_old_leftovers_are_cleared(tiny_run, phantom_cohort, tmp_path):
    out = tmp_path / "eval"
    env = {**os.environ, "AUGMENT3D_CACHE": str(tmp_path / "cache")}
    done = _signalled(
        "augment3d.metrics.evaluate",
        "write_report",
        1,
        "SIGINT",
        "evaluate",
        tiny_run,
        phantom_cohort,
        "--out",
        out,
        "--n",
        4,
        env=env,
    )
    assert done.returncode == 130 and "interrupted" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    # what an interrupted run of an older version, or a SIGKILL, leaves: staging and set-aside
    # folders of a process that is gone; the next run clears them
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    for name in (f".eval.partial-{dead}-abc", ".eval.old-xyz", f".eval.replaced-{dead}-q"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text("{}")
    again = _run("evaluate", tiny_run, phantom_cohort, "--out", out, "--n", 4, env=env)
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "eval"]


def test_subject_images_of_different_shapes_are_a_data_error(tiny_run, tmp_path):
    import torchio as tio

    from augment3d import SyntheticAugmenter
    from augment3d.errors import DataError

    rng = np.random.default_rng(0)
    images = {
        k: tio.ScalarImage(tensor=torch.from_numpy(rng.normal(size=(1, 20, 18, 16)).astype(np.float32)))
        for k in ("t1n", "t1c", "t2w")
    }
    images["t2f"] = tio.ScalarImage(tensor=torch.from_numpy(rng.normal(size=(1, 20, 18, 12)).astype(np.float32)))
    subject = tio.Subject(
        **images, seg=tio.LabelMap(tensor=torch.zeros(1, 20, 18, 16, dtype=torch.uint8)), site="SSA", grade="HGG"
    )
    with pytest.raises(DataError, match=r"subject image 't2f': the subject's images differ in shape \(.*t2f 20x18x12"):
        SyntheticAugmenter(tiny_run, p=1.0, seed=0)(subject)
