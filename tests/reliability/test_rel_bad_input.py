"""Every command that reads data, on every damaged input: one line naming the file and the problem,
a non-zero exit, and the output folder left as it was."""

import pytest
from damage import DAMAGES, IMAGE_DAMAGES, damaged_path
from typer.testing import CliRunner

from cli import app

runner = CliRunner()
ids = [d[0] for d in DAMAGES]


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _damage(cohort, key, damage):
    path = damaged_path(cohort, key)
    damage(path)
    return path


def _one_error_line(result, path, fragment):
    """Progress lines may come first; the error is one line, the last, naming the file and problem."""
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == lines[-1:], lines
    assert errors[0].startswith(f"error: {path}: ") and fragment in errors[0], errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name, key, damage, fragment", DAMAGES, ids=ids)
def test_validate(cohort, name, key, damage, fragment):
    path = _damage(cohort, key, damage)
    result = _run("validate", cohort, "--recipe", "ci")
    assert result.exit_code == 1
    named = [line for line in result.stderr.splitlines() if f"{path}: " in line and fragment in line]
    assert named, result.stderr


@pytest.mark.parametrize("name, key, damage, fragment", DAMAGES, ids=ids)
def test_train_leaves_no_run_folder(cohort, tmp_path, name, key, damage, fragment):
    path = _damage(cohort, key, damage)
    out = tmp_path / "run"
    result = _run("train", cohort, "--recipe", "ci", "--out", out)
    assert result.exit_code == 2
    _one_error_line(result, path, fragment)
    assert not out.exists()


@pytest.mark.parametrize("name, key, damage, fragment", DAMAGES[:4], ids=ids[:4])
def test_train_force_keeps_the_old_run_when_the_data_is_bad(cohort, tmp_path, name, key, damage, fragment):
    out = tmp_path / "run"
    out.mkdir()
    (out / "generator.json").write_text("{}")  # stands for a finished run the user still has
    path = _damage(cohort, key, damage)
    result = _run("train", cohort, "--recipe", "ci", "--out", out, "--force")
    assert result.exit_code == 2
    _one_error_line(result, path, fragment)
    assert (out / "generator.json").read_text() == "{}"


@pytest.mark.parametrize("name, key, damage, fragment", DAMAGES, ids=ids)
def test_evaluate_leaves_no_report(cohort, tiny_run, tmp_path, name, key, damage, fragment):
    path = _damage(cohort, key, damage)
    out = tmp_path / "eval"
    result = _run("evaluate", tiny_run, cohort, "--out", out, "--n", 4)
    assert result.exit_code == 2
    _one_error_line(result, path, fragment)
    assert not out.exists()


@pytest.mark.parametrize("name, key, damage, fragment", DAMAGES, ids=ids)
def test_bench_leaves_no_bench_folder(cohort, tmp_path, name, key, damage, fragment):
    path = _damage(cohort, key, damage)
    out = tmp_path / "bench"
    result = _run("bench", "--recipe", "ci", "--data", cohort, "--out", out)
    assert result.exit_code == 2
    _one_error_line(result, path, fragment)
    assert not out.exists()


@pytest.mark.parametrize("name, key, damage, fragment", IMAGE_DAMAGES, ids=[d[0] for d in IMAGE_DAMAGES])
def test_augmenter_names_the_damaged_file(cohort, tiny_run, name, key, damage, fragment):
    import torchio as tio

    from augment3d import DataError, SyntheticAugmenter
    from helpers import path_of
    from damage import SID

    path = _damage(cohort, key, damage)
    images = {k: tio.ScalarImage(path_of(cohort, SID, k)) for k in ("t1n", "t1c", "t2w", "t2f")}
    subject = tio.Subject(**images, seg=tio.LabelMap(path_of(cohort, SID, "seg")), site="HIC", grade="HGG")
    with pytest.raises(DataError) as info:
        SyntheticAugmenter(tiny_run, p=1.0, seed=0)(subject)
    assert info.value.path == str(path)
