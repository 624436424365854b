"""The perfect-restyle reference: a phantom subject re-scanned at another site, scored like a restyle."""

from __future__ import annotations

import json

import numpy as np

from augment3d.data.cohort import prepare_cohort
from augment3d.data.phantom import SubjectParams, synthesize_subject
from augment3d.data.phantom.anatomy import load_template
from augment3d.data.phantom.contrast import SITE_SCANNER
from augment3d.data.phantom.subject import as_site
from augment3d.data.preprocess import PreprocessConfig
from augment3d.metrics.consistency import condition_classifiers
from augment3d.metrics.features import extract, load_extractor
from augment3d.metrics.restyle_reference import perfect_restyle

CATEGORIES = {"site": ["HIC", "SSA"], "grade": ["HGG", "LGG"]}


def test_a_subject_rescanned_at_another_site_keeps_its_labels_and_changes_its_images(phantom_cohort):
    record = json.loads((phantom_cohort / "phantom.json").read_text())
    p = SubjectParams(**next(s for s in record["subjects"] if s["site"] == "HIC"))
    q = as_site(p, "SSA")
    assert as_site(p, "HIC") is p and as_site(p, "SSA") == q  # a subject and a site name one re-scan
    assert (q.grade, q.radius_mm, q.centre_voxel) == (p.grade, p.radius_mm, p.centre_voxel)
    for key in ("noise", "bias", "fwhm_mm", "slice_mm"):
        low, high = SITE_SCANNER["SSA"][{"fwhm_mm": "fwhm", "slice_mm": "slice"}.get(key, key)]
        assert low <= getattr(q, key) <= high
    template = load_template(record["config"]["spacing"])
    (images_p, label_p), (images_q, label_q) = synthesize_subject(p, template), synthesize_subject(q, template)
    assert np.array_equal(label_p, label_q)
    assert all(not np.allclose(images_p[m], images_q[m], atol=0.02) for m in images_p)


def test_the_reference_is_scored_on_a_phantom_cohort_and_absent_elsewhere(phantom_cohort, cohort):
    config = PreprocessConfig(shape=16)
    cases = prepare_cohort(phantom_cohort, config, list(CATEGORIES), CATEGORIES).cases
    extractor, _ = load_extractor("fixed")
    classifier = condition_classifiers(extract(extractor, np.stack([c.images for c in cases])), [c.conditions for c in cases])[
        "site"
    ]
    shares = perfect_restyle(phantom_cohort, cases, config, CATEGORIES, extractor, classifier)
    assert set(shares) == {"HIC", "SSA"} and all(0.0 <= v <= 1.0 for v in shares.values())
    assert perfect_restyle(cohort, cases, config, CATEGORIES, extractor, classifier) is None
