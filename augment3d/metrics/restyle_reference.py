"""What the restyle check would score for a perfect restyle, on a phantom cohort.

The restyle check (``evaluate``) renders every training subject's label map into each site and
asks a classifier trained on the real subjects which site it sees. That classifier is imperfect
(few scarce-site cases), so the share alone does not say how far the generator is from right.
On a phantom cohort the right answer can be made: the phantom re-renders each training
subject with its own anatomy and tumour but the target site's scanner and contrast
(:func:`augment3d.data.phantom.subject.as_site`). The same classifier's score on those is the
ceiling the generator's restyles are read against.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ..data.cohort import prepare_cohort
from ..data.phantom.cohort import PHANTOM_FILE, write_subjects
from ..data.phantom.subject import SubjectParams, as_site
from .consistency import accuracy_by_category
from .features import extract

__all__ = ["perfect_restyle"]


def _phantom_params(data: Path) -> tuple[dict[str, SubjectParams], float] | None:
    record = Path(data) / PHANTOM_FILE
    if not record.is_file():
        return None
    try:
        found = json.loads(record.read_text())
        params = {p["subject_id"]: SubjectParams(**p) for p in found["subjects"]}
        return params, float(found["config"]["spacing"])
    except (ValueError, KeyError, TypeError):  # not one of ours: no reference, not an error
        return None


def perfect_restyle(data, train, preprocess, conditions: dict, extractor, classifier) -> dict | None:
    """Share of ``train`` re-rendered at each site of ``conditions["site"]`` that ``classifier``
    recognises as that site: ``{site: share}``, or None when ``data`` is not a phantom cohort
    holding them."""
    found = _phantom_params(data)
    if found is None or any(c.subject_id not in found[0] for c in train):
        return None
    params, spacing = found
    out = {}
    for site in conditions["site"]:
        moved = [as_site(params[c.subject_id], site) for c in train if c.conditions.get("site") != site]
        images = [c.images for c in train if c.conditions.get("site") == site]
        if moved:
            with tempfile.TemporaryDirectory() as tmp:
                rendered = prepare_cohort(
                    write_subjects(tmp, moved, spacing), preprocess, list(conditions), conditions, use_cache=False
                ).cases
            images += [c.images for c in rendered]
        features = extract(extractor, np.stack(images))
        asked = [{"site": site}] * len(images)
        out[site] = accuracy_by_category(classifier, features, asked, "site")["accuracy"]
    return out
