"""The damaged inputs of the foundation issue, as (name, file key, damage, message fragment)."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
from helpers import AFFINE, SHAPE, brain_and_label, corrupt_gzip_block, rewrite, truncate

SID = "BraTS-TST-00000-000"  # the damaged case of the `cohort` fixture


def _not_nifti(path: Path) -> None:
    path.write_bytes(gzip.compress(b"not an image " * 100, mtime=0))


def _nan(path: Path) -> None:
    images, _ = brain_and_label()
    images["t2f"][3, 4, 5] = np.nan
    rewrite(path, images["t2f"])


def _constant(path: Path) -> None:
    rewrite(path, np.zeros(SHAPE, np.float32))


def _shape(path: Path) -> None:
    rewrite(path, np.ones((20, 18, 15), np.float32) * np.arange(15, dtype=np.float32))


def _affine(path: Path) -> None:
    shifted = AFFINE.copy()
    shifted[0, 3] += 2.0
    images, _ = brain_and_label()
    rewrite(path, images["t1c"], shifted)


def _bad_labels(path: Path) -> None:
    _, label = brain_and_label()
    label[label == 3] = 7
    rewrite(path, label, dtype=np.uint8)


def _edit_metadata(change):
    def damage(path: Path) -> None:
        with path.open() as handle:
            rows = list(csv.DictReader(handle))
        rows = change(rows)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["subject_id", "site", "grade"])
            writer.writeheader()
            writer.writerows(rows)

    return damage


def _unknown_site(rows):
    rows[0]["site"] = "Mars"
    return rows


IMAGE_DAMAGES = [
    ("truncated-gz", "t1n", truncate, "truncated gzip stream"),
    ("corrupt-gz-block", "t1n", corrupt_gzip_block, "corrupted gzip data"),
    ("not-nifti", "t1c", _not_nifti, "not a NIfTI file"),
    ("nan", "t2f", _nan, "1 voxels are NaN or Inf"),
]
DAMAGES = IMAGE_DAMAGES + [
    ("constant", "t1n", _constant, "empty image: every voxel is 0"),
    ("shape-mismatch", "t2w", _shape, "differs from t1n's"),
    ("affine-mismatch", "t1c", _affine, "affine differs from t1n's"),
    ("missing-file", "t2f", lambda p: p.unlink(), "missing t2f image"),
    ("bad-labels", "seg", _bad_labels, "label values [7] outside"),
    ("metadata-unknown-category", "metadata", _edit_metadata(_unknown_site), "unknown site 'Mars'"),
    ("metadata-missing-row", "metadata", _edit_metadata(lambda rows: rows[1:]), f"no row for subject '{SID}'"),
]


def damaged_path(root: Path, key: str) -> Path:
    from helpers import path_of

    return root / "metadata.csv" if key == "metadata" else path_of(root, SID, key)
