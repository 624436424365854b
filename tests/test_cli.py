"""The command line as users meet it: exit codes and one readable line for bad input."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import corrupt_gzip_block, path_of, truncate
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_commands():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("phantom", "validate", "prepare", "info"):
        assert command in result.output


def test_validate_good_cohort(cohort):
    result = run("validate", cohort)
    assert result.exit_code == 0, result.output
    assert "all 3 cases are valid" in result.output


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (truncate, "truncated gzip stream"),
        (corrupt_gzip_block, "corrupted gzip data"),
        (lambda p: p.unlink(), "missing t1c image"),
    ],
)
def test_validate_bad_case_exits_1_and_names_file(cohort, damage, fragment):
    path = path_of(cohort, "BraTS-TST-00001-000", "t1c")
    damage(path)
    result = run("validate", cohort)
    assert result.exit_code == 1
    assert f"bad case BraTS-TST-00001-000: {path}: {fragment}" in result.stderr
    assert "1 of 3 cases are bad" in result.stderr
    assert "Traceback" not in result.output


def test_validate_with_recipe_checks_categories(cohort):
    text = (cohort / "metadata.csv").read_text().replace("SSA", "EUR")
    (cohort / "metadata.csv").write_text(text)
    result = run("validate", cohort, "--recipe", "quick")
    assert result.exit_code == 1
    assert "unknown site 'EUR' (known: HIC, SSA)" in result.stderr


def test_prepare_stops_on_bad_case_with_one_line(cohort, tmp_path):
    path = path_of(cohort, "BraTS-TST-00002-000", "t2w")
    truncate(path)
    result = run("prepare", cohort, "--recipe", "ci", "--cache", tmp_path / "c")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {path}: truncated gzip stream: the file ends before its compressed data does"]


def test_prepare_skip_bad_lists_skipped(cohort, tmp_path):
    truncate(path_of(cohort, "BraTS-TST-00002-000", "t2w"))
    result = run("prepare", cohort, "--recipe", "ci", "--cache", tmp_path / "c", "--skip-bad", "--preview", tmp_path / "p.png")
    assert result.exit_code == 0, result.output
    assert "skipped BraTS-TST-00002-000:" in result.stderr
    assert "prepared 2 cases at 16x16x16 (0 from cache), skipped 1" in result.stdout
    assert (tmp_path / "p.png").is_file()


def test_missing_folder_and_unknown_recipe_are_one_line_errors(tmp_path):
    result = run("validate", tmp_path / "absent")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'absent'}: folder does not exist"
    result = run("prepare", tmp_path, "--recipe", "nonesuch")
    assert result.exit_code == 2
    assert "error: no recipe named 'nonesuch'" in result.stderr


def test_phantom_refuses_a_folder_with_something_in_it(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    result = run("phantom", tmp_path / "c", "--cases", "1", "--spacing", "6")
    assert result.exit_code == 2
    assert "already exists" in result.stderr
    forced = run("phantom", tmp_path / "c", "--cases", "1", "--spacing", "6", "--force")
    assert forced.exit_code == 2 and "is not an augment3d cohort folder" in forced.stderr
    assert (tmp_path / "c" / "notes.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()  # an empty folder holds nothing to lose: it is written into
    assert run("phantom", tmp_path / "empty", "--cases", "1", "--spacing", "6").exit_code == 0


def test_phantom_validate_info_end_to_end(tmp_path):
    out = tmp_path / "cohort"
    result = run("phantom", out, "--cases", "3", "--seed", "1", "--spacing", "6", "--ssa-fraction", "0.34", "--preview")
    assert result.exit_code == 0, result.output
    assert (out / "preview.png").is_file()
    assert run("validate", out, "--recipe", "quick").exit_code == 0
    result = run("info", out)
    assert result.exit_code == 0
    assert "3 cases" in result.stdout and "site: HIC 2, SSA 1" in result.stdout


def test_console_script_runs_without_traceback(tmp_path):
    """The installed entry point, in a fresh interpreter, fails cleanly on bad input."""
    result = subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", "validate", str(tmp_path / "absent")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'absent'}: folder does not exist"


def _nan(path):
    import numpy as np
    from helpers import brain_and_label, rewrite

    images, _ = brain_and_label()
    images["t1n"][1, 2, 3] = np.nan
    rewrite(path, images["t1n"])


@pytest.mark.parametrize(
    "key, damage, fragment",
    [
        ("t1n", truncate, "truncated gzip stream"),
        ("t1n", corrupt_gzip_block, "corrupted gzip data"),
        ("t1n", lambda p: p.write_bytes(b"\x1f\x8b" + b"\x00" * 50), "corrupted gzip data"),
        ("t1n", _nan, "1 voxels are NaN or Inf"),
        ("seg", lambda p: p.unlink(), "missing label map"),
    ],
    ids=["truncated", "corrupt-block", "bad-gzip-header", "nan", "missing-label"],
)
def test_prepare_bad_input_matrix(cohort, tmp_path, key, damage, fragment):
    path = path_of(cohort, "BraTS-TST-00000-000", key)
    damage(path)
    out_cache = tmp_path / "c"
    result = run("prepare", cohort, "--recipe", "ci", "--cache", out_cache)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and fragment in lines[0], lines
    assert not out_cache.exists() or not any(out_cache.iterdir())  # nothing half-written


def test_cli_train_refuses_a_joint_recipe_before_touching_anything(cohort, tmp_path):
    from augment3d.recipes import recipe_path

    recipe = tmp_path / "joint.toml"
    recipe.write_text(recipe_path("ci").read_text().replace('mode = "labels"', 'mode = "joint"'))
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(cohort), "--recipe", str(recipe), "--out", str(run)])
    assert result.exit_code == 2
    assert f"{recipe}: [model] mode = 'joint': joint generators" in result.stderr and "no longer trained" in result.stderr
    assert not run.exists()


def test_cli_train_resume_sample(cohort, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(cohort), "--recipe", "ci", "--out", str(run), "--steps", "3"])
    assert result.exit_code == 0, result.output
    for name in ("generator.safetensors", "generator.json", "log.jsonl", "curves.png", "samples_latest.png"):
        assert (run / name).is_file(), name
    again = runner.invoke(app, ["train", str(cohort), "--recipe", "ci", "--out", str(run)])
    assert again.exit_code == 2 and "already exists; use --resume" in again.stderr
    with (run / "log.jsonl").open("a") as log:
        log.write('{"step": 4, "d_lo')  # a run killed while writing its log
    resumed = runner.invoke(app, ["train", str(cohort), "--recipe", "ci", "--out", str(run), "--resume"])
    assert resumed.exit_code == 0 and "step 6" in resumed.stdout
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged][-1] == 6 and len({r["step"] for r in logged}) == len(logged)
    info = runner.invoke(app, ["info", str(run)])
    assert info.exit_code == 0 and "generator at step 6" in info.stdout and "site {HIC, SSA}" in info.stdout
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text("\n".join(["not json", *lines[1:]]) + "\n")
    damaged = runner.invoke(app, ["info", str(run)])
    assert damaged.exit_code == 2 and "log.jsonl" in damaged.stderr and "line 1 is not JSON" in damaged.stderr
    out = tmp_path / "Dataset501_Synth"
    result = runner.invoke(
        app,
        [
            "sample",
            str(run),
            str(out),
            "--n",
            "2",
            "--condition",
            "site=SSA",
            "--condition",
            "grade=LGG",
            "--seed",
            "3",
            "--format",
            "nnunet",
        ],
    )
    assert result.exit_code == 0, result.output
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["numTraining"] == 2 and dataset["labels"]["ET"] == 3
    # seed 3, the fourth condition combination (HIC HGG, HIC LGG, SSA HGG, SSA LGG)
    assert sorted(p.name for p in (out / "imagesTr").iterdir())[:4] == [f"BraTS-SYN-00003-004_{k:04d}.nii.gz" for k in range(4)]
    assert len(os.listdir(out / "labelsTr")) == 2
    bad = runner.invoke(app, ["sample", str(run), str(tmp_path / "x"), "--condition", "site=EU", "--condition", "grade=LGG"])
    assert bad.exit_code == 2 and f"{run}: unknown site 'EU' (known: HIC, SSA)" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_sample_renders_the_label_maps_of_a_cohort(tiny_run, cohort, tmp_path):
    import csv

    import nibabel as nib

    out = tmp_path / "synthetic"
    result = run("sample", tiny_run, out, "--n", 3, "--labels-from", cohort, "--condition", "site=SSA")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "metadata.csv").open()))
    assert [r["label_map_from"] for r in rows] == [f"BraTS-TST-{i:05d}-000" for i in range(3)]
    assert [(r["site"], r["grade"]) for r in rows] == [("SSA", "HGG"), ("SSA", "LGG"), ("SSA", "HGG")]  # grade: the case's
    from augment3d.data import prepare_cohort
    from augment3d.synthesis.sampling import load_generator

    prepared = prepare_cohort(cohort, load_generator(tiny_run).preprocess)
    for row, case in zip(rows, prepared.cases):
        seg = np.asarray(nib.load(out / row["subject_id"] / f"{row['subject_id']}-seg.nii.gz").dataobj)
        assert np.array_equal(seg, case.label)  # rendered from exactly that map


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (truncate, "truncated gzip stream"),
        ("values", "label values [7] outside the BraTS-2023 scheme"),
        ("shape", "shape (10, 18, 16) differs from t1n's"),
    ],
)
def test_labels_from_a_damaged_label_file_is_one_line(tiny_run, cohort, tmp_path, damage, fragment):
    import nibabel as nib

    path = path_of(cohort, "BraTS-TST-00001-000", "seg")
    if damage in ("values", "shape"):
        image = nib.load(path)
        data = np.full(image.shape, 7, np.uint8) if damage == "values" else np.asarray(image.dataobj)[:10]
        nib.save(nib.Nifti1Image(data, image.affine), path)
    else:
        damage(path)
    result = run("sample", tiny_run, tmp_path / "out", "--n", 2, "--labels-from", cohort)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and fragment in lines[0]
    assert not (tmp_path / "out").exists()


def test_exports_read_like_real_brats(tiny_run, tmp_path):
    """Background 0 outside the brain, the run's voxel size on a centred RAS grid, BraTS-2023 ids
    that do not clash between calls with other seeds or conditions, nnU-Net names and regions."""
    import nibabel as nib

    def sample(out, *args):
        result = run("sample", tiny_run, out, "--n", 2, *args)
        assert result.exit_code == 0, result.output
        return out

    hic = sample(tmp_path / "hic", "--condition", "site=HIC", "--condition", "grade=HGG")
    ssa = sample(tmp_path / "ssa", "--condition", "site=SSA", "--condition", "grade=HGG")
    ids = {p.name for p in hic.iterdir() if p.is_dir()} | {p.name for p in ssa.iterdir() if p.is_dir()}
    assert len(ids) == 4 and all(re.fullmatch(r"BraTS-SYN-\d{5}-\d{3}", i) for i in ids)
    case = next(p for p in hic.iterdir() if p.is_dir())
    t1 = nib.load(case / f"{case.name}-t1n.nii.gz")
    data, seg = np.asarray(t1.dataobj), np.asarray(nib.load(case / f"{case.name}-seg.nii.gz").dataobj)
    assert data.min() == 0.0 and 0 < (data == 0).mean() < 1 and data.max() <= 1000.0  # nonzero = the brain
    assert (seg[data == 0] == 0).all()
    assert np.allclose(np.diag(t1.affine)[:3], 2.0) and np.allclose(t1.affine[:3, 3], -2.0 * 7.5)  # centred
    assert nib.aff2axcodes(t1.affine) == ("R", "A", "S")
    assert "voxels (the training data's median" in (hic / "README.txt").read_text()
    refused = run(
        "sample",
        tiny_run,
        tmp_path / "synthetic_nn",
        "--n",
        1,
        "--format",
        "nnunet",
        "--condition",
        "site=SSA",
        "--condition",
        "grade=HGG",
    )
    assert refused.exit_code == 2 and "DatasetNNN_Name" in refused.stderr
    regions = sample(
        tmp_path / "Dataset502_Regions",
        "--format",
        "nnunet",
        "--nnunet-regions",
        "--condition",
        "site=SSA",
        "--condition",
        "grade=HGG",
    )
    dataset = json.loads((regions / "dataset.json").read_text())
    assert dataset["labels"]["whole tumour"] == [1, 2, 3] and dataset["labels"]["tumour core"] == [1, 3]
    assert dataset["regions_class_order"] == [2, 1, 3]


def test_sample_without_a_condition_draws_it_and_says_how(tiny_run, tmp_path):
    import csv

    result = run("sample", tiny_run, tmp_path / "drawn", "--n", 4, "--preview")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "drawn" / "metadata.csv").open()))
    assert {r["condition_from"] for r in rows} == {"training frequencies"}
    assert all(r["site"] in ("HIC", "SSA") and r["grade"] in ("HGG", "LGG") for r in rows)
    assert (tmp_path / "drawn" / "preview.png").read_bytes()[:4] == b"\x89PNG"
    again = run("sample", tiny_run, tmp_path / "again", "--n", 4)  # a seed names its condition too
    assert again.exit_code == 0, again.output
    assert [(r["site"], r["grade"]) for r in csv.DictReader((tmp_path / "again" / "metadata.csv").open())] == [
        (r["site"], r["grade"]) for r in rows
    ]
    balanced = run(
        "sample", tiny_run, tmp_path / "balanced", "--n", 4, "--conditions-from", "balanced", "--condition", "site=SSA"
    )
    assert balanced.exit_code == 0, balanced.output
    rows = list(csv.DictReader((tmp_path / "balanced" / "metadata.csv").open()))
    assert [(r["site"], r["grade"], r["condition_from"]) for r in rows] == [
        ("SSA", "HGG", "balanced"),
        ("SSA", "LGG", "balanced"),
    ] * 2


def test_help_tables_and_hints_read_well(tmp_path, cohort):
    result = run("bench", "--help")
    assert "[bench] section" in result.output and "<bool>" not in result.output
    folder = tmp_path / "odd" / "subject-1"
    folder.mkdir(parents=True)
    for name in ("T1.nii.gz", "FLAIR.nii.gz"):
        (folder / name).write_bytes((cohort / "BraTS-TST-00000-000" / "BraTS-TST-00000-000-t1n.nii.gz").read_bytes())
    result = run("validate", tmp_path / "odd")
    lines = [line for line in result.stderr.splitlines() if line.startswith("bad case")]
    assert len(lines) == 1 and "no file named in BraTS 2023 style" in lines[0] and "FLAIR.nii.gz, T1.nii.gz" in lines[0]
    info = run("info", cohort)
    assert info.stdout.startswith(f"{cohort}: a cohort of 3 cases")
    report = run("bench-report", cohort)
    assert report.exit_code == 2 and "is not a bench folder" in report.stderr
    long_id = "BraTS-TST-" + "7" * 50 + "-000"  # a long subject id is folded, not cut short at 80 columns
    (cohort / "BraTS-TST-00000-000").rename(cohort / long_id)
    for f in (cohort / long_id).iterdir():
        f.rename(f.with_name(f.name.replace("BraTS-TST-00000-000", long_id)))
    table = run("validate", cohort)
    assert "…" not in table.stdout and "7777777777" in table.stdout


def test_training_in_a_pipe_prints_progress_lines(cohort, tmp_path):
    """`augment3d train ... 2>&1 | cat`: no terminal, so plain lines at a steady interval (here
    every update, AUGMENT3D_LOG_EVERY=0), with rate and ETA; a finished run says how to go on."""
    env = {**os.environ, "AUGMENT3D_LOG_EVERY": "0", "AUGMENT3D_CACHE": str(tmp_path / "cache")}
    cmd = [
        sys.executable,
        "-c",
        "from cli import main; main()",
        "train",
        str(cohort),
        "--recipe",
        "ci",
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "3",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("[train]")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert all("/s, elapsed" in line and "ETA" in line for line in lines)
    again = subprocess.run(
        [*cmd, "--resume"], capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1], timeout=300
    )
    assert again.returncode == 0 and "is finished at step 3 of 3" in again.stdout and "--steps" in again.stdout
