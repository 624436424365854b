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


def _describe(conditions: list[dict]) -> str:
    distinct = {tuple(sorted(c.items())) for c in conditions}
    return str(conditions[0]) if len(distinct) == 1 else f"{len(distinct)} combinations (see the subjects)"


def export_synthetic(
    out: str | os.PathLike,
    images: np.ndarray,
    labels: np.ndarray,
    seeds: Sequence[int],
    condition: Mapping[str, str] | Sequence[Mapping[str, str]],
    affine: np.ndarray,
    *,
    fmt: str = "brats",
    psi: float = 1.0,
    force: bool = False,
    inputs=(),
    map_sources: Sequence[str | None] | None = None,
) -> Path:
    """Write generated subjects to ``out``; the folder appears only once complete.

    ``condition`` is one for all subjects or one per subject; ``map_sources`` (labels-to-images
    runs) names the label map each subject was rendered from, recorded in ``metadata.csv``.
    ``inputs`` (the run folder) are never written over (:func:`augment3d.output_folders.check_not_an_input`).
    """
    conditions = [dict(condition)] * len(seeds) if isinstance(condition, Mapping) else [dict(c) for c in condition]
    sources = list(map_sources) if map_sources is not None and any(s is not None for s in map_sources) else None
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
            keys = list(dict.fromkeys(k for c in conditions for k in c))
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(["subject_id", *keys, "seed", "psi", *(["label_map_from"] if sources else [])])
            for i, (sid, seed) in enumerate(zip(ids, seeds)):
                writer.writerow([sid, *(conditions[i].get(k, "") for k in keys), seed, psi, *([sources[i]] if sources else [])])
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
                       "description": f"augment3d synthetic subjects, conditions {_describe(conditions)}, psi {psi}"}
            atomic_write_text(work / "dataset.json", json.dumps(dataset, indent=1) + "\n")
    return out
