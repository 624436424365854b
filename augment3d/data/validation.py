"""Reading a whole case strictly, and the per-case report behind ``augment3d validate``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..brats import KEYS, LABEL_KEY, MODALITIES
from .layout import Case, discover_cases
from .metadata import Metadata, read_metadata, subject_conditions
from .nifti import NiftiVolume, read_nifti

__all__ = [
    "AFFINE_TOLERANCE",
    "LoadedCase",
    "CaseReport",
    "read_case",
    "check_case",
    "validate_cohort",
    "image_digest",
    "duplicate_of",
]

#: Largest difference (in affine units: mm, or direction cosines) tolerated between the
#: affines of one case's files; BraTS files often differ by float32 rounding.
AFFINE_TOLERANCE = 1e-3


@dataclass
class LoadedCase:
    """A case's voxels in file orientation: four images, labels in canonical values 0-3."""

    case: Case
    images: dict[str, np.ndarray]
    label: np.ndarray
    affine: np.ndarray
    zooms: tuple[float, float, float]
    conditions: dict[str, str] = field(default_factory=dict)

    @property
    def subject_id(self) -> str:
        return self.case.subject_id


@dataclass
class CaseReport:
    """What validation found for one case."""

    case: Case
    problems: list[DataError]
    shape: tuple[int, ...] | None = None
    zooms: tuple[float, ...] | None = None
    conditions: dict[str, str] = field(default_factory=dict)
    #: things worth saying that do not make the case bad (the same images as another case)
    warnings: list[str] = field(default_factory=list)
    #: a digest of the images, to find the same scan under two subject ids
    digest: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_label(volume: NiftiVolume, case: Case) -> np.ndarray:
    data = volume.data
    if not np.array_equal(data, np.round(data)):
        raise DataError(volume.path, "label map holds non-integer values (is this an image, not a segmentation?)")
    values = {int(v) for v in np.unique(data)}
    allowed = case.scheme.label_values
    extra = sorted(values - allowed)
    if extra:
        hint = ""
        if case.scheme.name == "BraTS-2023" and extra == [4]:
            hint = "; label 4 is BraTS-2021 enhancing tumour: name the files in 2021 style or remap 4 -> 3"
        raise DataError(
            volume.path,
            f"label values {extra} outside the {case.scheme.name} scheme {sorted(allowed)}{hint}",
        )
    label = data.astype(np.uint8)
    for old, new in case.scheme.label_remap.items():
        label[label == old] = new
    return label


def _check_geometry(reference: NiftiVolume, volume: NiftiVolume, ref_key: str) -> None:
    if volume.data.shape != reference.data.shape:
        raise DataError(
            volume.path,
            f"shape {volume.data.shape} differs from {ref_key}'s {reference.data.shape} ({reference.path.name})",
        )
    diff = float(np.max(np.abs(volume.affine - reference.affine)))
    if diff > AFFINE_TOLERANCE:
        raise DataError(
            volume.path,
            f"affine differs from {ref_key}'s ({reference.path.name}) by up to {diff:.4g} "
            f"(tolerance {AFFINE_TOLERANCE:g}): the files are not co-registered",
        )


def _read_all(case: Case) -> tuple[dict[str, NiftiVolume], list[DataError]]:
    volumes: dict[str, NiftiVolume] = {}
    problems: list[DataError] = []
    if case.unreadable:
        return volumes, [DataError(case.folder, case.unreadable)]
    unmatched = _unmatched_files(case)
    if all(case.paths.get(key) is None for key in KEYS):
        found = f"it holds {', '.join(unmatched[:6])}" if unmatched else "it holds no NIfTI file"
        return volumes, [
            DataError(
                case.folder,
                f"no file named in BraTS 2023 style ({case.subject_id}-t1n.nii.gz, -t1c, "
                f"-t2w, -t2f, -seg) or 2021 style (_t1, _t1ce, _t2, _flair, _seg); {found}; "
                "rename the files so",
            )
        ]
    for key in KEYS:
        path = case.paths.get(key)
        if path is None:
            what = "label map" if key == LABEL_KEY else f"{key} image"
            hint = f" (unmatched files here: {', '.join(unmatched[:4])})" if unmatched else ""
            problems.append(DataError(case.expected_path(key), f"missing {what}{hint}"))
            continue
        try:
            volume = read_nifti(path, allow_constant=key == LABEL_KEY)
            if key == LABEL_KEY:
                volume.data = _check_label(volume, case)
            volumes[key] = volume
        except DataError as exc:
            problems.append(exc)
    ref_key = next((k for k in KEYS if k in volumes), None)
    if ref_key is not None:
        for key, volume in volumes.items():
            if key == ref_key:
                continue
            try:
                _check_geometry(volumes[ref_key], volume, ref_key)
            except DataError as exc:
                problems.append(exc)
    return volumes, problems


def _unmatched_files(case: Case) -> list[str]:
    """NIfTI files in the case folder that no canonical key took (a naming the reader does not know)."""
    taken = {p.name for p in case.paths.values() if p is not None}
    try:
        names = sorted(os.listdir(case.folder))
    except OSError:
        return []
    return [n for n in names if n.endswith((".nii", ".nii.gz")) and n not in taken and not n.startswith(".")]


def _conditions(case, metadata, columns, categories, root) -> dict[str, str]:
    return subject_conditions(metadata, case.subject_id, columns, categories, root=root)


def read_case(
    case: Case,
    metadata: Metadata | None = None,
    columns: Sequence[str] = (),
    categories: Mapping[str, Sequence[str]] | None = None,
) -> LoadedCase:
    """Read and check every file of ``case``; raise the first :class:`DataError` found."""
    volumes, problems = _read_all(case)
    if problems:
        raise problems[0]
    conditions = _conditions(case, metadata, columns, categories, case.folder.parent)
    ref = volumes[MODALITIES[0]]
    return LoadedCase(
        case=case,
        images={k: volumes[k].data for k in MODALITIES},
        label=volumes[LABEL_KEY].data,
        affine=ref.affine,
        zooms=ref.zooms,
        conditions=conditions,
    )


def check_case(
    case: Case,
    metadata: Metadata | None = None,
    columns: Sequence[str] = (),
    categories: Mapping[str, Sequence[str]] | None = None,
) -> CaseReport:
    """Check every file of ``case`` and its metadata row; collect all problems found."""
    volumes, problems = _read_all(case)
    conditions: dict[str, str] = {}
    try:
        conditions = _conditions(case, metadata, columns, categories, case.folder.parent)
    except DataError as exc:
        problems.append(exc)
    ref = next((volumes[k] for k in KEYS if k in volumes), None)
    return CaseReport(
        case=case,
        problems=problems,
        shape=None if ref is None else tuple(ref.data.shape),
        zooms=None if ref is None else ref.zooms,
        conditions=conditions,
        digest=image_digest([volumes[k].data for k in MODALITIES if k in volumes]),
    )


def validate_cohort(
    root: str | os.PathLike,
    columns: Sequence[str] = (),
    categories: Mapping[str, Sequence[str]] | None = None,
    progress=None,
) -> list[CaseReport]:
    """Check every case under ``root``. ``progress(i, n, case)`` is called before each case."""
    root = Path(root)
    cases = discover_cases(root)
    metadata = read_metadata(root)
    reports = []
    for i, case in enumerate(cases):
        if progress is not None:
            progress(i, len(cases), case)
        reports.append(check_case(case, metadata, columns, categories))
    for report, first in duplicate_of([r.digest for r in reports]).items():
        reports[report].warnings.append(same_images_warning(reports[first].case.subject_id))
    return reports


def image_digest(volumes: Sequence[np.ndarray]) -> str | None:
    """A digest of a case's images (None without any), equal for the same scan under two ids."""
    if not volumes:
        return None
    digest = hashlib.blake2b(digest_size=16)
    for volume in volumes:
        digest.update(str(volume.shape).encode())
        digest.update(np.ascontiguousarray(volume).tobytes())
    return digest.hexdigest()


def duplicate_of(digests: Sequence[str | None]) -> dict[int, int]:
    """For each entry whose digest an earlier one has: its index -> the first such index."""
    first: dict[str, int] = {}
    out = {}
    for i, digest in enumerate(digests):
        if digest is None:
            continue
        if digest in first:
            out[i] = first[digest]
        else:
            first[digest] = i
    return out


def same_images_warning(other: str) -> str:
    return (
        f"the same images as case {other}: the same scan under two subject ids leaks between training and test splits; keep one"
    )
