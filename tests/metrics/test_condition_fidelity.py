"""The condition judge: trained on every real subject, its reference read on subjects it did not learn from."""

from __future__ import annotations

import numpy as np

from augment3d.metrics.consistency import condition_classifiers, condition_fidelity, cross_validated_accuracy, top_up_conditions


def _subjects(rng, n_hic: int, n_ssa: int, dims: int, shift: float):
    sites = ["HIC"] * n_hic + ["SSA"] * n_ssa
    features = rng.standard_normal((len(sites), dims))
    features[n_hic:] += shift  # the site shows in every feature (a scanner changes everything), by ``shift`` SDs
    return features, [{"site": s, "grade": "HGG"} for s in sites]


def test_the_reference_is_cross_validated_so_a_judge_that_memorises_noise_scores_near_chance():
    rng = np.random.default_rng(0)
    noise, conditions = _subjects(rng, 30, 10, dims=200, shift=0.0)  # more features than subjects
    in_sample = condition_classifiers(noise, conditions)["site"].score(noise, [c["site"] for c in conditions])
    held = cross_validated_accuracy(noise, conditions, "site")
    assert in_sample == 1.0 and held["accuracy"] < 0.85 and held["folds"] == 5
    clear, conditions = _subjects(rng, 30, 10, dims=20, shift=2.0)
    assert cross_validated_accuracy(clear, conditions, "site")["by_category"] == {"HIC": 1.0, "SSA": 1.0}


def test_condition_fidelity_scores_synthetic_subjects_against_the_site_asked_for():
    rng = np.random.default_rng(1)
    real, conditions = _subjects(rng, 30, 6, dims=20, shift=2.0)
    looks_ssa = rng.standard_normal((4, 20)) + 2.0
    looks_hic = rng.standard_normal((4, 20))
    asked = [{"site": "SSA", "grade": "HGG"}] * 8  # half of them do not look like SSA
    result = condition_fidelity(real, conditions, np.concatenate([looks_ssa, looks_hic]), asked)
    site = result["site"]
    assert site["synthetic_accuracy_by_category"] == {"SSA": 0.5} and site["classifier_trained_on"] == 36
    assert site["synthetic_n_by_category"] == {"SSA": 8}
    assert site["real_accuracy_cross_validated_by_category"] == {"HIC": 1.0, "SSA": 1.0}
    assert "synthetic_accuracy" not in result["grade"]  # one grade among the real subjects: no judge


def test_a_category_with_one_real_subject_has_no_cross_validated_reference():
    rng = np.random.default_rng(2)
    features, conditions = _subjects(rng, 10, 1, dims=5, shift=2.0)
    assert cross_validated_accuracy(features, conditions, "site") is None
    assert "real_accuracy_cross_validated" not in condition_fidelity(features, conditions, features, conditions)["site"]


def test_scarce_categories_are_topped_up_so_their_recognition_rests_on_enough_subjects():
    pool = [{"site": "HIC", "grade": "HGG"}] * 30 + [{"site": "SSA", "grade": "HGG"}, {"site": "SSA", "grade": "LGG"}]
    sample = [pool[i % len(pool)] for i in range(32)]  # what evaluate draws: 2 SSA of 32
    extra = top_up_conditions(sample, pool, per_category=16)
    asked = sample + extra
    for column, category in (("site", "SSA"), ("site", "HIC"), ("grade", "LGG"), ("grade", "HGG")):
        assert sum(c[column] == category for c in asked) >= 16, (column, category)
    # the extras keep combinations that exist among the real subjects (no HIC LGG was ever seen)
    assert all(c in pool for c in extra) and {"site": "HIC", "grade": "LGG"} not in extra
    assert top_up_conditions(asked, pool, per_category=16) == []  # enough already: nothing more to generate
