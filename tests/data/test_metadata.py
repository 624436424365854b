"""metadata.csv joins and the ConditionEncoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import write_case, write_metadata

from augment3d.data import ConditionEncoder, check_case, discover_cases, read_case, read_metadata
from augment3d.errors import DataError

CATS = {"site": ["HIC", "SSA"], "grade": ["HGG", "LGG"]}


def test_conditions_join(cohort):
    metadata = read_metadata(cohort)
    cases = discover_cases(cohort)
    loaded = read_case(cases[2], metadata, ["site", "grade"], CATS)
    assert loaded.conditions == {"site": "SSA", "grade": "HGG"}


@pytest.mark.parametrize(
    "rows, fragment",
    [
        ([{"subject_id": "A", "site": "HIC", "grade": "HGG"}], "no row for subject 'BraTS-TST-00000-000'"),
        (
            [{"subject_id": "BraTS-TST-00000-000", "site": "HIC", "grade": "HGG"}] * 2,
            "subject 'BraTS-TST-00000-000' appears in several rows (lines 2, 3)",
        ),
        (
            [{"subject_id": "BraTS-TST-00000-000", "site": "EU", "grade": "HGG"}],
            "subject 'BraTS-TST-00000-000': unknown site 'EU' (known: HIC, SSA)",
        ),
        (
            [{"subject_id": "BraTS-TST-00000-000", "site": "HIC", "grade": ""}],
            "subject 'BraTS-TST-00000-000' has no value for 'grade'",
        ),
    ],
    ids=["missing-row", "duplicate", "unknown-category", "empty-value"],
)
def test_metadata_problems(tmp_path, rows, fragment):
    write_case(tmp_path, "BraTS-TST-00000-000")
    path = write_metadata(tmp_path, rows)
    (case,) = discover_cases(tmp_path)
    report = check_case(case, read_metadata(tmp_path), ["site", "grade"], CATS)
    assert [str(p) for p in report.problems] == [f"{path}: {fragment}"]


def test_metadata_missing_column(tmp_path):
    write_case(tmp_path, "BraTS-TST-00000-000")
    path = write_metadata(tmp_path, [{"subject_id": "BraTS-TST-00000-000", "site": "HIC"}], ("subject_id", "site"))
    (case,) = discover_cases(tmp_path)
    with pytest.raises(DataError, match="no column 'grade'") as info:
        read_case(case, read_metadata(tmp_path), ["site", "grade"])
    assert info.value.path == str(path)


def test_metadata_file_missing_when_conditions_needed(tmp_path):
    write_case(tmp_path, "BraTS-TST-00000-000")
    (case,) = discover_cases(tmp_path)
    with pytest.raises(DataError, match="missing, but conditioning needs the columns site") as info:
        read_case(case, None, ["site"])
    assert info.value.path == str(tmp_path / "metadata.csv")


def test_metadata_without_subject_id(tmp_path):
    (tmp_path / "metadata.csv").write_text("id,site\nA,HIC\n")
    with pytest.raises(DataError, match="no 'subject_id' column"):
        read_metadata(tmp_path)


def test_encoder_round_trip_through_json():
    enc = ConditionEncoder(CATS)
    restored = ConditionEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert restored == enc
    rows = [{"site": "SSA", "grade": "LGG"}, {"site": "HIC", "grade": "HGG"}]
    vectors = restored.encode(rows)
    assert vectors.shape == (2, 4) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, enc.encode(rows))
    assert restored.decode(vectors) == rows
    assert vectors.sum(axis=1).tolist() == [2.0, 2.0]


def test_encoder_layout_survives_sorted_json():
    """Column order fixes the vector layout; a JSON writer that sorts keys must not change it."""
    enc = ConditionEncoder({"site": ["HIC", "SSA"], "grade": ["HGG", "LGG"]})
    restored = ConditionEncoder.from_dict(json.loads(json.dumps(enc.to_dict(), sort_keys=True)))
    assert restored.columns == ["site", "grade"]
    row = {"site": "SSA", "grade": "HGG"}
    np.testing.assert_array_equal(restored.encode(row), enc.encode(row))


def test_encoder_layout_is_one_block_per_column_in_sorted_category_order():
    """Saved generators were trained on this layout: it must never move."""
    enc = ConditionEncoder({"site": ["SSA", "HIC"], "scanner": ["b", "c", "a"]})
    rows = [{"site": "SSA", "scanner": "a"}, {"site": "HIC", "scanner": "c"}, {"scanner": "b", "site": "SSA"}]
    assert enc.encode(rows).tolist() == [[0, 1, 1, 0, 0], [1, 0, 0, 0, 1], [0, 1, 0, 1, 0]]
    assert enc.encode([]).shape == (0, 5)


def test_encoder_refuses_unknown_category():
    enc = ConditionEncoder(CATS)
    with pytest.raises(DataError, match=r"unknown grade 'GBM' \(known: HGG, LGG\)"):
        enc.encode({"site": "HIC", "grade": "GBM"})
    with pytest.raises(DataError, match="no value for 'site'"):
        enc.encode({"grade": "HGG"})


def test_encoder_fit_and_all_conditions():
    enc = ConditionEncoder.fit([{"site": "SSA", "grade": "HGG"}, {"site": "HIC", "grade": "HGG"}], ["site", "grade"])
    assert enc.categories == {"site": ["HIC", "SSA"], "grade": ["HGG"]}
    assert enc.dim == 3
    assert enc.all_conditions() == [{"site": "HIC", "grade": "HGG"}, {"site": "SSA", "grade": "HGG"}]


def test_encoder_refuses_foreign_dict():
    with pytest.raises(ValueError, match="not a serialised ConditionEncoder"):
        ConditionEncoder.from_dict({"categories": {"a": ["b"]}})
