"""torchio subjects from prepared cases, and each arm's training data (transforms, synthetic data)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchio as tio

from augment3d.brats import MODALITIES
from augment3d.data.preprocess import PreparedCase
from augment3d.errors import DataError

from .config import BenchConfig

__all__ = ["to_subject", "classic_augmentation", "arm_transform", "arm_dataset", "pasted_subjects", "voxel_spacing"]


def voxel_spacing(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel sizes in mm along the array axes of an affine."""
    from augment3d.transforms.tumour_bank import spacing_of

    return tuple(float(v) for v in spacing_of(affine))


def to_subject(case: PreparedCase) -> tio.Subject:
    """A torchio subject with images t1n/t1c/t2w/t2f, label map ``seg`` and the case's conditions."""
    images = {
        m: tio.ScalarImage(tensor=torch.from_numpy(np.ascontiguousarray(case.images[i]))[None], affine=case.affine)
        for i, m in enumerate(MODALITIES)
    }
    label = tio.LabelMap(tensor=torch.from_numpy(case.label.astype(np.int64))[None], affine=case.affine)
    return tio.Subject(**images, seg=label, subject_id=case.subject_id, **case.conditions)


def classic_augmentation() -> tio.Compose:
    """A standard torchio stack for [-1, 1] images with background at -1 (each transform p=0.5 or less)."""
    return tio.Compose(
        [
            tio.RandomAffine(scales=0.1, degrees=10, translation=4, default_pad_value="minimum", p=0.5),
            tio.RandomElasticDeformation(num_control_points=6, max_displacement=6, p=0.3),
            tio.RandomBiasField(coefficients=0.3, p=0.3),
            tio.RandomGamma(log_gamma=0.2, p=0.3),
            tio.RandomNoise(std=(0, 0.05), p=0.3),
        ]
    )


def _positive(transform: tio.Transform) -> tio.Compose:
    """Run an intensity transform on [0, 2] instead of [-1, 1] (gamma and bias fields assume >= 0)."""
    return tio.Compose(
        [
            tio.Lambda(lambda x: x + 1, types_to_apply=[tio.INTENSITY]),
            transform,
            tio.Lambda(lambda x: x - 1, types_to_apply=[tio.INTENSITY]),
        ]
    )


def arm_transform(arm: str, config: BenchConfig, generator: str | None, seed: int) -> tio.Transform:
    """Flips for every arm, plus the classic stack and/or the synthetic augmenter."""
    steps: list[tio.Transform] = []
    if "synthetic" in arm and config.synthetic == "augmenter":
        from augment3d import SyntheticAugmenter

        steps.append(
            SyntheticAugmenter(
                generator,
                p=config.synthetic_p,
                condition=config.synthetic_condition,
                psi=config.psi,
                seed=seed,
                keep_matching=config.synthetic_keep_matching,
            )
        )
    steps.append(tio.RandomFlip(axes=(0,), flip_probability=0.5))
    if "classic" in arm:
        steps.append(_positive(classic_augmentation()))
    return tio.Compose(steps)


class PastedDataset(torch.utils.data.ConcatDataset):
    """The real subjects, then the pasted ones; ``paste_counts`` says how the pasting went."""

    def __init__(self, parts, paste_counts: dict):
        super().__init__(parts)
        self.paste_counts = paste_counts


def pasted_subjects(config: BenchConfig, cases: Sequence[PreparedCase], seed: int, folder: Path) -> tuple[list, dict]:
    """The ``real+paste`` arm's fixed cohort: as many subjects as ``real+synthetic`` adds
    (``synthetic_ratio`` x the training cases), each a training case of ``synthetic_condition``
    (the recipients, in turn) with a tumour pasted from the same donors the GAN's label maps come
    from (training cases matching the condition on ``synthetic_maps_matching``, all its columns by
    default). Subject ``i`` of seed ``s`` is placed by ``default_rng([s, i])``; where its recipient
    has no room for the drawn lesion, the next recipients are tried in turn (``moved``), so the arm
    adds as many pasted tumours as ``real+synthetic`` adds tumours. Returns the subjects and the
    counts (pasted; no room: no recipient had room, the subject is kept as it is)."""
    from augment3d import TumourBank, TumourPaste

    condition = config.synthetic_condition
    columns = [k for k in (config.synthetic_maps_matching or condition) if k in condition]
    donors = [c for c in cases if all(c.conditions.get(k) == condition[k] for k in columns)]
    recipients = [c for c in cases if all(c.conditions.get(k) == v for k, v in condition.items())]
    if not recipients:
        raise DataError(None, f"no training case of {condition} to paste tumours into (real+paste)")
    built = TumourBank.from_subjects([to_subject(c) for c in donors])  # the tumour-free ones are left out
    bank = built.save(folder / "tumour_bank")
    paste = TumourPaste(bank, p=1.0, max_tries=500, overlap=config.paste_overlap)  # placement is cheap: try hard
    n = max(1, round(config.synthetic_ratio * len(cases)))
    out, moved, no_room = [], 0, 0
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        for k in range(len(recipients)):
            subject = to_subject(recipients[(i + k) % len(recipients)])
            twin = paste.placement(subject, rng)
            if twin.corner is not None:
                break
        moved += k > 0 and twin.corner is not None
        no_room += twin.corner is None
        subject = twin(subject)
        subject["subject_id"] = f"pasted-{seed}-{i}"
        out.append(subject)
    return out, {
        "pasted": n - no_room,
        "no_room": no_room,
        "moved": moved,
        "donors": len(built.donors),
        "recipients": len(recipients),
    }


def arm_dataset(
    arm: str, config: BenchConfig, cases: Sequence[PreparedCase], generator: str | None, seed: int, folder: Path | None = None
) -> torch.utils.data.Dataset:
    """The training subjects of one arm (a synthetic cohort concatenated in ``cohort`` mode, a pasted
    cohort for the paste arms, whose tumour bank is written into ``folder``)."""
    transform = arm_transform(arm, config, generator, seed)
    real = tio.SubjectsDataset([to_subject(c) for c in cases], transform=transform)
    if "paste" in arm:
        if folder is None:
            raise ValueError("the paste arms need a folder for their tumour bank")
        subjects, counts = pasted_subjects(config, cases, seed, folder)
        return PastedDataset([real, tio.SubjectsDataset(subjects, transform=transform)], counts)
    if "synthetic" not in arm or config.synthetic != "cohort":
        return real
    from augment3d import SyntheticSubjectsDataset

    n = max(1, round(config.synthetic_ratio * len(cases)))
    names = {m: m for m in MODALITIES}
    # the real subjects' attributes only (subject_id, conditions): torchio batches subjects with the same keys
    synthetic = SyntheticSubjectsDataset(
        generator,
        n,
        condition=config.synthetic_condition,
        seed=1_000_000 * (seed + 1),
        psi=config.psi,
        names=names,
        label_key="seg",
        transform=transform,
        attributes=("subject_id", *cases[0].conditions),
        maps_matching=config.synthetic_maps_matching or None,
    )
    return torch.utils.data.ConcatDataset([real, synthetic])
