"""Segmentation scores against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from augment3d.metrics.regions import dice_score
from segbench.metrics import MISS_HD95, hd95, lesion_wise, score_case


def cube(shape, lo, hi):
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def test_dice_by_hand():
    a = cube((10, 10, 10), (0, 0, 0), (4, 4, 4))  # 64 voxels
    b = cube((10, 10, 10), (2, 0, 0), (6, 4, 4))  # 64 voxels, 32 shared
    assert dice_score(a, b) == pytest.approx(2 * 32 / 128)
    assert dice_score(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_hd95_in_millimetres():
    a = cube((20, 20, 20), (5, 5, 5), (10, 10, 10))
    b = cube((20, 20, 20), (8, 5, 5), (13, 10, 10))  # shifted 3 voxels along x
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(a, b, spacing=(2.0, 1.0, 1.0)) == pytest.approx(6.0)  # spacing is honoured
    empty = np.zeros_like(a)
    assert hd95(empty, empty) == 0.0
    assert hd95(a, empty) == MISS_HD95 and hd95(empty, a) == MISS_HD95


def test_lesion_wise_miss_and_false_positive():
    shape = (40, 40, 40)
    truth = cube(shape, (2, 2, 2), (8, 8, 8)) | cube(shape, (20, 20, 20), (26, 26, 26))  # two lesions of 216
    pred = cube(shape, (2, 2, 2), (8, 8, 8)) | cube(shape, (30, 2, 2), (36, 8, 8))  # one hit, one false positive
    result = lesion_wise(pred, truth)
    # lesion 1 perfect (1, 0), lesion 2 missed (0, 374), one false positive (0, 374): mean of three
    assert result["dice"] == pytest.approx(1 / 3)
    assert result["hd95"] == pytest.approx(2 * MISS_HD95 / 3)
    assert result["lesions"] == 2 and result["false_positives"] == 1


def test_lesion_wise_follows_the_brats_2023_rules_on_hand_made_cases():
    """The cases where a looser reading of the rules goes wrong (official scorer: BraTS-2023-Metrics)."""
    shape = (30, 30, 30)
    # two truth cubes of 64 voxels, 2 voxels apart: their 3 dilations touch, so they are one lesion of
    # 128 voxels; one predicted blob of 160 voxels bridging them: Dice 2 * 128 / (128 + 160) = 0.889
    # (two lesions each matched to the blob would give 2 * 64 / (64 + 160) = 0.571 each)
    two = cube(shape, (4, 4, 4), (8, 8, 8)) | cube(shape, (10, 4, 4), (14, 8, 8))
    blob = cube(shape, (4, 4, 4), (14, 8, 8))
    joined = lesion_wise(blob, two)
    assert joined["dice"] == pytest.approx(256 / 288) and joined["lesions"] == 1 and joined["false_positives"] == 0
    # a small predicted component far away is a false positive, whatever its size: (1 + 0) / 2
    truth = cube(shape, (2, 2, 2), (8, 8, 8))
    speck = cube(shape, (20, 20, 20), (22, 22, 22))  # 8 voxels
    result = lesion_wise(truth | speck, truth)
    assert result["dice"] == pytest.approx(0.5) and result["false_positives"] == 1
    assert result["hd95"] == pytest.approx(MISS_HD95 / 2)
    # a truth lesion of at most 50 mm^3 is left out, and a prediction on it is a hit, not a false positive
    small = cube(shape, (20, 20, 20), (23, 23, 23))  # 27 voxels = 27 mm^3
    covering = cube(shape, (19, 19, 19), (24, 24, 24))  # 125 voxels over it
    result = lesion_wise(truth | covering, truth | small)
    assert result == {"dice": 1.0, "hd95": 0.0, "lesions": 1, "false_positives": 0, "small_lesions": 1}
    # ... at 2 mm voxels (8 mm^3) the same 27 voxels are 216 mm^3: a lesion, scored
    coarse = lesion_wise(truth | covering, truth | small, spacing=(2.0, 2.0, 2.0))
    assert coarse["lesions"] == 2 and coarse["dice"] == pytest.approx((1 + 2 * 27 / (27 + 125)) / 2)
    # a miss of a small truth lesion costs nothing; nothing at all scores 1 and 0
    assert lesion_wise(truth, truth | small)["dice"] == 1.0
    assert lesion_wise(np.zeros(shape, bool), np.zeros(shape, bool)) == {
        "dice": 1.0,
        "hd95": 0.0,
        "lesions": 0,
        "false_positives": 0,
        "small_lesions": 0,
    }
    assert lesion_wise(np.zeros(shape, bool), small) == {
        "dice": 1.0,
        "hd95": 0.0,
        "lesions": 0,
        "false_positives": 0,
        "small_lesions": 1,
    }


def test_score_case_regions():
    truth = np.zeros((30, 30, 30), np.uint8)
    truth[5:15, 5:15, 5:15] = 2
    truth[8:12, 8:12, 8:12] = 1
    pred = truth.copy()
    pred[pred == 1] = 3  # core labelled enhancing: WT and TC right, ET wrong
    scores = score_case(pred, truth)
    assert scores["WT"]["dice"] == 1.0 and scores["TC"]["dice"] == 1.0
    assert scores["ET"]["dice"] == 0.0 and scores["ET"]["hd95"] == MISS_HD95


def test_splits_are_disjoint_stratified_and_seeded():
    from segbench.splits import make_splits

    conditions = {f"s{i:02d}": {"site": "SSA" if i < 6 else "HIC", "grade": "HGG" if i % 3 else "LGG"} for i in range(30)}
    a = make_splits(conditions, seed=1)
    b = make_splits(conditions, seed=1)
    c = make_splits(conditions, seed=2)
    assert a == b and a != c
    sets = [set(a[k]) for k in ("train", "val", "test")]
    assert sets[0].isdisjoint(sets[1]) and sets[0].isdisjoint(sets[2]) and sets[1].isdisjoint(sets[2])
    assert set().union(*sets) == set(conditions)
    for split in ("train", "test"):
        assert any(conditions[s]["site"] == "SSA" for s in a[split])  # the scarce site is in every split


def test_per_site_splits_test_many_and_keep_the_scarce_site_scarce():
    from segbench.splits import make_splits

    conditions = {f"s{i:03d}": {"site": "SSA" if i < 28 else "HIC", "grade": "HGG" if i % 3 else "LGG"} for i in range(84)}
    a = make_splits(conditions, seed=0, val=0.15, test_per_site=20, train_per_site={"SSA": 6})
    assert a == make_splits(conditions, seed=0, val=0.15, test_per_site=20, train_per_site={"SSA": 6})
    count = lambda split, site: sum(conditions[s]["site"] == site for s in a[split])  # noqa: E731
    assert count("train", "SSA") == 6 and count("test", "SSA") >= 20  # the cases over the cap add to the test
    assert count("test", "HIC") == 20 and count("train", "HIC") > 20
    assert set().union(*map(set, a.values())) == set(conditions) and sum(map(len, a.values())) == 84
    for site in ("SSA", "HIC"):  # both grades of each site in the test split
        assert {conditions[s]["grade"] for s in a["test"] if conditions[s]["site"] == site} == {"HGG", "LGG"}


def test_the_real_arm_s_plateau_is_judged_on_its_last_quarter():
    from segbench.report import plateau

    flat = {"seed": 0, "steps": 400, "curve": [{"step": s, "val_dice": min(0.6, s / 200)} for s in range(50, 401, 50)]}
    rising = {"seed": 1, "steps": 400, "curve": [{"step": s, "val_dice": s / 500} for s in range(50, 401, 50)]}
    assert plateau([flat])["gain_last_quarter"] == {"0": 0.0} and plateau([flat])["reached"] is True
    result = plateau([flat, rising])
    assert result["gain_last_quarter"]["1"] == pytest.approx(0.2) and result["reached"] is False


def test_hd95_with_anisotropic_spacing_and_lesion_spacing():
    shape = (20, 20, 20)
    a = cube(shape, (5, 5, 5), (10, 10, 10))
    b = cube(shape, (5, 5, 7), (10, 10, 12))  # shifted 2 voxels along z
    assert hd95(a, b, spacing=(1.0, 1.0, 3.0)) == pytest.approx(6.0)
    assert lesion_wise(a, b, spacing=(1.0, 1.0, 3.0))["hd95"] == pytest.approx(6.0)


def test_the_plateau_rule_reads_the_smoothed_curve():
    """A curve that rises then stays flat plateaus `patience` validations after its smoothed best; one
    that keeps rising never does; a single lucky validation on a flat curve does not restart the wait
    once smoothed, and noise below `min_delta` counts as flat."""
    from segbench.plateau import plateau_index, smoothed

    assert smoothed([1, 2, 3, 4], 2).tolist() == [1.0, 1.5, 2.5, 3.5]
    rise_then_flat = [0.1, 0.3, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    assert plateau_index(rise_then_flat, patience=3, window=1, min_delta=0.0) == 6  # best at 3, three more
    assert plateau_index([0.1 * i for i in range(20)], patience=3, window=3, min_delta=0.005) is None
    spike = [0.56, 0.56, 0.60] + [0.56] * 7
    assert plateau_index(spike, patience=3, window=1, min_delta=0.005) == 5  # the raw spike restarts the wait
    assert plateau_index(spike, patience=3, window=3, min_delta=0.02) == 3  # smoothed, it stays within min_delta
    rng = np.random.default_rng(0)
    noisy_flat = 0.55 + rng.uniform(-0.002, 0.002, 12)
    assert plateau_index(noisy_flat, patience=4, window=3, min_delta=0.005) == 4
    assert plateau_index(rise_then_flat, patience=0, window=1, min_delta=0.0) is None  # 0: no rule


def test_the_report_flags_jobs_that_hit_the_cap():
    from segbench.report import arm_flags, plateau

    def job(seed, reason, step):
        return {
            "seed": seed,
            "steps": 100,
            "curve": [{"step": 50, "val_dice": 0.5}, {"step": 100, "val_dice": 0.5}],
            "stop": {"reason": reason, "step": step},
        }

    results = {"real": [job(0, "plateau", 60), job(1, "cap", 100)], "real+synthetic": [job(0, "plateau", 80)]}
    assert arm_flags(results) == ["real seed 1: hit the cap of 100 steps before its plateau"]
    assert plateau(results["real"])["reached"] is False and plateau(results["real"][:1])["reached"] is True
