"""`augment3d bench --workers N`: the GANs and jobs side by side in worker processes."""

import json
import tomllib

import torch
from typer.testing import CliRunner

from augment3d.config.recipe import load_recipe, recipe_toml
from cli import app

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _recipe(tmp_path, arms):
    raw = tomllib.loads(load_recipe("ci").path.read_text())
    raw["bench"].update(arms=arms, seeds=[0, 1])
    path = tmp_path / "ci-workers.toml"
    path.write_text(recipe_toml(raw))
    return path


def test_two_workers_run_every_cohorts_gan_then_its_synthetic_jobs_and_pool_them(tmp_path):
    """Two cohorts, two workers: each cohort's GAN is trained (on its own split) before any of its
    synthetic jobs starts, every job finishes in a worker with cores/2 threads, each cohort gets
    its report and the pooled report has no missing job. Run again, nothing is redone."""
    recipe = _recipe(tmp_path, ["real", "real+synthetic"])
    out = tmp_path / "pooled"
    result = _invoke("bench", "--recipe", recipe, "--out", out, "--cohorts", "0,1", "--workers", 2)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for c in (0, 1):
        ready = next(i for i, line in enumerate(lines) if f"cohort {c} GAN ready" in line)
        started = [i for i, line in enumerate(lines) if f"cohort {c} real+synthetic seed" in line and "started" in line]
        assert len(started) == 2 and min(started) > ready
        folder = out / f"cohort-{c}"
        splits = json.loads((folder / "splits.json").read_text())
        assert set(json.loads((folder / "gan" / "subjects.json").read_text())["train"]) == set(splits["train"])
        assert (folder / "gan_eval" / "metrics.json").is_file() and (folder / "report.md").is_file()
        for arm in ("real", "real+synthetic"):
            for seed in (0, 1):
                job = json.loads((folder / "arms" / arm / f"seed{seed}" / "result.json").read_text())
                assert job["threads"] == max(1, torch.get_num_threads() // 2)
                assert {c["subject_id"] for c in job["cases"]} == set(splits["test"])
    report = json.loads((out / "report.json").read_text())
    assert report["missing"] == [] and report["cohorts_with_results"] == ["0", "1"] and report["schema"] == 1
    again = _invoke("bench", "--recipe", recipe, "--out", out, "--cohorts", "0,1", "--workers", 2)
    assert again.exit_code == 0, again.output
    assert "started" not in again.output


def test_jobs_that_do_not_generate_never_wait_for_the_gan(tmp_path):
    """A job of a real-data arm (`--arm real`, as in a job array, or any worker's) leaves the GAN
    stage alone; a synthetic job trains it."""
    recipe = _recipe(tmp_path, ["real", "real+synthetic"])
    out = tmp_path / "bench"
    one = _invoke("bench", "--recipe", recipe, "--out", out, "--arm", "real", "--seed", 0)
    assert one.exit_code == 0, one.output
    assert (out / "arms" / "real" / "seed0" / "result.json").is_file()
    assert not (out / "gan").exists() and not (out / "gan_eval").exists()
    two = _invoke("bench", "--recipe", recipe, "--out", out, "--arm", "real+synthetic", "--seed", 0)
    assert two.exit_code == 0, two.output
    assert (out / "gan_eval" / "metrics.json").is_file()


def test_a_failed_task_stops_the_bench_with_its_name_and_keeps_what_finished(tmp_path):
    recipe = _recipe(tmp_path, ["real", "real+classic"])
    out = tmp_path / "bench"
    first = _invoke("bench", "--recipe", recipe, "--out", out, "--arm", "real", "--seed", 0)
    assert first.exit_code == 0, first.output
    kept = (out / "arms" / "real" / "seed0" / "result.json").read_bytes()
    (out / "arms" / "real+classic").write_text("not a folder")  # every real+classic job fails
    result = _invoke("bench", "--recipe", recipe, "--out", out, "--workers", 2)
    assert result.exit_code == 2
    assert "real+classic seed" in result.output and "failed" in result.output and "run again to continue" in result.output
    assert (out / "arms" / "real" / "seed0" / "result.json").read_bytes() == kept
    bad = _invoke("bench", "--recipe", recipe, "--out", out, "--workers", 0)
    assert bad.exit_code == 2 and "--workers" in bad.output


def _inpaint_recipe(tmp_path, source: str = "ci") -> None:
    """ci_inpaint.toml beside the bench recipe: the ci recipe training an inpainting generator."""
    raw = tomllib.loads(load_recipe(source).path.read_text())
    if source == "ci":
        raw["model"].update(mode="inpaint", crop=16)
        raw["train"].update(steps=2, crops_per_case=2)
        raw["train"]["terms"] = {"reconstruction": {"weight": 10.0}}
    raw.pop("bench", None)
    (tmp_path / "ci_inpaint.toml").write_text(recipe_toml(raw))


def test_the_inpaint_arm_waits_for_its_own_gan_and_meets_copy_paste_head_to_head(tmp_path):
    """real+inpaint: the bench trains the inpainting recipe's GAN on the training split (with the
    bench's [train] seed), its jobs start once it is ready, each adds as many inpainted subjects as
    the paste arm adds pasted ones, and the report puts it against real+paste paired per case."""
    recipe = _recipe(tmp_path, ["real", "real+paste", "real+inpaint"])
    raw = tomllib.loads(recipe.read_text())
    raw["bench"].update(seeds=[0], inpaint_recipe="ci_inpaint.toml")
    raw["train"]["seed"] = 7
    recipe.write_text(recipe_toml(raw))
    _inpaint_recipe(tmp_path)
    out = tmp_path / "bench"
    result = _invoke("bench", "--recipe", recipe, "--out", out, "--workers", 2)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    ready = next(i for i, line in enumerate(lines) if "inpainting GAN ready" in line)
    started = next(i for i, line in enumerate(lines) if "real+inpaint seed 0: started" in line)
    assert started > ready
    assert not (out / "gan").exists()  # no synthetic arm: the labels GAN is never trained
    splits = json.loads((out / "splits.json").read_text())
    assert set(json.loads((out / "inpaint_gan" / "subjects.json").read_text())["train"]) == set(splits["train"])
    assert tomllib.loads((out / "inpaint_recipe.toml").read_text())["train"]["seed"] == 7
    assert (out / "inpainted_samples.png").read_bytes()[:4] == b"\x89PNG"
    job = json.loads((out / "arms" / "real+inpaint" / "seed0" / "result.json").read_text())
    paste = json.loads((out / "arms" / "real+paste" / "seed0" / "result.json").read_text())["paste"]
    counts = job["inpaint"]
    assert counts["inpainted"] >= 1 and counts["inpainted"] + counts["no_room"] == paste["pasted"] + paste["no_room"]
    assert counts["donors"] == paste["donors"] and counts["recipients"] == paste["recipients"]
    report = json.loads((out / "report.json").read_text())
    assert "real+inpaint vs real+paste" in report["head_to_head"]["all"] and report["missing"] == []
    assert "real+inpaint vs real on the" in (out / "report.md").read_text()


def test_an_inpaint_arm_without_an_inpainting_recipe_is_refused_before_anything_is_written(tmp_path):
    recipe = _recipe(tmp_path, ["real", "real+inpaint"])
    raw = tomllib.loads(recipe.read_text())
    raw["bench"]["inpaint_recipe"] = "ci_inpaint.toml"
    recipe.write_text(recipe_toml(raw))
    _inpaint_recipe(tmp_path, source="quick")  # a labels-to-images recipe
    out = tmp_path / "bench"
    result = _invoke("bench", "--recipe", recipe, "--out", out)
    assert result.exit_code == 2 and "does not train an inpainting generator" in result.output
    assert not out.exists()
