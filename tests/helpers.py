"""Small real NIfTI cohorts for tests, and ways to damage them."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np

from augment3d.data.layout import BRATS2021, BRATS2023, MODALITIES, NamingScheme, case_file_name
from augment3d.data.nifti_write import write_nifti

__all__ = ["write_case", "write_metadata", "truncate", "corrupt_gzip_block", "rewrite", "SHAPE"]

SHAPE = (20, 18, 16)
AFFINE = np.array([[1.5, 0, 0, -15.0], [0, 1.5, 0, -13.5], [0, 0, 1.5, -12.0], [0, 0, 0, 1]])


def brain_and_label(shape=SHAPE, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """An ellipsoid 'brain' with a tumour off-centre (towards +x, +y) in every modality."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    tumour = ((grid - np.array([0.35, 0.25, 0.0]).reshape(3, 1, 1, 1)) ** 2).sum(0) < 0.08
    core = ((grid - np.array([0.35, 0.25, 0.0]).reshape(3, 1, 1, 1)) ** 2).sum(0) < 0.02
    images = {}
    for k, modality in enumerate(MODALITIES):
        image = (100.0 + 20 * k + 10 * grid[0] + rng.normal(0, 2, shape)) * brain
        image[tumour] = 400.0 + 10 * k
        images[modality] = image.astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[brain & ~tumour & (((grid - np.array([0.35, 0.25, 0.0]).reshape(3, 1, 1, 1)) ** 2).sum(0) < 0.15)] = 2
    label[tumour] = 3
    label[core] = 1
    return images, label


def write_case(
    root: Path,
    subject_id: str,
    scheme: NamingScheme = BRATS2023,
    shape=SHAPE,
    affine: np.ndarray = AFFINE,
    seed: int = 0,
    images: dict | None = None,
    label: np.ndarray | None = None,
) -> Path:
    """Write one case (4 modalities float32 + seg uint8) and return its folder."""
    folder = Path(root) / subject_id
    folder.mkdir(parents=True, exist_ok=True)
    default_images, default_label = brain_and_label(shape, seed)
    images = default_images if images is None else images
    label = default_label if label is None else label
    if scheme is BRATS2021 and label is default_label:
        label = np.where(label == 3, 4, label).astype(np.uint8)
    for key in MODALITIES:
        write_nifti(folder / case_file_name(subject_id, key, scheme), images[key], affine, np.float32)
    write_nifti(folder / case_file_name(subject_id, "seg", scheme), label, affine, np.uint8)
    return folder


def write_cohort(root: Path) -> Path:
    """Three valid BraTS-2023 cases (HIC-HGG, HIC-LGG, SSA-HGG) with metadata.csv."""
    rows = []
    for i, (site, grade) in enumerate([("HIC", "HGG"), ("HIC", "LGG"), ("SSA", "HGG")]):
        sid = f"BraTS-TST-{i:05d}-000"
        write_case(root, sid, seed=i)
        rows.append({"subject_id": sid, "site": site, "grade": grade})
    write_metadata(root, rows)
    return Path(root)


def path_of(root: Path, subject_id: str, key: str, scheme: NamingScheme = BRATS2023) -> Path:
    return Path(root) / subject_id / case_file_name(subject_id, key, scheme)


def write_metadata(root: Path, rows: list[dict[str, str]], columns=("subject_id", "site", "grade")) -> Path:
    path = Path(root) / "metadata.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def corrupt_gzip_block(path: Path) -> None:
    """Zero 64 bytes in the middle of the deflate stream (header and trailer intact)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))


def rewrite(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE, dtype=np.float32) -> None:
    write_nifti(path, data, affine, dtype)


def gzip_bytes(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=0)
