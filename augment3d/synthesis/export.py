"""Writing synthetic cohorts: BraTS-2023 layout with metadata.csv, or an nnU-Net v2 raw dataset.

Written as real BraTS data reads: intensities 0 outside the brain (the model's [-1, 1] scale
mapped to [0, 1000]), on the run's grid in RAS orientation at the training data's median voxel
size, centred on the origin; ids in BraTS-2023 form, ``BraTS-SYN-<seed, 5 digits>-<condition,
3 digits>``, so cohorts sampled with other seeds or conditions merge without clashes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_write_text
from ..io.output_folders import staged_output
from ..brats import BRATS2023, CLASS_NAMES, MODALITIES, MODALITY_TITLES, REGIONS
from ..errors import DataError
from ..data.layout import case_file_name
from ..data.nifti_write import write_nifti

__all__ = [
    "FORMATS",
    "export_synthetic",
    "export_cohort_nnunet",
    "subject_id",
    "check_nnunet_name",
    "INTENSITY_RANGE",
    "MAX_SEED",
    "csv_text",
    "write_brats",
]

FORMATS = ("brats", "nnunet")
NNUNET_CHANNELS = {str(k): MODALITY_TITLES[m] for k, m in enumerate(MODALITIES)}
NNUNET_LABELS = {name: value for value, name in enumerate(CLASS_NAMES)}
#: nnU-Net's region-based training on BraTS: the regions scored, and the order in which painting
#: them back gives the labels (whole tumour as SNFH, then the core as NETC, then ET)
NNUNET_REGION_LABELS = {
    "background": 0,
    "whole tumour": list(REGIONS["WT"]),
    "tumour core": list(REGIONS["TC"]),
    "enhancing tumour": list(REGIONS["ET"]),
}
NNUNET_REGIONS_CLASS_ORDER = [2, 1, 3]
#: the model's [-1, 1] written as [0, INTENSITY_RANGE]: background (outside the brain) is 0
INTENSITY_RANGE = 1000.0
MAX_SEED = 99_999  # five digits in a BraTS-2023 id
_NNUNET_NAME = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_\-]+$")


def subject_id(seed: int, condition_index: int = 0) -> str:
    """``BraTS-SYN-00042-002``: seed 42, the model's third condition combination (0: none)."""
    if not 0 <= seed <= MAX_SEED or not 0 <= condition_index <= 999:
        raise ValueError(f"seed {seed} / condition {condition_index} do not fit a BraTS-2023 id")
    return f"BraTS-SYN-{seed:05d}-{condition_index:03d}"


def _space(affine: np.ndarray) -> str:
    voxel = float(np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0)).mean())
    return (
        f"RAS grid of {voxel:.3g} mm voxels (the training data's median on the model grid), centred on the origin; "
        f"intensities 0 (background) to {INTENSITY_RANGE:g}"
    )


def _describe(conditions: list[dict]) -> str:
    distinct = {tuple(sorted(c.items())) for c in conditions}
    return str(conditions[0]) if len(distinct) == 1 else f"{len(distinct)} combinations (see the subjects)"


def check_nnunet_name(out: str | os.PathLike) -> None:
    """nnU-Net finds a raw dataset only in a folder named ``DatasetNNN_Name``."""
    if not _NNUNET_NAME.match(Path(out).name):
        raise DataError(
            out,
            "nnU-Net finds raw datasets only in folders named DatasetNNN_Name (e.g. Dataset501_SynthSSA); "
            "name the output folder so",
        )


def write_brats(work: Path, ids, images, labels, affine) -> None:
    for sid, subject, label in zip(ids, images, labels):
        folder = work / sid
        folder.mkdir()
        for key, volume in zip(MODALITIES, subject):
            write_nifti(folder / case_file_name(sid, key, BRATS2023), volume, affine, np.float32)
        write_nifti(folder / case_file_name(sid, "seg", BRATS2023), label, affine, np.uint8)


def _write_nnunet(work: Path, ids, images, labels, affine) -> None:
    (work / "imagesTr").mkdir()
    (work / "labelsTr").mkdir()
    for sid, subject, label in zip(ids, images, labels):
        for k, volume in enumerate(subject):
            write_nifti(work / "imagesTr" / f"{sid}_{k:04d}.nii.gz", volume, affine, np.float32)
        write_nifti(work / "labelsTr" / f"{sid}.nii.gz", label, affine, np.uint8)


def _write_nnunet_dataset(work: Path, name: str, n: int, regions: bool, description: str) -> None:
    dataset = {
        "channel_names": NNUNET_CHANNELS,
        **(
            {"labels": NNUNET_REGION_LABELS, "regions_class_order": NNUNET_REGIONS_CLASS_ORDER}
            if regions
            else {"labels": NNUNET_LABELS}
        ),
        "numTraining": n,
        "file_ending": ".nii.gz",
        "name": name,
        "description": description,
    }
    atomic_write_text(work / "dataset.json", json.dumps(dataset, indent=1) + "\n")


def export_cohort_nnunet(
    cohort: str | os.PathLike,
    out: str | os.PathLike,
    *,
    regions: bool = False,
    subjects: Sequence[str] | None = None,
    force: bool = False,
) -> Path:
    """A cohort in BraTS layout (or the ``subjects`` of it) as an nnU-Net v2 raw dataset in
    ``out`` (named ``DatasetNNN_Name``): images as ``imagesTr/<id>_000k.nii.gz`` in the order
    T1, T1Gd, T2, FLAIR, label maps in BraTS-2023 numbering (BraTS 2021's ET 4 becomes 3),
    ``dataset.json`` as :func:`export_synthetic` writes it. Every case is read and checked as
    ``augment3d validate`` does (a bad file stops it, named); the folder appears only once complete."""
    from ..data.layout import discover_cases
    from ..data.validation import read_case

    out = Path(out)
    check_nnunet_name(out)
    cases = discover_cases(cohort)
    if subjects is not None:
        unknown = sorted(set(subjects) - {c.subject_id for c in cases})
        if unknown:
            raise DataError(cohort, f"has no case {', '.join(unknown[:5])}")
        cases = [c for c in cases if c.subject_id in set(subjects)]
    with staged_output(out, "nnunet-dataset", force=force, inputs=[cohort]) as work:
        (work / "imagesTr").mkdir()
        (work / "labelsTr").mkdir()
        for case in cases:
            loaded = read_case(case)
            for k, key in enumerate(MODALITIES):
                write_nifti(
                    work / "imagesTr" / f"{case.subject_id}_{k:04d}.nii.gz", loaded.images[key], loaded.affine, np.float32
                )
            write_nifti(work / "labelsTr" / f"{case.subject_id}.nii.gz", loaded.label, loaded.affine, np.uint8)
        _write_nnunet_dataset(
            work, out.name, len(cases), regions, f"augment3d: the cohort {Path(cohort).resolve().name} in nnU-Net v2 raw layout"
        )
    return out


def csv_text(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


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
    extra_columns: Mapping[str, Sequence] | None = None,
    condition_ids: Sequence[int] | None = None,
    regions: bool = False,
    preview: bool = False,
) -> Path:
    """Write generated subjects to ``out``; the folder appears only once complete.

    ``condition`` is one for all subjects or one per subject; ``extra_columns`` (e.g. which label
    map each subject was rendered from, how its condition was chosen) go into ``metadata.csv``.
    ``condition_ids`` number each subject's condition (its place among the model's combinations,
    from 1) for the ids. ``regions`` (nnU-Net only) declares the BraTS regions (WT, TC, ET) with
    ``regions_class_order``, as nnU-Net's own BraTS datasets do.
    ``inputs`` (the run folder) are never written over (:func:`augment3d.io.output_folders.check_not_an_input`).
    """
    conditions = [dict(condition)] * len(seeds) if isinstance(condition, Mapping) else [dict(c) for c in condition]
    extra = {k: list(v) for k, v in (extra_columns or {}).items() if any(x is not None for x in v)}
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    out = Path(out)
    if fmt == "nnunet":
        check_nnunet_name(out)
    scaled = (np.asarray(images, dtype=np.float32) + 1.0) * np.float32(INTENSITY_RANGE / 2)
    ids = [subject_id(s, k) for s, k in zip(seeds, condition_ids or [0] * len(seeds))]
    with staged_output(out, "samples", force=force, inputs=inputs) as work:
        if fmt == "brats":
            write_brats(work, ids, scaled, labels, affine)
            rows = [
                {"subject_id": sid, **conditions[i], "seed": seed, "psi": psi, **{k: v[i] for k, v in extra.items()}}
                for i, (sid, seed) in enumerate(zip(ids, seeds))
            ]
            atomic_write_text(work / "metadata.csv", csv_text(rows))
            atomic_write_text(work / "README.txt", f"Synthetic subjects written by augment3d: {_space(affine)}.\n")
        else:
            _write_nnunet(work, ids, scaled, labels, affine)
            _write_nnunet_dataset(
                work,
                out.name,
                len(ids),
                regions,
                f"augment3d synthetic subjects, conditions {_describe(conditions)}, psi {psi}; {_space(affine)}",
            )
        if preview:
            from ..viz import save_montage

            save_montage(
                [(f"{sid} {' '.join(conditions[i].values())}", images[i], labels[i]) for i, sid in enumerate(ids[:4])],
                work / "preview.png",
            )
    return out
