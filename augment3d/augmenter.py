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

import contextlib
import os
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchio.transforms.augmentation import RandomTransform
from torchio.transforms.transform import Transform

from .brats import MODALITIES, MODALITY_ALIASES
from .data.preprocess import cube_box, to_canonical
from .resampling import resample
from .errors import CheckpointError, DataError
from .precision import auto_precision
from .pretrained import run_folder
from .sampling import check_precision

__all__ = ["SyntheticAugmenter", "SyntheticReplacement", "SlowGenerationWarning"]

_GENERATORS: dict[tuple, Any] = {}  # path, device -> SyntheticGenerator
_BATCHES: OrderedDict = OrderedDict()
_BATCH_CACHE_SIZE = 8


def _device(device: str) -> str:
    """CUDA cannot be re-initialised in forked DataLoader workers: generate on the CPU there."""
    if torch.device(device).type == "cuda" and torch.utils.data.get_worker_info() is not None:
        return "cpu"
    return device


def checkpoint_hash(path: str | os.PathLike, name: str = "generator") -> str:
    """The SHA-256 of a bundle's weights (a run's generator, a tumour bank), as recorded in its ``<name>.json``."""
    import json

    meta_path = Path(path) / f"{name}.json"
    try:
        return str(json.loads(meta_path.read_text())["weights_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(meta_path, f"missing or not an augment3d {name.replace('_', ' ')} description") from None


#: a generator doing more than this many GFLOP a subject gets a :class:`SlowGenerationWarning` when
#: it is loaded to render on the CPU (the `quick` recipe's does 8.5; `brats_africa_128`'s 2983, which
#: took 42 s a subject at one thread on a 2-core AVX2 CPU, docs/AUGMENTER.md)
SLOW_GFLOP = 100.0


class SlowGenerationWarning(UserWarning):
    """The generator renders on the CPU but is too large for that: seconds to minutes a subject."""


def _warn_if_slow_on_cpu(gen) -> None:
    from .models.generator import render_flops

    gflop = render_flops(gen.network.config) / 1e9
    if gflop <= SLOW_GFLOP:
        return
    worker = torch.utils.data.get_worker_info() is not None
    where = "in a DataLoader worker (where CUDA cannot run)" if worker else "on the CPU"
    warnings.warn(f"the generator of {gen.path} does {gflop:.0f} GFLOP a subject ({'x'.join(map(str, gen.shape))} grid) and "
                  f"renders {where}: seconds to minutes a subject at one thread, and GiBs of memory a process. Generate "
                  f"on a GPU in the main process (device='cuda' with num_workers=0), or write a synthetic cohort once "
                  f"with `augment3d sample --device cuda` and mix it in (docs/AUGMENTER.md, 'Cost')",
                  SlowGenerationWarning, stacklevel=2)


def get_generator(path: str, sha256: str, device: str):
    """The generator of ``path`` for this process, loaded once (lazily) and checked against ``sha256``."""
    from .sampling import load_generator

    key = (str(Path(path).resolve()), device)
    gen = _GENERATORS.get(key)
    if gen is None or gen.meta.get("weights_sha256") != sha256:
        gen = load_generator(path, device)
        if gen.meta.get("weights_sha256") != sha256:
            raise CheckpointError(path, f"generator weights changed since the transform was made (expected {sha256[:12]}..., found {str(gen.meta.get('weights_sha256'))[:12]}...)")
        _GENERATORS[key] = gen
        if gen.device.type == "cpu":
            _warn_if_slow_on_cpu(gen)
    return gen


@contextlib.contextmanager
def one_thread():
    """Generate at one thread, as DataLoader workers do: convolutions then round the same way in
    a worker and in the main process, so a history made in one replays exactly in the other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def generate_batch(gen, seeds: tuple[int, ...], condition: dict | None, psi: float, precision: str = "fp32",
                   maps_matching: tuple[str, ...] | None = None):
    """A whole batch, cached: the twin replays exactly what the batch produced."""
    key = (gen.meta.get("weights_sha256"), str(gen.device), seeds, tuple(sorted((condition or {}).items())), psi,
           precision, maps_matching)
    if key in _BATCHES:
        _BATCHES.move_to_end(key)
        return _BATCHES[key]
    with one_thread():
        result = gen.generate(condition=condition, seeds=list(seeds), psi=psi, batch_size=len(seeds), precision=precision,
                              maps_matching=maps_matching)
    _BATCHES[key] = result
    while len(_BATCHES) > _BATCH_CACHE_SIZE:
        _BATCHES.popitem(last=False)
    return result


def _resolve_names(subject, modalities: Mapping[str, str] | None) -> dict[str, str]:
    names = set(subject.get_images_names())
    out = {}
    for key in MODALITIES:
        if modalities is not None:
            if key in modalities:
                out[key] = modalities[key]
            continue
        found = next((n for n in MODALITY_ALIASES[key] if n in names), None)
        if found is not None:
            out[key] = found
    missing = [v for v in out.values() if v not in names]
    if missing:
        raise DataError(None, f"subject has no image named {', '.join(missing)} (it has {', '.join(sorted(names))})")
    return out


_CHECKED_FILES: OrderedDict = OrderedDict()


def _check_file(path) -> None:
    """Read a subject's NIfTI file strictly once per process (per size and mtime).

    torchio's readers load a truncated or CRC-corrupt .nii.gz without complaint (and hide NaNs);
    the strict reader names the file and the problem.
    """
    if path is None or isinstance(path, (list, tuple)) or not str(path).endswith((".nii", ".nii.gz")):
        return
    try:
        stat = os.stat(path)
    except OSError:
        return  # torchio reports a missing file itself
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _CHECKED_FILES:
        return
    from .data.nifti import read_nifti

    read_nifti(path, allow_constant=True)
    _CHECKED_FILES[key] = True
    while len(_CHECKED_FILES) > 4096:
        _CHECKED_FILES.popitem(last=False)


def _read(subject, name: str) -> np.ndarray:
    """One image's voxels; a damaged file, or NaN/Inf, is a DataError naming the file."""
    image = subject[name]
    where = getattr(image, "path", None) or f"subject image '{name}'"
    _check_file(getattr(image, "path", None))
    try:
        data = image.data[0].numpy()
    except Exception as exc:  # torchio reads lazily: a damaged file fails here
        raise DataError(where, f"cannot read image '{name}' ({exc.__class__.__name__}: {exc})") from None
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise DataError(where, f"image '{name}' has {int((~np.isfinite(data)).sum())} NaN or Inf voxels")
    return data


def _label_values(label: np.ndarray) -> set:
    """The values in a label map: a bincount for small non-negative integers (the usual case,
    about 9x faster than ``np.unique`` on a 64^3 map: 0.35 against 3.1 ms), ``np.unique`` otherwise."""
    if np.issubdtype(label.dtype, np.integer) and label.size and 0 <= label.min() and label.max() < 256:
        return set(np.flatnonzero(np.bincount(label.ravel())).tolist())
    return set(np.unique(label).tolist())


def _check_same_shape(subject, names: list[str]) -> None:
    """The images replaced and the label map must share one grid (they are generated as one)."""
    shapes = {name: tuple(subject[name].spatial_shape) for name in names}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in shapes.items())
        odd = next(name for name in names if shapes[name] != shapes[names[0]])
        where = getattr(subject[odd], "path", None) or f"subject image '{odd}'"
        raise DataError(where, f"the subject's images differ in shape ({listed}); SyntheticAugmenter needs "
                               "co-registered images on one grid (resample them first, e.g. tio.Resample)")


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

    def __init__(self, checkpoint, checkpoint_sha256, seeds, index, condition=None, psi=1.0, modalities=None,
                 label_key="seg", device="cpu", precision="fp32", **kwargs):
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
        self.args_names = ["checkpoint", "checkpoint_sha256", "seeds", "index", "condition", "psi", "modalities",
                           "label_key", "device", "precision"]

    def _selected(self, name: str) -> bool:
        return (self.include is None or name in self.include) and (self.exclude is None or name not in self.exclude)

    def apply_transform(self, subject):
        gen = get_generator(self.checkpoint, self.checkpoint_sha256, _device(self.device))
        names = {k: v for k, v in _resolve_names(subject, self.modalities).items() if self._selected(v)}
        label_name = self.label_key if self.label_key in subject and self._selected(self.label_key) else None
        if gen.takes_labels:  # restyle: new images for the subject's own label map, which stays as it is
            if not names:
                return subject
            if self.label_key not in subject:
                raise DataError(None, f"subject has no label map '{self.label_key}' to render images from "
                                      f"(it has {', '.join(sorted(subject.get_images_names()))}); name it with label_key=")
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
        values = _label_values(label)
        if 4 in values and 3 not in values:  # BraTS 2021 labels: ET is 4
            label = np.where(label == 4, 3, label)
            values = (values - {4}) | {3}
        if not values <= {0, 1, 2, 3}:
            raise DataError(where, f"label values {sorted(values - {0, 1, 2, 3})} are not BraTS classes (0-3; 4 for "
                                   "BraTS 2021's ET)")
        grid_label = np.rint(space.to_grid(label[None].astype(np.float32))[0]).astype(np.uint8)
        grid_mask = space.to_grid(space.mask[None].astype(np.float32))[0] > 0.5
        with one_thread():
            images, _ = gen.generate(condition=self.condition, seeds=self.seeds[self.index : self.index + 1],
                                     psi=self.psi, precision=self.precision,
                                     label_maps=(grid_label[None], grid_mask[None]))
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
        originals = {k: _read(subject, v) for k, v in names.items()}
        _check_same_shape(subject, [*names.values(), *([label_name] if label_name else [])])
        reference = subject[next(iter(names.values()))] if names else subject[label_name]
        if label_name is not None:
            _check_file(getattr(subject[label_name], "path", None))
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

    def __init__(self, generator, p: float = 0.5, condition="subject", psi: float = 1.0, modalities=None,
                 label_key: str = "seg", device: str = "cpu", batch_size: int = 8, seed: int | None = None,
                 precision: str = "auto", keep_matching: bool = False, **kwargs):
        super().__init__(p=p, **kwargs)
        path = getattr(generator, "path", generator)
        if path is None:
            raise ValueError("the generator must come from a run folder (load_generator(path)) or be a path")
        self.checkpoint = str(run_folder(path))  # a bundled generator's name ("phantom") names its folder
        self.checkpoint_sha256 = checkpoint_hash(self.checkpoint)
        if not isinstance(generator, (str, os.PathLike)):
            _GENERATORS[(str(Path(self.checkpoint).resolve()), str(generator.device))] = generator
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
        self.args_names = ["checkpoint", "condition", "psi", "modalities", "label_key", "device", "batch_size", "seed",
                           "precision", "keep_matching"]

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
        values = gen.encoder.check_partial(self.condition, self.checkpoint) if isinstance(self.condition, dict) else {}
        for column in gen.conditions:
            if column in values:
                continue
            if column not in subject:
                raise DataError(None, f"subject has no '{column}' attribute to condition on; add it "
                                      f"(tio.Subject(..., {column}=...)) or fix it in condition={{...}}")
            values[column] = str(subject[column])
        return gen.encoder.check(values, source=f"subject {subject.get('subject_id', '')}".strip())

    def _already_matches(self, subject) -> bool:
        return (self.keep_matching and isinstance(self.condition, dict)
                and all(column in subject and str(subject[column]) == str(value) for column, value in self.condition.items()))

    def apply_transform(self, subject):
        if self._already_matches(subject):
            return subject
        gen = get_generator(self.checkpoint, self.checkpoint_sha256, _device(self.device))
        condition = self._condition_for(subject, gen)
        key = tuple(sorted((condition or {}).items()))
        queue = self._queues.get(key)
        if not queue:
            seeds = [self._draw_seed() for _ in range(self.batch_size)]
            queue = self._queues[key] = [(seeds, i) for i in range(len(seeds))]
        seeds, index = queue.pop(0)
        twin = SyntheticReplacement(self.checkpoint, self.checkpoint_sha256, seeds, index, condition, self.psi,
                                    self.modalities, self.label_key, self.device, self.precision,
                                    **self._get_base_args())
        # the subject is already this transform's copy: apply the twin in place and record it,
        # as calling it would (the recorded twin copies as usual when the history is replayed)
        subject = twin.apply_transform(subject)
        subject.add_transform(twin, twin._get_reproducing_arguments())
        return subject
