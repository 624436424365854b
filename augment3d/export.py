"""Writing synthetic cohorts: BraTS-2023 layout with metadata.csv, or an nnU-Net v2 raw dataset."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .output_folders import staged_output
from .brats import BRATS2023, CLASS_NAMES, MODALITIES, MODALITY_TITLES
from .data.layout import case_file_name
from .data.nifti_write import write_nifti

__all__ = ["FORMATS", "export_synthetic"]

FORMATS = ("brats", "nnunet")
NNUNET_CHANNELS = {str(k): MODALITY_TITLES[m] for k, m in enumerate(MODALITIES)}
NNUNET_LABELS = {name: value for value, name in enumerate(CLASS_NAMES)}


def _subject_id(seed: int) -> str:
    return f"BraTS-SYN-{seed:06d}-000"


def export_synthetic(
    out: str | os.PathLike,
    images: np.ndarray,
    labels: np.ndarray,
    seeds: Sequence[int],
    condition: Mapping[str, str],
    affine: np.ndarray,
    *,
    fmt: str = "brats",
    psi: float = 1.0,
    force: bool = False,
    inputs=(),
) -> Path:
    """Write generated subjects to ``out``; the folder appears only once complete.

    ``inputs`` (the run folder) are never written over (:func:`augment3d.output_folders.check_not_an_input`).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    out = Path(out)
    with staged_output(out, "samples", force=force, inputs=inputs) as work:
        ids = [_subject_id(s) for s in seeds]
        if fmt == "brats":
            for sid, subject, label in zip(ids, images, labels):
                folder = work / sid
                folder.mkdir()
                for key, volume in zip(MODALITIES, subject):
                    write_nifti(folder / case_file_name(sid, key, BRATS2023), volume, affine, np.float32)
                write_nifti(folder / case_file_name(sid, "seg", BRATS2023), label, affine, np.uint8)
            buffer = io.StringIO()
            columns = ["subject_id", *condition, "seed", "psi"]
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(columns)
            for sid, seed in zip(ids, seeds):
                writer.writerow([sid, *condition.values(), seed, psi])
            atomic_write_text(work / "metadata.csv", buffer.getvalue())
        else:
            (work / "imagesTr").mkdir()
            (work / "labelsTr").mkdir()
            for sid, subject, label in zip(ids, images, labels):
                for k, volume in enumerate(subject):
                    write_nifti(work / "imagesTr" / f"{sid}_{k:04d}.nii.gz", volume, affine, np.float32)
                write_nifti(work / "labelsTr" / f"{sid}.nii.gz", label, affine, np.uint8)
            dataset = {"channel_names": NNUNET_CHANNELS, "labels": NNUNET_LABELS, "numTraining": len(ids),
                       "file_ending": ".nii.gz", "name": out.name,
                       "description": f"augment3d synthetic subjects, condition {dict(condition)}, psi {psi}"}
            atomic_write_text(work / "dataset.json", json.dumps(dataset, indent=1) + "\n")
    return out
