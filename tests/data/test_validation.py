"""Every damaged input gets one DataError naming the file and the problem."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from helpers import AFFINE, SHAPE, brain_and_label, corrupt_gzip_block, path_of, rewrite, truncate, write_case

from augment3d.data import BRATS2021, check_case, discover_cases, read_case, read_nifti
from augment3d.errors import DataError

SID = "BraTS-TST-00000-000"


def only_case(root):
    (case,) = discover_cases(root)
    return case


def problems_of(root):
    return [str(p) for p in check_case(only_case(root)).problems]


def assert_single_problem(root, path, fragment):
    problems = problems_of(root)
    assert len(problems) == 1, problems
    assert problems[0].startswith(str(path) + ": "), problems[0]
    assert fragment in problems[0], problems[0]
    with pytest.raises(DataError) as info:
        read_case(only_case(root))
    assert info.value.path == str(path)
    assert fragment in info.value.problem


def test_valid_case_reads(tmp_path):
    write_case(tmp_path, SID)
    loaded = read_case(only_case(tmp_path))
    assert set(loaded.images) == {"t1n", "t1c", "t2w", "t2f"}
    assert loaded.label.shape == SHAPE
    assert set(np.unique(loaded.label)) == {0, 1, 2, 3}


def test_nibabel_misses_corrupt_block_we_catch_it(tmp_path):
    write_case(tmp_path, SID)
    path = path_of(tmp_path, SID, "t2w")
    corrupt_gzip_block(path)
    with pytest.raises(DataError, match="corrupted gzip data"):
        read_nifti(path)


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda p: truncate(p, 0.5), "truncated gzip stream"),
        (corrupt_gzip_block, "corrupted gzip data"),
        (lambda p: p.write_bytes(gzip.compress(b"this is not an image\n" * 40, mtime=0)), "not a NIfTI file"),
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: p.write_bytes(b"plain text, not gzip"), "not gzip-compressed"),
    ],
    ids=["truncated", "corrupt-block", "not-nifti", "empty-file", "not-gzip"],
)
def test_damaged_files(tmp_path, damage, fragment):
    write_case(tmp_path, SID)
    path = path_of(tmp_path, SID, "t1c")
    damage(path)
    assert_single_problem(tmp_path, path, fragment)


def test_gzip_intact_but_voxels_truncated(tmp_path):
    write_case(tmp_path, SID)
    path = path_of(tmp_path, SID, "t1n")
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) - 500], mtime=0))
    assert_single_problem(tmp_path, path, "truncated image data")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf(tmp_path, bad):
    images, _ = brain_and_label()
    images["t2f"][3, 4, 5] = bad
    write_case(tmp_path, SID, images=images)
    assert_single_problem(tmp_path, path_of(tmp_path, SID, "t2f"), "1 voxels are NaN or Inf")


def test_constant_image(tmp_path):
    images, _ = brain_and_label()
    images["t1n"] = np.zeros(SHAPE, np.float32)
    write_case(tmp_path, SID, images=images)
    assert_single_problem(tmp_path, path_of(tmp_path, SID, "t1n"), "empty image: every voxel is 0")


def test_shape_mismatch(tmp_path):
    write_case(tmp_path, SID)
    path = path_of(tmp_path, SID, "t2w")
    rewrite(path, np.ones((20, 18, 15), np.float32) * np.arange(15, dtype=np.float32))
    assert_single_problem(tmp_path, path, "shape (20, 18, 15) differs from t1n's (20, 18, 16)")


def test_affine_mismatch(tmp_path):
    write_case(tmp_path, SID)
    path = path_of(tmp_path, SID, "seg")
    shifted = AFFINE.copy()
    shifted[0, 3] += 2.0
    _, label = brain_and_label()
    rewrite(path, label, shifted, np.uint8)
    assert_single_problem(tmp_path, path, "affine differs from t1n's")


def test_affine_rounding_is_tolerated(tmp_path):
    write_case(tmp_path, SID)
    nudged = AFFINE.copy()
    nudged[0, 3] += 1e-5
    _, label = brain_and_label()
    rewrite(path_of(tmp_path, SID, "seg"), label, nudged, np.uint8)
    assert problems_of(tmp_path) == []


@pytest.mark.parametrize("key, what", [("t2f", "missing t2f image"), ("seg", "missing label map")])
def test_missing_file(tmp_path, key, what):
    write_case(tmp_path, SID)
    path = path_of(tmp_path, SID, key)
    path.unlink()
    assert_single_problem(tmp_path, path, what)


def test_label_outside_scheme(tmp_path):
    _, label = brain_and_label()
    label[0, 0, 0] = 5
    write_case(tmp_path, SID, label=label)
    assert_single_problem(tmp_path, path_of(tmp_path, SID, "seg"), "label values [5] outside the BraTS-2023 scheme")


def test_label_4_in_2023_naming_gets_a_hint(tmp_path):
    _, label = brain_and_label()
    label[label == 3] = 4
    write_case(tmp_path, SID, label=label)
    problems = problems_of(tmp_path)
    assert "label 4 is BraTS-2021 enhancing tumour" in problems[0]


def test_label_3_in_2021_naming_is_refused(tmp_path):
    _, label = brain_and_label()  # uses 3 for ET, which BraTS 2021 does not
    write_case(tmp_path, "BraTS2021_00000", scheme=BRATS2021, label=label)
    path = path_of(tmp_path, "BraTS2021_00000", "seg", BRATS2021)
    assert_single_problem(tmp_path, path, "label values [3] outside the BraTS-2021 scheme [0, 1, 2, 4]")


def test_non_integer_label(tmp_path):
    _, label = brain_and_label()
    write_case(tmp_path, SID)
    rewrite(path_of(tmp_path, SID, "seg"), label.astype(np.float32) + 0.5)
    assert_single_problem(tmp_path, path_of(tmp_path, SID, "seg"), "non-integer values")


def test_4d_image_is_refused(tmp_path):
    write_case(tmp_path, SID)
    path = path_of(tmp_path, SID, "t1n")
    rewrite(path, np.random.default_rng(0).random((*SHAPE, 2)).astype(np.float32))
    problems = problems_of(tmp_path)
    assert any(p.startswith(str(path)) and "expected a 3D volume" in p for p in problems), problems


def test_several_problems_all_reported(tmp_path):
    write_case(tmp_path, SID)
    truncate(path_of(tmp_path, SID, "t1n"))
    path_of(tmp_path, SID, "t2f").unlink()
    problems = problems_of(tmp_path)
    assert len(problems) == 2
    assert "truncated gzip stream" in problems[0] and "missing t2f image" in problems[1]


def test_nibabel_accepts_what_we_refuse(tmp_path):
    """Documents why the strict reader exists: nibabel reads a CRC-corrupt file without error."""
    write_case(tmp_path, SID)
    path = path_of(tmp_path, SID, "t1n")
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF  # flip a CRC byte: the data decode fine, the checksum is wrong
    path.write_bytes(bytes(raw))
    nib.load(path).get_fdata()  # no error
    with pytest.raises(DataError, match="corrupted gzip data"):
        read_nifti(path)
