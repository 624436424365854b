"""Preprocessing onto the model grid keeps labels aligned with images and with the world."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import AFFINE, brain_and_label, path_of, rewrite, write_case

from augment3d.data import PreprocessConfig, discover_cases, prepare_cohort, preprocess_case, read_case
from augment3d.errors import DataError

SID = "BraTS-TST-00000-000"


def prepared(root, shape=16):
    (case,) = discover_cases(root)
    return preprocess_case(read_case(case), PreprocessConfig(shape=shape))


def centre_of(mask):
    return np.argwhere(mask).mean(axis=0)


def test_output_grid_and_range(tmp_path):
    write_case(tmp_path, SID)
    out = prepared(tmp_path, 24)
    assert out.images.shape == (4, 24, 24, 24) and out.images.dtype == np.float32
    assert out.label.shape == (24, 24, 24) and out.label.dtype == np.uint8
    assert out.images.min() == -1.0 and out.images.max() == pytest.approx(1.0)
    assert set(np.unique(out.label)) <= {0, 1, 2, 3}
    # background (outside the brain) is exactly -1 in every modality
    corner = out.images[:, 0, 0, 0]
    assert corner.tolist() == [-1.0] * 4


def test_label_stays_on_the_bright_tumour(tmp_path):
    write_case(tmp_path, SID)
    out = prepared(tmp_path, 16)
    bright = out.images[0] > 0.9  # the tumour is the brightest tissue in every modality
    tumour = out.label > 0
    tumour_core = np.isin(out.label, (1, 3))
    assert np.abs(centre_of(bright) - centre_of(tumour_core)).max() < 1.0
    # the tumour was placed towards +x, +y: it must stay there (no flipped or swapped axes)
    c = centre_of(tumour)
    assert c[0] > 8 and c[1] > 8


def test_flipped_storage_gives_the_same_result(tmp_path):
    """The same anatomy stored LPS (flipped axes, matching affine) prepares identically."""
    write_case(tmp_path / "ras", SID)
    images, label = brain_and_label()
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps_affine = AFFINE @ np.array(
        [[-1, 0, 0, images["t1n"].shape[0] - 1], [0, -1, 0, images["t1n"].shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]]
    )
    assert np.allclose(lps_affine[:3, :3], AFFINE[:3, :3] @ flip[:3, :3])
    flipped = {k: v[::-1, ::-1, :].copy() for k, v in images.items()}
    write_case(tmp_path / "lps", SID, images=flipped, label=label[::-1, ::-1, :].copy(), affine=lps_affine)
    a, b = prepared(tmp_path / "ras"), prepared(tmp_path / "lps")
    np.testing.assert_allclose(a.images, b.images, atol=1e-5)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)


def test_prepared_affine_points_at_the_same_world_position(tmp_path):
    write_case(tmp_path, SID)
    (case,) = discover_cases(tmp_path)
    loaded = read_case(case)
    out = preprocess_case(loaded, PreprocessConfig(shape=16))
    world = lambda affine, ijk: (affine @ np.append(ijk, 1.0))[:3]  # noqa: E731
    src = world(loaded.affine, centre_of(loaded.label == 1))
    dst = world(out.affine, centre_of(out.label == 1))
    voxel_mm = np.sqrt((out.affine[:3, :3] ** 2).sum(0)).max()
    assert np.linalg.norm(src - dst) < voxel_mm


def test_anisotropic_voxels_pad_to_a_cube_in_mm(tmp_path):
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    write_case(tmp_path, SID, affine=affine, shape=(30, 30, 10))
    out = prepared(tmp_path, 16)
    zooms = np.sqrt((out.affine[:3, :3] ** 2).sum(0))
    assert np.allclose(zooms, zooms[0], rtol=0.1)  # isotropic output voxels


def test_percentile_clipping_ignores_outliers(tmp_path):
    images, label = brain_and_label()
    write_case(tmp_path / "clean", SID, images=images, label=label)
    images["t2w"][10, 9, 8] = 1e6  # a hot voxel
    write_case(tmp_path / "hot", SID, images=images, label=label)
    clean, hot = prepared(tmp_path / "clean", 20), prepared(tmp_path / "hot", 20)
    brain = clean.images[2] > -1
    # without clipping the hot voxel would squash every other voxel to about -1
    assert np.median(np.abs(hot.images[2][brain] - clean.images[2][brain])) < 0.02


def test_constant_brain_is_refused(tmp_path):
    images, label = brain_and_label()
    images["t1c"] = np.where(images["t1n"] > 0, 5.0, 0.0).astype(np.float32)
    write_case(tmp_path, SID, images=images, label=label)
    with pytest.raises(DataError, match="constant inside the brain") as info:
        prepared(tmp_path)
    assert info.value.path.endswith("-t1c.nii.gz")


def test_cache_reused_and_invalidated(cohort, tmp_path):
    cache = tmp_path / "pcache"
    config = PreprocessConfig(shape=12)
    first = prepare_cohort(cohort, config, ["site"], cache_dir=cache)
    assert first.cache_hits == 0 and len(first.cases) == 3
    second = prepare_cohort(cohort, config, ["site"], cache_dir=cache)
    assert second.cache_hits == 3
    for a, b in zip(first.cases, second.cases):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.label, b.label)
        assert a.conditions == b.conditions
    # a changed file is noticed
    sid = "BraTS-TST-00001-000"
    images, _ = brain_and_label(seed=1)
    rewrite(path_of(cohort, sid, "t1n"), images["t1n"] * 2 + 50)
    third = prepare_cohort(cohort, config, ["site"], cache_dir=cache)
    assert third.cache_hits == 2
    # other settings are a different entry
    fourth = prepare_cohort(cohort, PreprocessConfig(shape=14), ["site"], cache_dir=cache)
    assert fourth.cache_hits == 0
    # a damaged cache entry is rebuilt, not trusted
    for entry in cache.glob("*.safetensors"):
        entry.write_bytes(b"garbage")
    fifth = prepare_cohort(cohort, config, ["site"], cache_dir=cache)
    assert fifth.cache_hits == 0
    np.testing.assert_array_equal(fifth.cases[0].images, first.cases[0].images)


def test_skip_bad_lists_bad_cases(cohort, tmp_path):
    path_of(cohort, "BraTS-TST-00001-000", "t2w").write_bytes(b"junk")
    with pytest.raises(DataError, match="not gzip-compressed"):
        prepare_cohort(cohort, PreprocessConfig(shape=12), cache_dir=tmp_path / "c")
    result = prepare_cohort(cohort, PreprocessConfig(shape=12), skip_bad=True, cache_dir=tmp_path / "c")
    assert [c.subject_id for c in result.cases] == ["BraTS-TST-00000-000", "BraTS-TST-00002-000"]
    assert [s.case.subject_id for s in result.skipped] == ["BraTS-TST-00001-000"]
    assert "not gzip-compressed" in str(result.skipped[0].error)
