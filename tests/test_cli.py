"""The command line as users meet it: exit codes and one readable line for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
    [(truncate, "truncated gzip stream"), (corrupt_gzip_block, "corrupted gzip data"), (lambda p: p.unlink(), "missing t1c image")],
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
        capture_output=True, text=True, timeout=120,
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


def test_cli_train_resume_sample(cohort, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(cohort), "--recipe", "ci", "--out", str(run), "--steps", "3"])
    assert result.exit_code == 0, result.output
    for name in ("generator.safetensors", "generator.json", "log.jsonl", "curves.png", "samples_latest.png"):
        assert (run / name).is_file(), name
    again = runner.invoke(app, ["train", str(cohort), "--recipe", "ci", "--out", str(run)])
    assert again.exit_code == 2 and "already exists; use --resume" in again.stderr
    resumed = runner.invoke(app, ["train", str(cohort), "--recipe", "ci", "--out", str(run), "--resume"])
    assert resumed.exit_code == 0 and "step 6" in resumed.stdout
    info = runner.invoke(app, ["info", str(run)])
    assert info.exit_code == 0 and "generator at step 6" in info.stdout and "site {HIC, SSA}" in info.stdout
    out = tmp_path / "nn"
    result = runner.invoke(app, ["sample", str(run), str(out), "--n", "2", "--condition", "site=SSA",
                                 "--condition", "grade=LGG", "--seed", "3", "--format", "nnunet"])
    assert result.exit_code == 0, result.output
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["numTraining"] == 2 and dataset["labels"]["ET"] == 3
    assert sorted(p.name for p in (out / "imagesTr").iterdir())[:4] == [f"BraTS-SYN-000003-000_{k:04d}.nii.gz" for k in range(4)]
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
    from augment3d.sampling import load_generator

    prepared = prepare_cohort(cohort, load_generator(tiny_run).preprocess)
    for row, case in zip(rows, prepared.cases):
        seg = np.asarray(nib.load(out / row["subject_id"] / f"{row['subject_id']}-seg.nii.gz").dataobj)
        assert np.array_equal(seg, case.label)  # rendered from exactly that map


@pytest.mark.parametrize("damage, fragment", [(truncate, "truncated gzip stream"),
                                              ("values", "label values [7] outside the BraTS-2023 scheme")])
def test_labels_from_a_damaged_label_file_is_one_line(tiny_run, cohort, tmp_path, damage, fragment):
    import nibabel as nib

    path = path_of(cohort, "BraTS-TST-00001-000", "seg")
    if damage == "values":
        image = nib.load(path)
        nib.save(nib.Nifti1Image(np.full(image.shape, 7, np.uint8), image.affine), path)
    else:
        damage(path)
    result = run("sample", tiny_run, tmp_path / "out", "--n", 2, "--labels-from", cohort)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and fragment in lines[0]
    assert not (tmp_path / "out").exists()
