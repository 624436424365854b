"""Bombs and absurd files: refused with one line naming the file, before anything is allocated."""

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import path_of, write_case, write_metadata
from typer.testing import CliRunner

from augment3d.data import read_nifti, validate_cohort
from augment3d.errors import CheckpointError, DataError, RecipeError
from augment3d.synthesis.sampling import load_generator
from cli import app

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _header_bytes(shape, dtype) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_sform(np.eye(4), code=1)
    header.set_qform(np.eye(4), code=1)
    return header.binaryblock + b"\0" * 4  # 352 bytes: the voxels start here


def zero_bomb(path: Path, shape, dtype, payload_bytes: int) -> None:
    """A .nii.gz of ``shape`` whose voxels are ``payload_bytes`` of zeros, written as repeated
    gzip members of 16 MiB each: a few kilobytes on disk, gigabytes once decompressed."""
    member = gzip.compress(b"\0" * (1 << 24), compresslevel=9, mtime=0)
    with path.open("wb") as handle:
        handle.write(gzip.compress(_header_bytes(shape, dtype), mtime=0))
        for _ in range(payload_bytes >> 24):
            handle.write(member)


def test_a_header_claiming_gigavoxels_is_refused_before_decompressing(cohort):
    path = path_of(cohort, "BraTS-TST-00001-000", "t1n")
    zero_bomb(path, (1600, 1600, 1600), np.int16, 1 << 26)  # 8 GB claimed, 64 MB of zeros in 1 MB on disk
    assert path.stat().st_size < 1 << 20
    result = _run("validate", cohort)
    assert result.exit_code == 1
    assert f"{path}: header claims 1600x1600x1600 voxels (4.1e+09), more than augment3d reads" in result.stderr


MEMORY_LIMITED = """
import resource, sys
from pathlib import Path
mapped = int(next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (mapped + (600 << 20), resource.RLIM_INFINITY))
from augment3d.data import read_nifti
from augment3d.errors import DataError
try:
    read_nifti(sys.argv[1])
except DataError as exc:
    print("refused:", exc)
"""


def test_a_volume_larger_than_memory_allows_is_refused_under_a_limit(tmp_path):
    """400^3 float32 (256 MB decompressed, 512 MB more to decode) under a 600 MB address-space
    limit: refused with the file named, where decompressing it would fail with MemoryError."""
    path = tmp_path / "big.nii.gz"
    zero_bomb(path, (400, 400, 400), np.float32, 256 << 20)
    done = subprocess.run([sys.executable, "-c", MEMORY_LIMITED, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"refused: {path}: reading its 400x400x400 float32 voxels needs")
    assert "more than this process can still allocate" in done.stdout


def test_a_stream_longer_than_its_header_says_is_refused(tmp_path):
    path = tmp_path / "long.nii.gz"
    zero_bomb(path, (8, 8, 8), np.float32, 1 << 25)
    with pytest.raises(DataError, match="decompresses to more data than its header promises"):
        read_nifti(path)


def test_a_recipe_grid_that_cannot_fit_is_refused_at_load(tmp_path):
    path = tmp_path / "huge.toml"
    path.write_text("[data]\nshape = 1024\n")
    with pytest.raises(RecipeError, match=r"shape \(1024, 1024, 1024\) is larger than augment3d prepares"):
        from augment3d.config.recipe import load_recipe

        load_recipe(path)


def _rewrite_generator(run: Path, meta_change=None, tensor_change=None) -> None:
    """Change a run's generator and re-sign it (a valid hash, hostile content)."""
    from safetensors.torch import load, save

    meta = json.loads((run / "generator.json").read_text())
    tensors = load((run / "generator.safetensors").read_bytes())
    if tensor_change:
        tensor_change(tensors)
    if meta_change:
        meta_change(meta)
    blob = save(tensors)
    (run / "generator.safetensors").write_bytes(blob)
    meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    (run / "generator.json").write_text(json.dumps(meta))


@pytest.fixture
def run(tiny_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda m: m["model"].update(w_dim=10**7), "w_dim must be between 1 and 4096"),
        (lambda m: m["model"].update(w_dim=4096), "weights do not fit the architecture"),
        (lambda m: m.update(voxel_mm=float("nan")), "voxel_mm nan is not a voxel size"),
        (lambda m: m.update(voxel_mm=0.0), "voxel_mm 0.0 is not a voxel size"),
        (lambda m: m["preprocess"].update(clip_percentiles=[99, 1]), "clip_percentiles must satisfy"),
    ],
)
def test_hostile_generator_descriptions_are_refused(run, change, fragment):
    _rewrite_generator(run, meta_change=change)
    with pytest.raises(CheckpointError, match=fragment):
        load_generator(run)


def test_a_deeply_nested_description_is_refused(run):
    (run / "generator.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(CheckpointError, match="nested too deeply"):
        load_generator(run)


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda t: t.update(const=t["const"].to(torch.int64)), "weight const is torch.int64, not float32"),
        (lambda t: t["const"].view(-1).__setitem__(0, float("nan")), "weight const holds NaN or Inf"),
    ],
)
def test_hostile_weights_are_refused(run, change, fragment):
    _rewrite_generator(run, tensor_change=change)
    with pytest.raises(CheckpointError, match=fragment):
        load_generator(run)


def test_nan_weights_never_reach_exported_files_or_training_subjects(run, tmp_path):
    """A generator that slips NaN into its output (here: a weight made NaN after loading) is
    stopped by the output check, in ``sample`` and in the augmenter alike."""
    import torchio as tio
    from helpers import write_case

    from augment3d import SyntheticAugmenter

    gen = load_generator(run)
    with torch.no_grad():
        gen.network.const.view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match="produced NaN or Inf voxels"):
        gen.generate(condition={"site": "SSA", "grade": "HGG"}, seeds=[0])
    folder = write_case(tmp_path / "c", "BraTS-TST-00000-000")
    subject = tio.Subject(
        **{k: tio.ScalarImage(folder / f"BraTS-TST-00000-000-{k}.nii.gz") for k in ("t1n", "t1c", "t2w", "t2f")},
        seg=tio.LabelMap(folder / "BraTS-TST-00000-000-seg.nii.gz"),
        site="SSA",
        grade="HGG",
    )
    with pytest.raises(CheckpointError, match="produced NaN or Inf voxels"):
        SyntheticAugmenter(gen, p=1.0, seed=0)(subject)


def _nifti(path: Path, data, affine=np.eye(4), qform=None) -> None:
    image = nib.Nifti1Image(data, affine)
    if qform is not None:
        image.header.set_qform(qform, code=1)
        image.header.set_sform(affine, code=1)
    nib.save(image, path)


def test_complex_images_are_refused(tmp_path):
    path = tmp_path / "c.nii.gz"
    _nifti(path, (np.random.default_rng(0).normal(size=(8, 8, 8)) * (1 + 1j)).astype(np.complex64))
    with pytest.raises(DataError, match=r"complex-valued image \(complex64\)"):
        read_nifti(path)


def test_qform_and_sform_that_disagree_are_refused(tmp_path):
    path = tmp_path / "q.nii.gz"
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    flipped[:3, 3] = [30.0, 0.0, 0.0]
    _nifti(path, np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32), qform=flipped)
    with pytest.raises(DataError, match="qform and sform disagree"):
        read_nifti(path)


def test_a_singular_affine_is_refused_by_validate_not_a_traceback_later(cohort):
    path = path_of(cohort, "BraTS-TST-00001-000", "t2w")
    volume = read_nifti(path)
    singular = np.diag([1.5, 1.5, 0.0, 1.0])
    for key in ("t1n", "t1c", "t2w", "t2f", "seg"):
        p = path_of(cohort, "BraTS-TST-00001-000", key)
        header = nib.load(p).header.copy()
        header.set_qform(None, code=0)
        header.set_sform(singular, code=1)  # what a broken converter writes
        nib.save(nib.Nifti1Image(np.asarray(nib.load(p).dataobj), None, header), p)
    assert volume.data.shape == (20, 18, 16)
    result = _run("validate", cohort)
    assert result.exit_code == 1 and "affine is singular" in result.stderr
    prepared = _run("prepare", cohort, "--recipe", "ci")
    assert prepared.exit_code == 2 and "affine is singular" in prepared.stderr


def test_the_same_scan_under_two_ids_is_warned_about(cohort):
    import shutil

    source = cohort / "BraTS-TST-00000-000"
    copy = cohort / "BraTS-TST-00009-000"
    copy.mkdir()
    for f in source.iterdir():
        shutil.copy(f, copy / f.name.replace("00000", "00009"))
    with (cohort / "metadata.csv").open("a") as handle:
        handle.write("BraTS-TST-00009-000,HIC,HGG\n")
    result = _run("validate", cohort)
    assert result.exit_code == 0
    assert "warning: case BraTS-TST-00009-000: the same images as case BraTS-TST-00000-000" in result.stderr
    prepared = _run("prepare", cohort, "--recipe", "ci")
    assert prepared.exit_code == 0 and "the same images as case BraTS-TST-00000-000" in prepared.stderr


@pytest.mark.parametrize(
    "header, fragment",
    [
        ("subject_id,site,grade,site", "column 'site' appears more than once"),
        ("subject_id,subject_id,site,grade", "column 'subject_id' appears more than once"),
    ],
)
def test_repeated_metadata_columns_are_refused(cohort, header, fragment):
    rows = (cohort / "metadata.csv").read_text().splitlines()[1:]
    (cohort / "metadata.csv").write_text("\n".join([header, *(r + ",X" for r in rows)]) + "\n")
    result = _run("validate", cohort, "--recipe", "ci")
    assert result.exit_code == 2 and fragment in result.stderr


def test_a_fifo_as_metadata_is_refused_at_once(cohort):
    (cohort / "metadata.csv").unlink()
    os.mkfifo(cohort / "metadata.csv")
    result = subprocess.run(
        [sys.executable, "-c", "from cli import main; main()", "validate", str(cohort)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 2 and "is not a regular file" in result.stderr


def test_subject_ids_match_whatever_unicode_form_they_were_typed_in(tmp_path):
    composed, decomposed = "BraTS-Z\u00e9-00001-000", "BraTS-Ze\u0301-00001-000"
    write_case(tmp_path, decomposed)  # a folder name made on macOS
    write_metadata(tmp_path, [{"subject_id": composed, "site": "HIC", "grade": "LGG"}])
    (report,) = validate_cohort(tmp_path, ["site", "grade"])
    assert report.ok and report.conditions == {"site": "HIC", "grade": "LGG"}


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("[train]\nsteps = 2.5", "[train]: steps must be a whole number, got 2.5"),
        ("[train]\ng_lr = nan", "[train]: g_lr must be a finite number, got nan"),
        ("[train]\ng_lr = -1e-3", "[train]: g_lr must be >= 0"),
        ("[train]\naugment = 'yes'", "[train]: augment must be true or false"),
        ("[train]\nbatch = 0", "[train]: batch must be >= 1"),
        ("[data]\nconditions = 'site'", "[data]: conditions must be a list of strings, got 'site'"),
        ("[data.categories]\nsite = 'HICSSA'", "[data]: categories.site must be a list of strings, got 'HICSSA'"),
        ("[data]\nclip_percentiles = 99", "[data]: clip_percentiles must be two numbers"),
        ("[model]\nz_dim = '128'", "[model]: z_dim must be a whole number"),
        ("[phantom]\ncases = 10.0", "[phantom]: cases must be a whole number"),
    ],
)
def test_recipe_values_of_the_wrong_type_are_refused_with_the_key_named(tmp_path, line, fragment):
    from augment3d.config.recipe import load_recipe

    path = tmp_path / "r.toml"
    path.write_text(line + "\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert fragment in str(caught.value) and str(path) in str(caught.value)
