"""SIGKILL at chosen points, then --resume: an intact checkpoint is always found and the final
weights equal an uninterrupted run's. An interrupted bench keeps its finished jobs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

# Kill the process just before its N-th os.replace (every atomic write and checkpoint commit in
# augment3d goes through one), or at the K-th bench job. Runs the real CLI in a fresh interpreter.
KILLER = r"""
import os, signal, sys
mode, limit = sys.argv[1], int(sys.argv[2])
calls = [0]
if mode == "replace":
    real = os.replace
    def replace(src, dst):
        calls[0] += 1
        if calls[0] == limit:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)
    os.replace = replace
else:
    import segbench.bench as bench
    real_job = bench.run_job
    def job(*args, **kwargs):
        calls[0] += 1
        if calls[0] == limit:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_job(*args, **kwargs)
    bench.run_job = job
from cli import app
app(sys.argv[3:])
"""


def _killed(mode: str, limit: int, *args, env=None) -> int:
    cmd = [sys.executable, "-c", KILLER, mode, str(limit), *map(str, args)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    return done.returncode


def _weights(run: Path) -> dict:
    from augment3d.synthesis.sampling import load_generator

    return {k: v.clone() for k, v in load_generator(run).network.state_dict().items()}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted ci run on the 3-case cohort, the cohort, and a warm prepared-case cache
    (so the counted renames are the run's own)."""
    from helpers import write_cohort

    root = tmp_path_factory.mktemp("kill")
    cache = root / "cache"
    cohort = write_cohort(root / "cohort")
    run = root / "straight"
    result = runner.invoke(app, ["train", str(cohort), "--recipe", "ci", "--out", str(run)], env={"AUGMENT3D_CACHE": str(cache)})
    assert result.exit_code == 0, result.output
    return cohort, _weights(run), cache


# 23 renames in a ci run: the folder's marker, recipe.toml, subjects.json, the label maps (.next,
# JSON, rename), then per checkpoint (steps 3 and 6) the training state (same three), the
# generator (same), the montage and the curves.
# Seeded draws over that range, plus points chosen inside a checkpoint commit.
TRIALS = sorted({3, 4, 5, 7, 8, 15, *np.random.default_rng(8).integers(2, 23, size=2).tolist()})


@pytest.mark.parametrize("limit", TRIALS)
def test_sigkill_then_resume_equals_a_straight_run(straight, tmp_path, limit):
    cohort, expected, cache = straight
    run = tmp_path / "run"
    env = {**os.environ, "AUGMENT3D_CACHE": str(cache)}
    assert _killed("replace", limit, "train", cohort, "--recipe", "ci", "--out", run, env=env) == -9
    resumed = runner.invoke(
        app, ["train", str(cohort), "--recipe", "ci", "--out", str(run), "--resume"], env={"AUGMENT3D_CACHE": str(cache)}
    )
    assert resumed.exit_code == 0, resumed.output
    got = _weights(run)
    for key, value in expected.items():
        assert torch.equal(got[key], value), (limit, key)
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # no step logged twice
    assert not list(run.glob("*.next")) and not list(run.glob(".*tmp*"))


def test_interrupted_bench_keeps_finished_jobs(phantom_cohort, tiny_run, tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "--recipe", "ci", "--out", out, "--data", phantom_cohort, "--generator", tiny_run]
    env = {**os.environ, "AUGMENT3D_CACHE": str(tmp_path / "cache")}
    assert _killed("job", 3, *args, env=env) == -9  # killed while training the third job
    finished = sorted(out.glob("arms/*/seed*/result.json"))
    assert len(finished) == 2
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    again = runner.invoke(app, [str(a) for a in args])
    assert again.exit_code == 0, again.output
    assert again.output.count("finished earlier, kept") == 2
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    from segbench.config import DEFAULT_ARMS

    assert len(list(out.glob("arms/*/seed*/result.json"))) == len(DEFAULT_ARMS)  # the ci recipe: every default arm, one seed
    assert json.loads((out / "report.json").read_text())["missing"] == []
