"""Small real NIfTI cohorts for tests, and ways to damage them."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np

from augment3d.brats import BRATS2021, BRATS2023, MODALITIES, NamingScheme
from augment3d.data.layout import case_file_name
from augment3d.data.nifti_write import write_nifti

__all__ = [
    "write_case",
    "write_cohort",
    "cohort_subjects",
    "write_metadata",
    "truncate",
    "corrupt_gzip_block",
    "rewrite",
    "SHAPE",
    "TINY_ENCODER",
    "TINY_MODEL",
    "TINY_TRAIN",
    "tiny_data",
    "generator_weights",
    "learning_train",
    "Payload",
]

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


def cohort_subjects(root) -> list:
    """The cohort's cases as torchio subjects: four images, the label map as ``seg``, and the
    metadata columns (site, grade) as attributes, as a user's torchio pipeline would build them."""
    import torchio as tio

    from augment3d.data import discover_cases, read_metadata

    rows = read_metadata(root).rows
    return [
        tio.Subject(
            **{k: tio.ScalarImage(c.paths[k]) for k in MODALITIES},
            seg=tio.LabelMap(c.paths["seg"]),
            **{k: v for k, v in rows[c.subject_id].items() if k != "subject_id"},
        )
        for c in discover_cases(root)
    ]


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


# The tiny GAN every training test starts from: a 16^3 grid, conditioned on site, a few steps.
# Tests change what they are about with dataclasses.replace and keep the rest.


def _tiny():
    from augment3d.data import ConditionEncoder
    from augment3d.models import ModelConfig
    from augment3d.training.train_config import TrainConfig

    encoder = ConditionEncoder({"site": ["HIC", "SSA"]})
    model = ModelConfig(shape=16, cond_dim=encoder.dim, z_dim=16, w_dim=16, channel_max=8, d_channel_max=8, mapping_layers=2)
    train = TrainConfig(
        steps=6,
        batch=2,
        loss="nonsaturating",
        g_lr=2.5e-4,
        d_lr=2.5e-4,
        r1_interval=2,
        checkpoint_every=3,
        log_every=1,
        ada_interval=1,
        ada_images=50,
    )
    return encoder, model, train


TINY_ENCODER, TINY_MODEL, TINY_TRAIN = _tiny()


def tiny_data(n: int = 4):
    """``n`` random subjects on the tiny grid, alternating HIC and SSA."""
    import torch

    from augment3d.training.loop import TrainingData

    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 4, 16, 16, 16, generator=g) * 2 - 1
    labels = torch.randint(0, 4, (n, 16, 16, 16), generator=g)
    conds = torch.from_numpy(TINY_ENCODER.encode([{"site": "HIC"}, {"site": "SSA"}] * (n // 2)))
    return TrainingData(images, labels, conds)


def generator_weights(run) -> dict:
    """The EMA generator's tensors of a run folder, by name."""
    from augment3d.synthesis.sampling import load_generator

    return {k: v.clone() for k, v in load_generator(run).network.state_dict().items()}


def weights_apart(a, b) -> float:
    """The largest difference between two runs' generator weights (run folders)."""
    wa, wb = generator_weights(a), generator_weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


class Payload:
    """Pickles to a call of ``open(marker, "w")``: unpickling it creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def learning_train(train, **changes):
    """``train`` (a tiny TrainConfig) set to learn something in 150 steps: batch 4, StyleGAN2's rates, R1
    every 16 steps, ADA at its usual pace, no checkpoints on the way."""
    from dataclasses import replace

    settings = dict(
        steps=150, batch=4, g_lr=2e-3, d_lr=2e-3, r1_interval=16, checkpoint_every=1000, ada_interval=4, ada_images=5000
    )
    return replace(train, **{**settings, **changes})
