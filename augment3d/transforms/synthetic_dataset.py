"""``SyntheticSubjectsDataset``: a fixed synthetic cohort as torchio subjects, for ratio mixing.

Example:
    >>> import torch, torchio as tio                                             # doctest: +SKIP
    >>> synthetic = SyntheticSubjectsDataset("runs/quick", n=40, condition={"site": "SSA", "grade": "HGG"})  # doctest: +SKIP
    >>> mixed = torch.utils.data.ConcatDataset([real_dataset, synthetic])       # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..io.checkpoint import checkpoint_hash
from ..synthesis.generator_cache import generate_batch, get_generator, worker_device
from ..brats import MODALITIES
from ..data.preprocess import cube_box, to_canonical
from ..synthesis.resampling import resample
from ..precision import auto_precision
from ..pretrained import run_folder
from ..synthesis.sampling import check_precision

__all__ = ["SyntheticSubjectsDataset"]


class SyntheticSubjectsDataset(torch.utils.data.Dataset):
    """``n`` generated subjects; subject ``i`` is seed ``seed + i`` and never changes.

    Args:
        generator: a run folder, a bundled generator's name (``"phantom"``, :mod:`augment3d.pretrained`)
            or a generator from :func:`augment3d.load_generator`.
        n: number of subjects.
        condition: a condition dict, or ``None`` to cycle through every condition; a dict that
            fixes only some columns (``{"site": "SSA"}``) cycles through the others' values.
        seed: seed of subject 0.
        psi: truncation.
        names: canonical key -> image name in the subjects (default the canonical keys).
        label_key: the label map's name.
        transform: a torchio transform applied to each subject (e.g. the same preprocessing as the
            real subjects, so shapes match for batching).
        batch_size: subjects generated at once.
        device: where to generate (the CPU inside DataLoader workers).
        precision: ``auto`` (the default: bf16 where the hardware has it, fp32 elsewhere), ``fp32``
            or ``bf16`` generation (see :meth:`SyntheticGenerator.generate`).
        conditions_from: columns ``condition`` leaves open: ``balanced`` (every combination in
            turn, the default) or ``cohort`` (drawn from each subject's seed in the training
            cohort's proportions, as ``augment3d sample`` does).
        reference: a torchio image or subject (its first image): every synthetic subject is put on
            that image's grid (shape and affine), where preprocessing would place its brain, so
            ``ConcatDataset([real, synthetic])`` batches without a resize.
        attributes: the non-image attributes each subject carries, by name: ``None`` (the
            default) for ``subject_id``, ``seed`` and the condition columns, or a subset of
            them. torchio batches only subjects with the same keys, so give the ones the real
            subjects of a ``ConcatDataset`` have (e.g. ``("subject_id", "site", "grade")``).
        maps_matching: labels-to-images runs: the condition columns a subject's training label
            map shares with its condition. ``None`` (the default): all of them, so an SSA subject
            renders a deformed SSA map; ``("grade",)``: any site's map of the subject's grade, so
            the well-resourced site's tumours are rendered as the scarce site.

    Subjects are on the model grid with an isotropic affine of the training data's voxel size and
    carry their condition as attributes plus ``subject_id`` and ``seed`` (see ``attributes``).
    """

    def __init__(
        self,
        generator,
        n: int,
        condition: Mapping[str, str] | None = None,
        seed: int = 0,
        psi: float = 1.0,
        names: Mapping[str, str] | None = None,
        label_key: str = "seg",
        transform=None,
        batch_size: int = 8,
        device: str = "cpu",
        precision: str = "auto",
        conditions_from: str = "balanced",
        reference=None,
        attributes: Sequence[str] | None = None,
        maps_matching: Sequence[str] | None = None,
    ):
        path = getattr(generator, "path", generator)
        self.checkpoint = str(run_folder(path))  # a bundled generator's name ("phantom") names its folder
        self.checkpoint_sha256 = checkpoint_hash(self.checkpoint)
        if n < 1:
            raise ValueError("n must be at least 1")
        self.n, self.seed, self.psi = int(n), int(seed), float(psi)
        self.condition = dict(condition) if condition is not None else None
        self.names = {k: (names or {}).get(k, k) for k in MODALITIES}
        self.label_key, self.transform = label_key, transform
        self.batch_size, self.device = int(batch_size), device
        self.precision = check_precision(auto_precision(precision, device))
        if conditions_from not in ("balanced", "cohort"):
            raise ValueError(f"conditions_from must be 'balanced' or 'cohort', got {conditions_from!r}")
        self.conditions_from = conditions_from
        self.reference = _reference_grid(reference)
        if attributes is not None and (isinstance(attributes, str) or not all(isinstance(a, str) for a in attributes)):
            raise ValueError(f"attributes must be a list of names, got {attributes!r}")
        self.attributes = None if attributes is None else tuple(attributes)
        if maps_matching is not None and (isinstance(maps_matching, str) or not all(isinstance(c, str) for c in maps_matching)):
            raise ValueError(f"maps_matching must be a list of condition columns, got {maps_matching!r}")
        self.maps_matching = None if maps_matching is None else tuple(maps_matching)

    def __len__(self) -> int:
        return self.n

    def _condition(self, gen, index: int):
        if not gen.conditions:
            return None
        if self.conditions_from == "cohort":
            from ..synthesis.cohort import draw_condition

            return draw_condition(gen, self.seed + index, self.condition or {}, "cohort")
        options = gen.encoder.matching(self.condition or {}, source=self.checkpoint)
        return options[index % len(options)]

    def __getitem__(self, index: int):
        import torchio as tio

        if not 0 <= index < self.n:
            raise IndexError(index)
        gen = get_generator(self.checkpoint, self.checkpoint_sha256, worker_device(self.device))
        condition = self._condition(gen, index)
        # subjects of one condition are generated together in fixed batches
        same = [i for i in range(self.n) if self._condition(gen, i) == condition]
        pos = same.index(index)
        start = pos - pos % self.batch_size
        batch = same[start : start + self.batch_size]
        images, labels = generate_batch(
            gen, tuple(self.seed + i for i in batch), condition, self.psi, self.precision, self.maps_matching
        )
        k = batch.index(index)
        image, label, affine = images[k], labels[k], gen.affine
        if self.reference is not None:
            image, label, affine = self._on_reference(gen, image, label)
        fields: dict[str, tio.Image] = {
            self.names[m]: tio.ScalarImage(tensor=torch.from_numpy(np.ascontiguousarray(image[c])[None]), affine=affine)
            for c, m in enumerate(MODALITIES)
        }
        fields[self.label_key] = tio.LabelMap(tensor=torch.from_numpy(label[None].astype(np.int64)), affine=affine)
        subject = tio.Subject(**fields, **self._attributes(gen, index, condition))
        return self.transform(subject) if self.transform is not None else subject

    def _attributes(self, gen, index: int, condition) -> dict:
        every = {"subject_id": f"synthetic-{self.seed + index}", "seed": self.seed + index, **(condition or {})}
        if self.attributes is None:
            return every
        unknown = [a for a in self.attributes if a not in ("subject_id", "seed", *gen.conditions)]
        if unknown:
            raise ValueError(
                f"attributes {unknown} are none of subject_id, seed or the run's condition columns "
                f"({', '.join(gen.conditions) or 'none'})"
            )
        return {a: every[a] for a in self.attributes if a in every}

    def _on_reference(self, gen, image: np.ndarray, label: np.ndarray):
        """Images (background -1) and labels from the model grid onto the reference image's grid."""
        affine, shape, mask = self.reference
        mask_c, affine_c = to_canonical(mask, affine)
        grid_affine = cube_box(mask_c, affine_c, gen.preprocess).grid_affine
        placed = resample(image + 1.0, grid_affine, affine, shape, "bilinear") - 1.0
        placed_label = np.rint(resample(label[None].astype(np.float32), grid_affine, affine, shape, "nearest")[0])
        return placed.astype(np.float32), placed_label.astype(np.uint8), affine


def _reference_grid(reference):
    """(affine, shape, brain mask) of a torchio image or subject's first image; None stays None."""
    if reference is None:
        return None
    image = reference.get_first_image() if hasattr(reference, "get_first_image") else reference
    data = image.data[0].numpy()
    mask = data > data.min()
    return np.asarray(image.affine, dtype=np.float64), tuple(image.spatial_shape), mask if mask.any() else np.ones_like(mask)
