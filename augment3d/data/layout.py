"""BraTS folder layouts: case discovery under the naming schemes of :mod:`augment3d.brats`.

Both schemes (BraTS 2023+ and BraTS 2021) map onto the canonical keys ``t1n, t1c, t2w, t2f``
(images) and ``seg`` (labels); BraTS 2021's enhancing tumour (4) is read as 3.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..brats import BRATS2023, KEYS, SCHEMES, NamingScheme
from ..errors import DataError

__all__ = ["Case", "discover_cases", "case_file_name"]

NIFTI_EXTENSIONS = (".nii.gz", ".nii")


def case_file_name(subject_id: str, key: str, scheme: NamingScheme = BRATS2023) -> str:
    """The file name of ``key`` for ``subject_id`` under ``scheme`` (gzip-compressed NIfTI)."""
    return f"{subject_id}{scheme.file_suffix(key)}.nii.gz"


@dataclass
class Case:
    """One subject's folder: where each canonical key's file is (``None`` when missing)."""

    subject_id: str
    folder: Path
    scheme: NamingScheme
    paths: dict[str, Path | None]
    #: why the folder could not be read (then ``paths`` are all None)
    unreadable: str | None = None

    @property
    def missing(self) -> list[str]:
        return [key for key in KEYS if self.paths.get(key) is None]

    def expected_path(self, key: str) -> Path:
        return self.folder / case_file_name(self.subject_id, key, self.scheme)


def _strip_extension(name: str) -> str | None:
    for ext in NIFTI_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return None


def _match(stems: dict[str, str], scheme: NamingScheme, subject_id: str, key: str) -> list[str]:
    """File names in the folder that carry ``key`` under ``scheme``; the exact name wins."""
    suffix = scheme.file_suffix(key)
    exact = [name for stem, name in stems.items() if stem == f"{subject_id}{suffix}"]
    if exact:
        return exact
    return [name for stem, name in stems.items() if stem.endswith(suffix)]


def _read_case_folder(folder: Path) -> Case | None:
    try:
        entries = sorted(os.listdir(folder))
    except OSError as exc:
        return Case(
            folder.name,
            folder,
            BRATS2023,
            {key: None for key in KEYS},
            unreadable=f"cannot list the case folder ({exc.strerror or exc})",
        )
    stems = {}
    for entry in entries:
        stem = _strip_extension(entry)
        if stem is not None and not entry.startswith(".") and (folder / entry).is_file():
            stems[stem] = entry
    if not stems:
        return None
    subject_id = folder.name
    best, best_hits = BRATS2023, -1
    for scheme in SCHEMES:
        hits = sum(bool(_match(stems, scheme, subject_id, key)) for key in KEYS)
        if hits > best_hits:
            best, best_hits = scheme, hits
    paths: dict[str, Path | None] = {}
    for key in KEYS:
        names = _match(stems, best, subject_id, key)
        if len(names) > 1:
            raise DataError(folder, f"several files could be the {key} image: {', '.join(names)}")
        paths[key] = folder / names[0] if names else None
    return Case(subject_id=subject_id, folder=folder, scheme=best, paths=paths)


def discover_cases(root: str | os.PathLike) -> list[Case]:
    """Find every case folder under ``root`` (one level down), sorted by subject id.

    Folders without NIfTI files (caches, notes) are ignored. Raises :class:`DataError` when
    ``root`` is not a folder or holds no case at all.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(root, "folder does not exist")
    if not root.is_dir():
        raise DataError(root, "is not a folder (expected a cohort folder in BraTS layout)")
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise DataError(root, f"cannot list the folder ({exc.strerror or exc})") from None
    cases = []
    for entry in entries:
        if entry.is_dir() and not entry.name.startswith("."):
            case = _read_case_folder(entry)
            if case is not None:
                cases.append(case)
    if not cases:
        raise DataError(
            root,
            "no BraTS cases found (expected <case>/<case>-t1n.nii.gz ... or <case>/<case>_t1.nii.gz ... in sub-folders)",
        )
    return cases
