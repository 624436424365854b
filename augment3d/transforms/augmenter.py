"""``SyntheticAugmenter``: a trained generator as a torchio transform.

With probability ``p`` the subject's four images and label map are replaced by a generated
subject, mapped from the model grid into the subject's own space (shape and affine) and
intensity range. The random transform draws a seed and hands over to its deterministic twin,
:class:`SyntheticReplacement`, whose small arguments (checkpoint path and hash, the batch's
seeds, the index in the batch, condition, psi) are what ``subject.get_composed_history()``
replays, to the same tensors.

Example:
    >>> import torchio as tio                                                   # doctest: +SKIP
    >>> augment = tio.Compose([tio.RandomFlip(), SyntheticAugmenter("runs/quick", p=0.3)])  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torchio.transforms.augmentation import RandomTransform
from torchio.transforms.transform import Transform

from ..brats import MODALITIES
from ..data.preprocess import cube_box, to_canonical
from ..synthesis.resampling import resample
from ..errors import DataError
from ..precision import auto_precision
from ..io.checkpoint import checkpoint_hash  # noqa: F401  (re-exported: augment3d.transforms.augmenter.checkpoint_hash)
from ..synthesis.generator_cache import (  # the cache's names stay importable from the augmenter, their old home
    SLOW_GFLOP,  # noqa: F401
    SlowGenerationWarning,
    generate_batch,
    get_generator,  # noqa: F401
    keep_generator,
    one_thread,
    worker_device,
)
from ..io.run_files import generator_mode
from ..pretrained import run_folder
from ..io.subjects import check_file, check_same_shape, label_values, read_voxels, resolve_names
from ..synthesis.sampling import check_precision

__all__ = ["SyntheticAugmenter", "SyntheticReplacement", "SlowGenerationWarning"]


class SyntheticReplacement(Transform):
    """Deterministic twin of :class:`SyntheticAugmenter`: replace a subject with one known synthetic subject.

    Args:
        checkpoint: run folder of the generator.
        checkpoint_sha256: hash of its weights; a changed checkpoint is refused.
        seeds: the seeds of the batch the subject was generated in.
        index: which subject of that batch.
        condition: e.g. ``{"site": "SSA", "grade": "HGG"}`` (``None`` for an unconditional model).
        psi: truncation.
        modalities: canonical key -> subject image name (default: found by name).
        label_key: the label map's name (``None`` leaves labels alone).
        device: where to generate (CPU inside DataLoader workers).
        precision: ``fp32`` or ``bf16`` (generation arithmetic; part of the subject's identity).
    """

    def __init__(
        self,
        checkpoint,
        checkpoint_sha256,
        seeds,
        index,
        condition=None,
        psi=1.0,
        modalities=None,
        label_key="seg",
        device="cpu",
        precision="fp32",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.checkpoint = str(checkpoint)
        self.checkpoint_sha256 = str(checkpoint_sha256)
        self.seeds = [int(s) for s in seeds]
        self.index = int(index)
        self.condition = dict(condition) if condition else None
        self.psi = float(psi)
        self.modalities = dict(modalities) if modalities else None
        self.label_key = label_key
        self.device = device
        self.precision = check_precision(precision)
        self.args_names = [
            "checkpoint",
            "checkpoint_sha256",
            "seeds",
            "index",
            "condition",
            "psi",
            "modalities",
            "label_key",
            "device",
            "precision",
        ]

    def _selected(self, name: str) -> bool:
        return (self.include is None or name in self.include) and (self.exclude is None or name not in self.exclude)

    def apply_transform(self, subject):
        gen = get_generator(self.checkpoint, self.checkpoint_sha256, worker_device(self.device))
        names = {k: v for k, v in resolve_names(subject, self.modalities).items() if self._selected(v)}
        label_name = self.label_key if self.label_key in subject and self._selected(self.label_key) else None
        if gen.takes_labels:  # restyle: new images for the subject's own label map, which stays as it is
            if not names:
                return subject
            if self.label_key not in subject:
                raise DataError(
                    None,
                    f"subject has no label map '{self.label_key}' to render images from "
                    f"(it has {', '.join(sorted(subject.get_images_names()))}); name it with label_key=",
                )
            space = _SubjectSpace.of(subject, names, self.label_key, gen)
            space.write_images(subject, names, self._render(gen, subject, space), keep_outline=True)
            return subject
        if not names and label_name is None:
            return subject
        images, labels = generate_batch(gen, tuple(self.seeds), self.condition, self.psi, self.precision)
        space = _SubjectSpace.of(subject, names, label_name, gen)
        space.write_images(subject, names, images[self.index])
        if label_name is not None:
            space.write_label(subject, label_name, labels[self.index])
        return subject

    def _render(self, gen, subject, space: _SubjectSpace) -> np.ndarray:
        """Images (4, S, S, S) on the model grid for the subject's label map and brain mask."""
        label = subject[self.label_key].data[0].numpy()
        where = getattr(subject[self.label_key], "path", None) or f"subject label map '{self.label_key}'"
        values = label_values(label)
        if 4 in values and 3 not in values:  # BraTS 2021 labels: ET is 4
            label = np.where(label == 4, 3, label)
            values = (values - {4}) | {3}
        if not values <= {0, 1, 2, 3}:
            raise DataError(
                where, f"label values {sorted(values - {0, 1, 2, 3})} are not BraTS classes (0-3; 4 for BraTS 2021's ET)"
            )
        grid_label = np.rint(space.to_grid(label[None].astype(np.float32))[0]).astype(np.uint8)
        grid_mask = space.to_grid(space.mask[None].astype(np.float32))[0] > 0.5
        with one_thread():
            images, _ = gen.generate(
                condition=self.condition,
                seeds=self.seeds[self.index : self.index + 1],
                psi=self.psi,
                precision=self.precision,
                label_maps=(grid_label[None], grid_mask[None]),
            )
        return images[0]


@dataclass
class _SubjectSpace:
    """Where the model grid sits in a subject (as preprocessing put it) and the images' ranges."""

    originals: dict[str, np.ndarray]
    minima: dict[str, float]
    mask: np.ndarray
    affine: np.ndarray
    shape: tuple
    grid_affine: np.ndarray
    grid_shape: tuple
    clip_percentiles: tuple

    @classmethod
    def of(cls, subject, names: dict[str, str], label_name: str | None, gen) -> _SubjectSpace:
        originals = {k: read_voxels(subject, v) for k, v in names.items()}
        check_same_shape(subject, [*names.values(), *([label_name] if label_name else [])])
        reference = subject[next(iter(names.values()))] if names else subject[label_name]
        if label_name is not None:
            check_file(getattr(subject[label_name], "path", None))
        affine, shape = np.asarray(reference.affine, dtype=np.float64), tuple(reference.spatial_shape)
        minima = {k: x.min() for k, x in originals.items()}
        mask = np.zeros(shape, dtype=bool)
        for k, x in originals.items():
            mask |= x != minima[k]
        if not mask.any():
            mask[:] = True
        mask_c, affine_c = to_canonical(mask, affine)
        config = gen.preprocess
        grid_affine = cube_box(mask_c, affine_c, config).grid_affine
        return cls(originals, minima, mask, affine, shape, grid_affine, gen.shape, config.clip_percentiles)

    def to_grid(self, volumes: np.ndarray) -> np.ndarray:
        """(C, ...) subject-space volumes onto the model grid, nearest-neighbour."""
        return resample(volumes, self.affine, self.grid_affine, self.grid_shape, "nearest")

    def write_images(self, subject, names: dict[str, str], image: np.ndarray, keep_outline: bool = False) -> None:
        """Generated images (4, S, S, S) in [-1, 1] -> the subject's space and intensity range;
        ``keep_outline``: the subject's own background stays background (a restyled subject)."""
        warped = resample(image + 1.0, self.grid_affine, self.affine, self.shape, "bilinear") - 1.0
        low, high = self.clip_percentiles
        # the in-brain range from a regular subsample of about 2^15 voxels: within 1% of the
        # range of the exact percentiles (phantom cohort, 160 images), at a fraction of the cost
        inside = np.flatnonzero(self.mask)  # `of` leaves at least one voxel in the mask
        inside = inside[:: max(1, inside.size // 2**15)]
        outside = ~self.mask if keep_outline else None
        for c, key in enumerate(MODALITIES):
            if key not in names:
                continue
            lo, hi = np.percentile(self.originals[key].ravel()[inside], [low, high])
            half = (hi - lo) / 2.0
            values = warped[c] * np.float32(half)
            values += np.float32(lo + half)
            background = warped[c] <= -1.0 + 1e-3
            if outside is not None:
                background |= outside
            np.copyto(values, self.minima[key], where=background, casting="unsafe")
            subject[names[key]].set_data(torch.from_numpy(values.astype(np.float32, copy=False))[None])

    def write_label(self, subject, label_name: str, label: np.ndarray) -> None:
        new = resample(label[None].astype(np.float32), self.grid_affine, self.affine, self.shape, "nearest")[0]
        old = subject[label_name].data
        new_label = torch.from_numpy(np.rint(new).astype(np.int64))[None]
        if (old == 4).any() and not (old == 3).any():
            new_label[new_label == 3] = 4  # the subject uses BraTS 2021 labels
        subject[label_name].set_data(new_label.to(old.dtype))


class SyntheticAugmenter(RandomTransform):
    """With probability ``p``, replace the subject with a generated one (images and label map).

    Args:
        generator: a run folder (or a loaded generator from :func:`augment3d.load_generator`).
        p: probability of replacing a subject.
        condition: ``"subject"`` (read each condition column from the subject's attributes, e.g.
            ``subject["site"]``), a ``dict`` such as ``{"site": "SSA", "grade": "HGG"}`` (columns it
            leaves out come from the subject: ``{"site": "SSA"}`` keeps each subject's grade), or
            ``None`` (draw a condition uniformly for each subject).
        psi: truncation towards the condition's mean (1 = none).
        modalities: canonical key (t1n, t1c, t2w, t2f) -> subject image name; default: found by name
            (BraTS 2023 and 2021 names).
        label_key: the label map's name.
        device: where to generate in the main process (DataLoader workers use the CPU).
        batch_size: subjects generated at once per condition; the rest wait in a small cache.
        precision: ``auto`` (the default: bf16 where the hardware has it, fp32 elsewhere), ``fp32``
            or ``bf16`` generation arithmetic (see :meth:`SyntheticGenerator.generate`); the
            resolved one is
            recorded in the history, so replays match.
        seed: make the draws reproducible (mixed with the DataLoader worker id, so workers differ);
            ``None`` draws from torch's RNG like torchio's own transforms.
        keep_matching: with a ``dict`` condition, leave subjects that already have every value it
            asks for as they are (``condition={"site": "SSA"}`` then restyles only the other sites'
            subjects and keeps the scarce site's real ones).
        **kwargs: torchio ``Transform`` arguments (``include``, ``exclude``, ...).
    """

    def __init__(
        self,
        generator,
        p: float = 0.5,
        condition="subject",
        psi: float = 1.0,
        modalities=None,
        label_key: str = "seg",
        device: str = "cpu",
        batch_size: int = 8,
        seed: int | None = None,
        precision: str = "auto",
        keep_matching: bool = False,
        **kwargs,
    ):
        super().__init__(p=p, **kwargs)
        path = getattr(generator, "path", generator)
        if path is None:
            raise ValueError("the generator must come from a run folder (load_generator(path)) or be a path")
        self.checkpoint = str(run_folder(path))  # a bundled generator's name ("phantom") names its folder
        if generator_mode(self.checkpoint) == "inpaint":
            raise DataError(
                self.checkpoint,
                "is an inpainting generator: it renders lesions into crops of real subjects "
                "(SyntheticGenerator.inpaint), not the whole subjects SyntheticAugmenter swaps in",
            )
        self.checkpoint_sha256 = checkpoint_hash(self.checkpoint)
        if not isinstance(generator, (str, os.PathLike)):
            keep_generator(self.checkpoint, generator)
        if not (condition == "subject" or condition is None or isinstance(condition, Mapping)):
            raise ValueError('condition must be "subject", a dict, or None')
        self.condition = dict(condition) if isinstance(condition, Mapping) else condition
        self.psi, self.modalities, self.label_key = float(psi), modalities, label_key
        self.device, self.batch_size, self.seed = device, int(batch_size), seed
        self.precision = check_precision(auto_precision(precision, device))
        self.keep_matching = bool(keep_matching)
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._queues: dict[tuple, list] = {}
        self._rng: np.random.Generator | None = None
        self._rng_worker: int | None = None
        self.args_names = [
            "checkpoint",
            "condition",
            "psi",
            "modalities",
            "label_key",
            "device",
            "batch_size",
            "seed",
            "precision",
            "keep_matching",
        ]

    def _draw_seed(self) -> int:
        if self.seed is None:
            return self._get_random_seed()
        info = torch.utils.data.get_worker_info()
        worker = -1 if info is None else info.id
        if self._rng is None or self._rng_worker != worker:
            self._rng = np.random.default_rng([int(self.seed), worker + 1])
            self._rng_worker, self._queues = worker, {}
        return int(self._rng.integers(0, 2**31))

    def _condition_for(self, subject, gen) -> dict | None:
        if not gen.conditions:
            return None
        if self.condition is None:
            options = gen.encoder.all_conditions()
            return options[self._draw_seed() % len(options)]
        return gen.encoder.for_subject(subject, self.condition if isinstance(self.condition, dict) else None, self.checkpoint)

    def _already_matches(self, subject) -> bool:
        return (
            self.keep_matching
            and isinstance(self.condition, dict)
            and all(column in subject and str(subject[column]) == str(value) for column, value in self.condition.items())
        )

    def apply_transform(self, subject):
        if self._already_matches(subject):
            return subject
        gen = get_generator(self.checkpoint, self.checkpoint_sha256, worker_device(self.device))
        condition = self._condition_for(subject, gen)
        key = tuple(sorted((condition or {}).items()))
        queue = self._queues.get(key)
        if not queue:
            seeds = [self._draw_seed() for _ in range(self.batch_size)]
            queue = self._queues[key] = [(seeds, i) for i in range(len(seeds))]
        seeds, index = queue.pop(0)
        twin = SyntheticReplacement(
            self.checkpoint,
            self.checkpoint_sha256,
            seeds,
            index,
            condition,
            self.psi,
            self.modalities,
            self.label_key,
            self.device,
            self.precision,
            **self._get_base_args(),
        )
        # the subject is already this transform's copy: apply the twin in place and record it,
        # as calling it would (the recorded twin copies as usual when the history is replayed)
        subject = twin.apply_transform(subject)
        subject.add_transform(twin, twin._get_reproducing_arguments())
        return subject
