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

__all__ = [
    "to_subject",
    "classic_augmentation",
    "arm_transform",
    "arm_dataset",
    "placed_subjects",
    "placing_examples",
    "placing_kind",
    "voxel_spacing",
]


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


class PlacedDataset(torch.utils.data.ConcatDataset):
    """The real subjects, then the ones a tumour was placed into; ``counts`` says how the placing went
    and ``kind`` by what (``paste`` or ``inpaint``)."""

    def __init__(self, parts, kind: str, counts: dict):
        super().__init__(parts)
        self.kind, self.counts = kind, counts


def placing_kind(arm: str) -> str | None:
    """``paste`` or ``inpaint`` for the arms that add subjects with a placed tumour, else None."""
    return next((k for k in ("paste", "inpaint") if k in arm.split("+")), None)


def _placer(config: BenchConfig, cases: Sequence[PreparedCase], folder: Path, kind: str, inpainter: str | None):
    """(the placing transform, its recipients, donors) of a paste or inpaint arm (:func:`placed_subjects`)."""
    from augment3d import TumourBank, TumourInpainter, TumourPaste

    condition = config.synthetic_condition
    columns = [k for k in (config.synthetic_maps_matching or condition) if k in condition]
    donors = [c for c in cases if all(c.conditions.get(k) == condition[k] for k in columns)]
    recipients = [c for c in cases if all(c.conditions.get(k) == v for k, v in condition.items())]
    if not recipients:
        raise DataError(None, f"no training case of {condition} to place tumours into (real+{kind})")
    built = TumourBank.from_subjects([to_subject(c) for c in donors])  # the tumour-free ones are left out
    bank = built.save(folder / "tumour_bank")
    # placement is cheap: try hard
    if kind == "paste":
        return TumourPaste(bank, p=1.0, max_tries=500, overlap=config.paste_overlap), recipients, built.donors
    if inpainter is None:
        raise ValueError("the inpaint arms need an inpainting run")
    place = TumourInpainter(
        inpainter,
        bank,
        p=1.0,
        grow=config.inpaint_grow,
        margin=config.inpaint_margin,
        psi=config.psi,
        max_tries=500,
        overlap=config.paste_overlap,
        precision=config.inpaint_precision,
    )
    return place, recipients, built.donors


def placed_subjects(
    config: BenchConfig,
    cases: Sequence[PreparedCase],
    seed: int,
    folder: Path,
    kind: str = "paste",
    inpainter: str | None = None,
) -> tuple[list, dict]:
    """The fixed cohort of the ``real+paste`` (``kind = "paste"``) or ``real+inpaint`` arm: as many
    subjects as ``real+synthetic`` adds (``synthetic_ratio`` x the training cases), each a training
    case of ``synthetic_condition`` (the recipients, in turn) with a tumour placed from the same
    donors the GAN's label maps come from (training cases matching the condition on
    ``synthetic_maps_matching``, all its columns by default): pasted with the donor's intensities
    (:class:`~augment3d.TumourPaste`), or rendered there by the inpainting run ``inpainter``
    (:class:`~augment3d.TumourInpainter`, under the recipient's condition, the lesion grown by
    ``inpaint_grow`` voxels with ``inpaint_margin`` of soft edge). Subject ``i`` of seed ``s`` is
    placed by ``default_rng([s, i])``; where its recipient has no room for the drawn lesion (an
    inpainted one must also fit the generator's crop), the next recipients are tried in turn
    (``moved``), so the arm adds as many tumours as ``real+synthetic`` adds. Returns the subjects and
    the counts (placed; no room: no recipient had room, the subject is kept as it is). Raises
    DataError when no subject had room (e.g. an inpainting crop too small for the lesions)."""
    from augment3d.transforms.tumour_paste import placements

    place, recipients, donors = _placer(config, cases, folder, kind, inpainter)
    n = max(1, round(config.synthetic_ratio * len(cases)))
    out, moved, no_room = [], 0, 0
    for i, (subject, twin, was_moved) in enumerate(placements(place, [to_subject(c) for c in recipients], n, seed)):
        moved += was_moved
        no_room += twin.corner is None
        subject = twin(subject)
        subject["subject_id"] = f"{'pasted' if kind == 'paste' else 'inpainted'}-{seed}-{i}"
        out.append(subject)
    if no_room == n:
        raise DataError(
            inpainter if kind == "inpaint" else None,
            f"no recipient had room for any of the {len(donors)} donors' lesions (real+{kind})"
            + (
                ": the lesions with their edge do not fit the generator's crop (a larger [model] crop, or a "
                "smaller inpaint_grow / inpaint_margin)"
                if kind == "inpaint"
                else ""
            ),
        )
    return out, {
        "pasted" if kind == "paste" else "inpainted": n - no_room,
        "no_room": no_room,
        "moved": moved,
        "donors": len(donors),
        "recipients": len(recipients),
    }


def placing_examples(config: BenchConfig, cases: Sequence[PreparedCase], folder: Path, inpainter: str, n: int = 2):
    """``n`` (recipient, the lesion pasted, the same lesion inpainted, the lesion's label map) of the
    inpaint arm's seed 0 (its first subjects), for a montage."""
    from augment3d import TumourPaste
    from augment3d.transforms.tumour_paste import TumourPlacement, placements

    place, recipients, _ = _placer(config, cases, folder, "inpaint", inpainter)
    margin = TumourPaste(place.bank).margin  # pasted as the paste arm pastes (its soft shell)
    examples = []
    for subject, twin, _ in placements(place, [to_subject(c) for c in recipients], n, 0):
        if twin.corner is None:
            continue
        pasted = TumourPlacement(twin.bank, twin.bank_sha256, twin.donor, twin.flips, twin.corner, margin)(subject)
        inpainted = twin(subject)
        lesion = inpainted["seg"].numpy()[0] * (subject["seg"].numpy()[0] == 0)
        examples.append((subject, pasted, inpainted, lesion))
    return examples


def arm_dataset(
    arm: str, config: BenchConfig, cases: Sequence[PreparedCase], generator: str | None, seed: int, folder: Path | None = None
) -> torch.utils.data.Dataset:
    """The training subjects of one arm (a synthetic cohort concatenated in ``cohort`` mode, a cohort
    with placed tumours for the paste and inpaint arms, whose tumour bank is written into ``folder``;
    ``generator`` is the inpainting run for the inpaint arms)."""
    kind = placing_kind(arm)
    transform = arm_transform(arm, config, None if kind else generator, seed)
    real = tio.SubjectsDataset([to_subject(c) for c in cases], transform=transform)
    if kind is not None:
        if folder is None:
            raise ValueError(f"the {kind} arms need a folder for their tumour bank")
        subjects, counts = placed_subjects(config, cases, seed, folder, kind, generator)
        return PlacedDataset([real, tio.SubjectsDataset(subjects, transform=transform)], kind, counts)
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
