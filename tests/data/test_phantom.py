"""The phantom cohort: valid BraTS layout, reproducible bytes, site and grade effects."""

from __future__ import annotations

import csv
import json

from dataclasses import replace

import numpy as np
import pytest

from augment3d.data import discover_cases, read_case, validate_cohort
from augment3d.data.phantom import PhantomConfig, make_phantom_cohort
from augment3d.data.phantom.contrast import SITE_CONTRAST, TISSUES
from augment3d.errors import DataError


def file_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_phantom_is_a_valid_cohort(phantom_cohort):
    reports = validate_cohort(phantom_cohort, ["site", "grade"], {"site": ["HIC", "SSA"], "grade": ["HGG", "LGG"]})
    assert len(reports) == 6 and all(r.ok for r in reports), [r.problems for r in reports]
    rows = list(csv.DictReader((phantom_cohort / "metadata.csv").open()))
    assert [r["subject_id"] for r in rows] == [c.subject_id for c in discover_cases(phantom_cohort)]
    assert sum(r["site"] == "SSA" for r in rows) == 3
    record = json.loads((phantom_cohort / "phantom.json").read_text())
    assert [s["site"] for s in record["subjects"]] == [r["site"] for r in rows]
    assert all(s["radius_mm"] > 0 for s in record["subjects"])


def test_tumour_labels_follow_grade(phantom_cohort):
    rows = {r["subject_id"]: r for r in csv.DictReader((phantom_cohort / "metadata.csv").open())}
    for case in discover_cases(phantom_cohort):
        label = read_case(case).label
        values = set(np.unique(label).tolist())
        assert {1, 2} <= values, (case.subject_id, values)
        if rows[case.subject_id]["grade"] == "HGG":
            assert 3 in values
        else:
            assert 3 not in values


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    config = PhantomConfig(cases=2, seed=7, spacing=6.0, ssa_fraction=0.5)
    a = make_phantom_cohort(tmp_path / "a", config)
    b = make_phantom_cohort(tmp_path / "b", config)
    assert file_bytes(a) == file_bytes(b)
    c = make_phantom_cohort(tmp_path / "c", PhantomConfig(cases=2, seed=8, spacing=6.0, ssa_fraction=0.5))
    assert file_bytes(c)["metadata.csv"] != b"" and file_bytes(c) != file_bytes(a)


def test_existing_folder_needs_force_and_failure_leaves_nothing(tmp_path):
    out = tmp_path / "cohort"
    config = PhantomConfig(cases=2, seed=0, spacing=6.0)
    make_phantom_cohort(out, config)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(DataError, match="already exists"):
        make_phantom_cohort(out, config)

    def boom(i, n, sid):
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_phantom_cohort(out, replace(config, seed=1), force=True, progress=boom)
    assert sorted(p.name for p in out.iterdir()) == before  # the old cohort is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]  # no partial folder left
    make_phantom_cohort(out, config, force=True, preview=True)  # a phantom cohort of ours: replaced
    assert (out / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_force_never_deletes_a_folder_augment3d_did_not_write(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="is not an augment3d cohort folder"):
        make_phantom_cohort(out, PhantomConfig(cases=2, seed=0, spacing=6.0), force=True)
    assert (out / "keep.txt").read_text() == "mine"


def test_sites_differ_in_ways_monotone_intensity_maps_cannot_undo():
    """Tissue order changes between sites on some sequences: no gamma or bias maps HIC to SSA."""
    flipped = []
    for modality in SITE_CONTRAST["HIC"]:
        hic, ssa = np.array(SITE_CONTRAST["HIC"][modality]), np.array(SITE_CONTRAST["SSA"][modality])
        for i in range(len(TISSUES)):
            for j in range(len(TISSUES)):
                if hic[i] < hic[j] and ssa[i] > ssa[j]:
                    flipped.append((modality, TISSUES[i], TISSUES[j]))
    assert ("t2f", "wm", "gm") in flipped  # FLAIR grey/white order flips
    assert ("t2w", "oedema", "csf") in flipped  # oedema brighter than CSF on the SSA T2


def test_ssa_images_are_noisier_and_tumours_larger(tmp_path):
    out = make_phantom_cohort(tmp_path / "p", PhantomConfig(cases=8, seed=1, spacing=4.0, ssa_fraction=0.5))
    record = json.loads((out / "phantom.json").read_text())
    by_site = {s: [x for x in record["subjects"] if x["site"] == s] for s in ("HIC", "SSA")}
    assert min(x["noise"] for x in by_site["SSA"]) > max(x["noise"] for x in by_site["HIC"])
    mean_volume = {}
    for site, subjects in by_site.items():
        volumes = []
        for s in subjects:
            (case,) = [c for c in discover_cases(out) if c.subject_id == s["subject_id"]]
            volumes.append(np.count_nonzero(np.isin(read_case(case).label, (1, 3))))
        mean_volume[site] = np.mean(volumes)
    assert mean_volume["SSA"] > mean_volume["HIC"]


def test_healthy_subjects_have_no_tumour_and_leave_the_others_unchanged(phantom_cohort, tmp_path):
    """`healthy_fraction`: that share of each site's subjects is tumour-free (empty label map, grade
    `none`, the same brain and scanner effects); every tumour subject is byte-for-byte the one the
    cohort has without healthy subjects, and copy-paste finds room in a healthy brain."""
    import torchio as tio

    from augment3d import TumourBank, TumourPaste
    from augment3d.brats import BRATS2023, MODALITIES
    from augment3d.data.layout import case_file_name

    config = PhantomConfig(cases=6, seed=3, spacing=6.0, ssa_fraction=0.5, healthy_fraction=0.34)
    out = make_phantom_cohort(tmp_path / "healthy", config)
    rows = list(csv.DictReader((out / "metadata.csv").open()))
    healthy = [r for r in rows if r["grade"] == "none"]
    assert sorted(r["site"] for r in healthy) == ["HIC", "SSA"]  # round(3 * 0.34) = 1 of each site's 3
    record = json.loads((out / "phantom.json").read_text())
    assert record["config"]["healthy_fraction"] == 0.34
    assert [s.get("healthy", False) for s in record["subjects"]] == [r["grade"] == "none" for r in rows]
    reports = validate_cohort(out, ["site", "grade"], {"site": ["HIC", "SSA"], "grade": ["HGG", "LGG", "none"]})
    assert all(r.ok for r in reports), [r.problems for r in reports]
    before, after = file_bytes(phantom_cohort), file_bytes(out)
    for case in discover_cases(out):
        sid = case.subject_id
        data = read_case(case)
        if sid in {r["subject_id"] for r in healthy}:
            assert not data.label.any()
            assert all((data.images[m] > 0).sum() > 0.2 * data.label.size for m in MODALITIES)
        else:
            assert all(
                after[f"{sid}/{case_file_name(sid, k, BRATS2023)}"] == before[f"{sid}/{case_file_name(sid, k, BRATS2023)}"]
                for k in (*MODALITIES, "seg")
            )

    bank = TumourBank.from_cohort(phantom_cohort).save(tmp_path / "bank")
    sid = next(r["subject_id"] for r in healthy)
    files = {k: out / sid / case_file_name(sid, k, BRATS2023) for k in (*MODALITIES, "seg")}
    subject = tio.Subject(**{m: tio.ScalarImage(files[m]) for m in MODALITIES}, seg=tio.LabelMap(files["seg"]))
    paste = TumourPaste(bank, p=1.0, seed=0, max_tries=200)
    pasted = paste(subject)
    assert paste.pasted == 1 and pasted["seg"].data.any()
