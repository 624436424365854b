"""Tumour copy-paste (TumorCP / CarveMix style): a real tumour from a bank, placed into another subject.

:class:`TumourPaste` is a torchio ``RandomTransform``: with probability ``p`` it draws a donor
from a :class:`~augment3d.transforms.tumour_bank.TumourBank`, flips it at random, resamples it into the
recipient's voxel grid and looks for a place where the whole lesion lies inside the recipient's
brain and clear of the recipient's own tumour (by ``margin`` voxels; ``overlap=True`` lets it
cover part of that tumour), trying at most
``max_tries`` positions. Where it fits, :class:`TumourPlacement` (the deterministic twin, replayed
by ``get_composed_history()``) writes it:

* intensities: per modality, the donor's voxels mapped linearly so that the healthy tissue around
  the donor's lesion (a shell of ``margin`` voxels) gets the mean and spread of the recipient's
  tissue under that shell (the boundary fit GliGAN uses), never below the recipient's in-brain
  minimum and never above the brightest the donor's brain maps to;
* composite: weight 1 on the lesion, falling linearly to 0 over ``margin`` voxels around it (a
  distance-weighted soft mask, as CarveMix does), 0 outside the recipient's brain and on the
  recipient's own tumour;
* labels: the donor's classes on the donor's lesion voxels, in the recipient's convention (ET 3,
  or 4 where the recipient's map is BraTS 2021's).

Every voxel outside the lesion dilated by ``margin`` keeps its exact value. A subject with no room
passes through unchanged; ``no_room`` counts them in this process (``TumourPlacement`` with
``corner=None`` in the subject's history says so wherever it ran).
"""

from __future__ import annotations

from collections.abc import Sequence

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torchio.transforms.augmentation import RandomTransform
from torchio.transforms.transform import Transform

from .seeded_twin import SeededTwin

from ..brats import MODALITIES
from ..io.checkpoint import checkpoint_hash
from ..io.subjects import label_values, read_voxels, resolve_names
from ..errors import CheckpointError, DataError
from .tumour_bank import BANK_FILE, RAS, TumourBank, reorient, orientation, spacing_of

__all__ = [
    "TumourPaste",
    "TumourPlacement",
    "cached_bank",
    "donor_in_grid",
    "find_room",
    "placements",
    "recipient",
    "with_lesion",
]

_BANKS: OrderedDict = OrderedDict()


def cached_bank(path: str, sha256: str) -> TumourBank:
    """The bank at ``path``, loaded once per process; a bank whose weights changed is refused."""
    key = (str(Path(path).resolve()), sha256)
    if key not in _BANKS:
        if checkpoint_hash(path, BANK_FILE) != sha256:
            raise CheckpointError(Path(path) / f"{BANK_FILE}.safetensors", "changed since the transform was made")
        _BANKS[key] = TumourBank.load(path)
        while len(_BANKS) > 4:
            _BANKS.popitem(last=False)
    return _BANKS[key]


def donor_in_grid(bank: TumourBank, donor: int, flips: tuple[bool, ...], affine) -> tuple[np.ndarray, ...]:
    """The donor's label, images and brain in the recipient's axis order and voxel size."""
    from scipy import ndimage

    d = bank.donors[donor]
    label, images, brain = d.label, d.images, d.brain
    for axis, flip in enumerate(flips):  # flips in RAS space: left-right, front-back, up-down
        if flip:
            label, images, brain = np.flip(label, axis), np.flip(images, axis + 1), np.flip(brain, axis)
    target = orientation(affine)
    label, images, brain = (reorient(np.ascontiguousarray(v), RAS, target) for v in (label, images, brain))
    donor_spacing = np.array([d.spacing[int(target[i, 0])] for i in range(3)])
    zoom = donor_spacing / spacing_of(affine)
    if np.allclose(zoom, 1.0, atol=1e-3):
        return label, images, brain
    shape = np.maximum(1, np.rint(np.array(label.shape) * zoom)).astype(int)
    factors = shape / np.array(label.shape)
    label = ndimage.zoom(label, factors, order=0, mode="nearest", grid_mode=True)
    brain = ndimage.zoom(brain.astype(np.uint8), factors, order=0, mode="nearest", grid_mode=True) > 0
    images = np.stack([ndimage.zoom(v, factors, order=1, mode="nearest", grid_mode=True) for v in images])
    return label, images.astype(np.float32), brain


def recipient(subject, names: dict[str, str], label_key: str):
    """The subject's label map, images (by canonical key), brain mask and affine, checked (one grid, BraTS labels)."""
    if label_key not in subject:
        raise DataError(None, f"subject has no label map '{label_key}' (it has {', '.join(sorted(subject.get_images_names()))})")
    label_image = subject[label_key]
    where = getattr(label_image, "path", None) or f"subject label map '{label_key}'"
    label = label_image.data[0].numpy()
    images = {key: read_voxels(subject, name) for key, name in names.items()}
    shapes = {tuple(v.shape) for v in images.values()} | {tuple(label.shape)}
    if len(shapes) > 1:
        raise DataError(
            where,
            f"the subject's images and label map differ in shape ({sorted(shapes)}); TumourPaste "
            "needs them on one grid (resample them first, e.g. tio.Resample)",
        )
    values = label_values(label)
    if not values <= {0, 1, 2, 3, 4}:
        raise DataError(
            where, f"label values {sorted(values - {0, 1, 2, 3, 4})} are not BraTS classes (0-3; 4 for BraTS 2021's ET)"
        )
    brain = np.zeros(label.shape, bool)
    for v in images.values():
        brain |= v > v.min()
    return label, images, brain | (label > 0), np.asarray(label_image.affine)


def with_lesion(label: np.ndarray, d_label: np.ndarray, corner) -> np.ndarray:
    """``label`` with the donor's classes written on the donor's lesion voxels at ``corner``, in the
    recipient's convention (ET 3, or 4 where the recipient's map is BraTS 2021's)."""
    et = 4 if 4 in label_values(label) else 3
    new_label = label.copy()
    box = tuple(slice(c, c + n) for c, n in zip(corner, d_label.shape))
    written = np.where(d_label == 3, et, d_label).astype(label.dtype)
    lesion = d_label > 0
    new_label[box][lesion] = written[lesion]
    return new_label


def find_room(
    bank: TumourBank,
    subject,
    names,
    label_key: str,
    rng: np.random.Generator,
    flip: bool,
    overlap: bool,
    margin: int,
    max_tries: int,
):
    """(donor, flips, corner, lesion) drawn with ``rng`` in this order: a donor of the bank, its
    flips, and a place where its whole lesion lies in the subject's brain and (without ``overlap``)
    ``margin`` voxels clear of the subject's tumour (``corner`` None: none in ``max_tries`` tries);
    ``lesion`` is the donor's lesion in its box on the subject's grid."""
    from scipy import ndimage

    donor = int(rng.integers(len(bank)))
    flips = tuple(bool(f) for f in (rng.random(3) < 0.5)) if flip else (False, False, False)
    label, _, brain, affine = recipient(subject, names, label_key)
    lesion = donor_in_grid(bank, donor, flips, affine)[0] > 0
    blocked = ~brain
    if (label > 0).any() and not overlap:
        blocked |= ndimage.binary_dilation(label > 0, iterations=margin)
    room = np.array(label.shape) - np.array(lesion.shape)
    if (room >= 0).all():
        for _ in range(max_tries):
            start = tuple(int(rng.integers(r + 1)) for r in room)
            box = tuple(slice(a, a + n) for a, n in zip(start, lesion.shape))
            if not blocked[box][lesion].any():
                return donor, flips, start, lesion
    return donor, flips, None, lesion


class TumourPlacement(Transform):
    """Deterministic twin of :class:`TumourPaste`: paste donor ``donor`` of the bank, flipped by
    ``flips`` (RAS axes), with its box's first voxel at ``corner`` of the recipient (``None``: no
    room was found, the subject passes through)."""

    def __init__(
        self,
        bank,
        bank_sha256,
        donor,
        flips=(False, False, False),
        corner=None,
        margin=3,
        modalities=None,
        label_key="seg",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.bank = str(bank)
        self.bank_sha256 = str(bank_sha256)
        self.donor = int(donor)
        self.flips = tuple(bool(f) for f in flips)
        self.corner = None if corner is None else tuple(int(c) for c in corner)
        self.margin = int(margin)
        self.modalities = dict(modalities) if modalities else None
        self.label_key = label_key
        self.args_names = ["bank", "bank_sha256", "donor", "flips", "corner", "margin", "modalities", "label_key"]

    def apply_transform(self, subject):
        if self.corner is None:
            return subject
        from scipy import ndimage

        names = resolve_names(subject, self.modalities)
        label, images, brain, affine = recipient(subject, names, self.label_key)
        d_label, d_images, d_brain = donor_in_grid(cached_bank(self.bank, self.bank_sha256), self.donor, self.flips, affine)
        box = tuple(slice(c, c + n) for c, n in zip(self.corner, d_label.shape))
        if any(s.stop > n or s.start < 0 for s, n in zip(box, label.shape)):
            raise DataError(None, f"the placement {self.corner} does not fit a {'x'.join(map(str, label.shape))} subject")
        lesion = d_label > 0
        distance = ndimage.distance_transform_edt(~lesion)
        weight = 1.0 - distance / (self.margin + 1)  # 1 on the lesion, falling to 1/(margin+1) at `margin` voxels
        # the recipient's own tumour keeps its voxels outside the donor's lesion (labels and images agree)
        weight[(distance > self.margin) | ~brain[box] | (label[box] > 0)] = 0.0
        weight[lesion] = 1.0
        changed = weight > 0
        shell = ~lesion & (distance <= self.margin) & d_brain & brain[box] & (label[box] == 0)
        for key, name in names.items():
            k = MODALITIES.index(key)
            target = images[key]
            here = target[box].astype(np.float64)
            inside = target[brain]
            donor = d_images[k].astype(np.float64)
            if shell.sum() >= 8 and donor[shell].std() > 1e-6:
                scale = here[shell].std() / donor[shell].std()
                mapped = (donor - donor[shell].mean()) * scale + here[shell].mean()
            else:  # too little healthy tissue around the lesion to fit: match the brain's statistics
                mapped = (donor - donor[d_brain].mean()) / max(donor[d_brain].std(), 1e-6) * inside.std() + inside.mean()
            # never darker than the recipient's brain (no background inside it); as bright as the donor's
            # lesion is against its own tissue (a healthy recipient has nothing as bright as a tumour)
            mapped = np.clip(mapped, inside.min(), max(inside.max(), mapped[d_brain].max()))
            blended = weight * mapped + (1.0 - weight) * here
            out = target.copy()
            region = out[box]
            if np.issubdtype(out.dtype, np.integer):
                blended = np.rint(blended)
            region[changed] = blended[changed].astype(out.dtype)
            subject[name].set_data(torch.from_numpy(out[None]))
        subject[self.label_key].set_data(torch.from_numpy(with_lesion(label, d_label, self.corner)[None]))
        return subject


class TumourPaste(SeededTwin, RandomTransform):
    """Paste a real tumour from a bank into the subject (see the module docstring).

    Args:
        bank: a saved :class:`~augment3d.transforms.tumour_bank.TumourBank` (its folder, or the bank itself
            once saved).
        p: probability of pasting into a subject.
        margin: voxels of soft blending around the lesion, and of clearance from the recipient's
            own tumour.
        flip: flip the donor at random along each axis.
        max_tries: positions tried before the subject passes through unchanged.
        overlap: let the pasted lesion overlap the recipient's own tumour (its labels and images
            win where they overlap; the recipient's tumour elsewhere stays exactly as it was), for
            small grids where a second tumour clear of the first does not fit.
        modalities: canonical key -> subject image name (default: found by name, as
            :class:`~augment3d.SyntheticAugmenter` does).
        label_key: the label map's name.
        seed: draws from this seed (per DataLoader worker) instead of torch's global generator.

    Example:
        >>> transform = tio.Compose([tio.RandomFlip(), TumourPaste("ssa_tumours", p=0.5)])  # doctest: +SKIP
    """

    def __init__(
        self,
        bank,
        p: float = 0.5,
        margin: int = 3,
        flip: bool = True,
        max_tries: int = 50,
        overlap: bool = False,
        modalities=None,
        label_key: str = "seg",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(p=p, **kwargs)
        path = getattr(bank, "path", bank)
        if path is None:
            raise ValueError("save the bank first (bank.save(folder)): workers load it from its folder")
        self.bank = str(path)
        self.bank_sha256 = checkpoint_hash(self.bank, BANK_FILE)
        cached_bank(self.bank, self.bank_sha256)  # a damaged bank fails here, not in a worker (cached per process)
        if max_tries < 1 or margin < 1:
            raise ValueError("max_tries and margin must be at least 1")
        self.margin, self.flip, self.max_tries, self.overlap = int(margin), bool(flip), int(max_tries), bool(overlap)
        self.modalities = dict(modalities) if modalities else None
        self.label_key = label_key
        self.seed = seed
        self.no_room = 0
        self.pasted = 0
        self.args_names = ["bank", "margin", "flip", "max_tries", "overlap", "modalities", "label_key", "seed"]

    def placement(self, subject, rng: np.random.Generator) -> TumourPlacement:
        """The twin that pastes a donor drawn with ``rng`` into ``subject`` (``corner=None``: no room).
        A fixed ``rng`` per subject makes a fixed pasted cohort (segbench's ``real+paste`` arm)."""
        names = resolve_names(subject, self.modalities)
        donor, flips, corner, _ = find_room(
            cached_bank(self.bank, self.bank_sha256),
            subject,
            names,
            self.label_key,
            rng,
            self.flip,
            self.overlap,
            self.margin,
            self.max_tries,
        )
        if corner is None:
            self.no_room += 1
        else:
            self.pasted += 1
        return TumourPlacement(
            self.bank,
            self.bank_sha256,
            donor,
            flips,
            corner,
            self.margin,
            self.modalities,
            self.label_key,
            **self._get_base_args(),
        )


def placements(place, recipients: Sequence, n: int, seed: int):
    """A fixed cohort's placements: per subject ``i`` < ``n``, (its recipient, the twin placing a
    lesion into it, whether it moved on), drawn by ``default_rng([seed, i])`` with ``place``'s
    ``placement`` (a :class:`TumourPaste` or :class:`~augment3d.TumourInpainter`). Subject ``i``
    goes into ``recipients[i % len]``; where that one has no room for the drawn lesion the next
    ones are tried in turn (moved), so every subject gets a lesion while any recipient has room
    (``twin.corner`` None: none had)."""
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        for k in range(len(recipients)):
            subject = recipients[(i + k) % len(recipients)]
            twin = place.placement(subject, rng)
            if twin.corner is not None:
                break
        yield subject, twin, k > 0 and twin.corner is not None
