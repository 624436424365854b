"""A bank of real tumours to paste into other subjects (:class:`augment3d.TumourPaste`).

Each donor is the box around one subject's tumour, with a margin of healthy tissue: its label
map (BraTS classes 0-3, BraTS-2021's ET 4 read as 3), its four images in the donor's own
intensity scale, its brain mask, its voxel spacing and its conditions (site, grade, ...). Boxes
are stored in RAS+ axis order, so a donor pastes into a recipient of any orientation. A bank is
a folder holding ``tumour_bank.safetensors`` + ``tumour_bank.json``, written atomically like every
other augment3d file and read without unpickling anything::

    bank = TumourBank.from_cohort("cohort", where={"site": "SSA"})
    bank.save("ssa_tumours")
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..brats import MODALITIES, MODALITY_ALIASES
from ..errors import CheckpointError, DataError

__all__ = ["BANK_FILE", "Donor", "TumourBank", "orientation", "spacing_of"]

BANK_FILE = "tumour_bank"
_KIND = "tumour_bank"


@dataclass
class Donor:
    """One donor's tumour box (RAS+ axis order)."""

    subject_id: str
    conditions: dict[str, str]
    spacing: tuple[float, ...]
    label: np.ndarray  # (X, Y, Z) uint8, classes 0-3
    images: np.ndarray  # (4, X, Y, Z) float32, the donor's intensities
    brain: np.ndarray  # (X, Y, Z) bool

    @property
    def voxels(self) -> int:
        return int((self.label > 0).sum())


def reorient(volume: np.ndarray, source, target) -> np.ndarray:
    """A 3D volume, or (C, X, Y, Z) volumes, from one axis orientation to another (nibabel ornt arrays)."""
    import nibabel as nib

    turn = nib.orientations.ornt_transform(source, target)
    if volume.ndim == 4:
        return np.stack([nib.orientations.apply_orientation(v, turn) for v in volume])
    return np.ascontiguousarray(nib.orientations.apply_orientation(volume, turn))


def orientation(affine) -> np.ndarray:
    import nibabel as nib

    return nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))


RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)


def spacing_of(affine) -> np.ndarray:
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(0))


def _to_ras(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, ...]]:
    """A (..., X, Y, Z) volume reoriented to RAS+ axis order, and its spacing in that order."""
    ornt = orientation(affine)
    spacing = spacing_of(affine)
    ras_spacing = [0.0, 0.0, 0.0]
    for axis in range(3):
        ras_spacing[int(ornt[axis, 0])] = float(spacing[axis])
    return reorient(volume, ornt, RAS), tuple(ras_spacing)


def _box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    where = np.argwhere(mask)
    lo, hi = where.min(0) - margin, where.max(0) + 1 + margin
    return tuple(slice(max(0, int(a)), min(int(n), int(b))) for a, b, n in zip(lo, hi, mask.shape))


def _read_label(image, where) -> np.ndarray:
    label = np.rint(image.data[0].numpy()).astype(np.int16)
    values = set(np.unique(label).tolist())
    if 4 in values and 3 not in values:  # BraTS 2021: ET is 4
        label[label == 4] = 3
        values = (values - {4}) | {3}
    if not values <= {0, 1, 2, 3}:
        raise DataError(where, f"label values {sorted(values - {0, 1, 2, 3})} are not BraTS classes (0-3; 4 for BraTS 2021's ET)")
    return label.astype(np.uint8)


def _modality_names(subject) -> list[str]:
    names = set(subject.get_images_names())
    found = [next((n for n in MODALITY_ALIASES[key] if n in names), None) for key in MODALITIES]
    if None in found:
        missing = [key for key, n in zip(MODALITIES, found) if n is None]
        raise DataError(
            None,
            f"subject {subject.get('subject_id', '?')} has no image for {', '.join(missing)} (it has {', '.join(sorted(names))})",
        )
    return [n for n in found if n is not None]


@dataclass
class TumourBank:
    """Donor tumours by index; ``path`` is the folder it was saved to or loaded from."""

    donors: list[Donor]
    margin: int = 3
    path: Path | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.donors)

    @classmethod
    def from_subjects(
        cls,
        subjects: Iterable,
        label_key: str = "seg",
        conditions: Sequence[str] = ("site", "grade"),
        margin: int = 3,
        min_voxels: int = 1,
    ) -> TumourBank:
        """Donors from torchio subjects (four images and a label map ``label_key``); subjects without
        a tumour of at least ``min_voxels`` voxels are left out."""
        donors: list[Donor] = []
        for subject in subjects:
            where = getattr(subject[label_key], "path", None) or f"subject {subject.get('subject_id', '?')}"
            label = _read_label(subject[label_key], where)
            if int((label > 0).sum()) < max(1, min_voxels):
                continue
            names = _modality_names(subject)
            images = np.stack([subject[n].data[0].numpy().astype(np.float32) for n in names])
            if images.shape[1:] != label.shape:
                raise DataError(
                    where,
                    f"the label map ({'x'.join(map(str, label.shape))}) and the images "
                    f"({'x'.join(map(str, images.shape[1:]))}) differ in shape",
                )
            if not np.isfinite(images).all():
                raise DataError(where, "the images have NaN or Inf voxels")
            affine = np.asarray(subject[label_key].affine, dtype=np.float64)
            brain = (images > images.reshape(4, -1).min(1)[:, None, None, None]).any(0) | (label > 0)
            box = _box(label > 0, margin)
            label_ras, spacing = _to_ras(label[box], affine)
            images_ras, _ = _to_ras(images[(slice(None), *box)], affine)
            brain_ras, _ = _to_ras(brain[box], affine)
            donors.append(
                Donor(
                    subject_id=str(subject.get("subject_id", len(donors))),
                    conditions={c: str(subject[c]) for c in conditions if c in subject},
                    spacing=spacing,
                    label=label_ras,
                    images=images_ras,
                    brain=brain_ras,
                )
            )
        if not donors:
            raise DataError(None, "no subject with a tumour to put in the bank")
        return cls(donors, margin)

    @classmethod
    def from_cohort(
        cls, root: str | os.PathLike, where: Mapping[str, str] | None = None, margin: int = 3, min_voxels: int = 1
    ) -> TumourBank:
        """Donors from a cohort folder in BraTS layout; ``where={"site": "SSA"}`` keeps the cases whose
        metadata.csv row matches."""
        import torchio as tio

        from ..data import discover_cases, read_metadata

        metadata = read_metadata(root)
        rows = metadata.rows if metadata is not None else {}
        if where and metadata is None:
            raise DataError(Path(root) / "metadata.csv", f"missing, but where= asks for {dict(where)}")
        subjects = []
        for case in discover_cases(root):
            row = rows.get(case.subject_id, {})
            if where and any(row.get(k) != v for k, v in where.items()):
                continue
            if case.unreadable or case.missing:
                raise DataError(case.folder, case.unreadable or f"missing {', '.join(case.missing)}")
            subjects.append(
                tio.Subject(
                    **{k: tio.ScalarImage(case.paths[k]) for k in MODALITIES},
                    seg=tio.LabelMap(case.paths["seg"]),
                    subject_id=case.subject_id,
                    **{k: v for k, v in row.items() if k != "subject_id"},
                )
            )
        if not subjects:
            raise DataError(root, f"no case{' matching ' + str(dict(where)) if where else ''} to build a bank from")
        return cls.from_subjects(subjects, margin=margin, min_voxels=min_voxels)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the bank (safetensors + JSON, each atomically) into ``folder``."""
        from ..io.checkpoint import save_bundle

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for i, d in enumerate(self.donors):
            tensors[f"{i}.label"] = torch.from_numpy(d.label)
            tensors[f"{i}.images"] = torch.from_numpy(d.images)
            tensors[f"{i}.brain"] = torch.from_numpy(d.brain.astype(np.uint8))
        meta = {
            "margin": self.margin,
            "axes": "RAS",
            "label_classes": [0, 1, 2, 3],
            "donors": [
                {
                    "subject_id": d.subject_id,
                    "conditions": d.conditions,
                    "spacing": list(d.spacing),
                    "shape": list(d.label.shape),
                    "voxels": d.voxels,
                }
                for d in self.donors
            ],
        }
        save_bundle(folder, BANK_FILE, _KIND, tensors, meta)
        self.path = folder
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> TumourBank:
        """Read a saved bank. Raises :class:`CheckpointError` naming the file for anything damaged."""
        from ..io.checkpoint import load_bundle

        folder = Path(folder)
        tensors, meta = load_bundle(folder, BANK_FILE, _KIND)
        where = folder / f"{BANK_FILE}.json"
        try:
            donors = []
            for i, d in enumerate(meta["donors"]):
                label = tensors[f"{i}.label"].numpy()
                images = tensors[f"{i}.images"].numpy()
                brain = tensors[f"{i}.brain"].numpy().astype(bool)
                shape = tuple(int(s) for s in d["shape"])
                if label.shape != shape or images.shape != (4, *shape) or brain.shape != shape:
                    raise CheckpointError(
                        folder / f"{BANK_FILE}.safetensors",
                        f"donor {i}'s arrays do not have the shape {shape} its description gives",
                    )
                if label.dtype != np.uint8 or label.max(initial=0) > 3 or not np.isfinite(images).all():
                    raise CheckpointError(
                        folder / f"{BANK_FILE}.safetensors", f"donor {i} has labels outside 0-3 or non-finite images"
                    )
                donors.append(
                    Donor(
                        str(d["subject_id"]),
                        {str(k): str(v) for k, v in d["conditions"].items()},
                        tuple(float(s) for s in d["spacing"]),
                        label,
                        images.astype(np.float32),
                        brain,
                    )
                )
            margin = int(meta["margin"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(where, f"not a tumour bank description ({exc.__class__.__name__}: {exc})") from None
        if not donors:
            raise CheckpointError(where, "holds no donor")
        return cls(donors, margin, path=folder)
