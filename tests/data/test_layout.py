"""Case discovery for both BraTS naming schemes."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_case

from augment3d.data import BRATS2021, BRATS2023, discover_cases, read_case
from augment3d.errors import DataError


def test_brats2023_naming(tmp_path):
    write_case(tmp_path, "BraTS-SSA-00002-000")
    (case,) = discover_cases(tmp_path)
    assert case.scheme is BRATS2023
    assert case.paths["t2f"].name == "BraTS-SSA-00002-000-t2f.nii.gz"
    assert case.missing == []


def test_brats2021_naming_remaps_label_4_to_3(tmp_path):
    write_case(tmp_path, "BraTS2021_00000", scheme=BRATS2021)
    (case,) = discover_cases(tmp_path)
    assert case.scheme is BRATS2021
    assert case.paths["t1c"].name == "BraTS2021_00000_t1ce.nii.gz"
    assert case.paths["t2f"].name == "BraTS2021_00000_flair.nii.gz"
    loaded = read_case(case)
    raw = np.asarray(__import__("nibabel").load(case.paths["seg"]).dataobj)
    assert 4 in raw and 3 not in raw
    assert set(np.unique(loaded.label)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(loaded.label == 3, raw == 4)


def test_mixed_cohort_and_ignored_folders(tmp_path):
    write_case(tmp_path, "BraTS-SSA-00002-000")
    write_case(tmp_path, "BraTS2021_00001", scheme=BRATS2021)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a case")
    (tmp_path / ".cache").mkdir()
    cases = discover_cases(tmp_path)
    assert [c.subject_id for c in cases] == ["BraTS-SSA-00002-000", "BraTS2021_00001"]
    assert [c.scheme.name for c in cases] == ["BraTS-2023", "BraTS-2021"]


def test_uncompressed_nii_is_found(tmp_path):
    folder = write_case(tmp_path, "BraTS-SSA-00002-000")
    gz = folder / "BraTS-SSA-00002-000-t1n.nii.gz"
    import gzip

    (folder / "BraTS-SSA-00002-000-t1n.nii").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    (case,) = discover_cases(tmp_path)
    assert case.paths["t1n"].name.endswith(".nii")
    read_case(case)


def test_missing_and_empty_roots(tmp_path):
    with pytest.raises(DataError, match="folder does not exist"):
        discover_cases(tmp_path / "nope")
    with pytest.raises(DataError, match="no BraTS cases found"):
        discover_cases(tmp_path)
