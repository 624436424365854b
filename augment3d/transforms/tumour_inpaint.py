"""Tumour inpainting: a new lesion placed into a real subject and rendered there by an inpainting run.

:class:`TumourInpainter` is a torchio ``RandomTransform``. With probability ``p`` it places a
donor's label map from a :class:`~augment3d.transforms.tumour_bank.TumourBank` into the subject
exactly as :class:`~augment3d.transforms.tumour_paste.TumourPaste` does (same room search: the
whole lesion in the brain, ``margin`` voxels clear of the subject's own tumour), and instead of
copying the donor's intensities it lets an inpainting generator (``[model] mode = "inpaint"``,
docs/MODEL.md) render the lesion and its surroundings into the subject:

* the region rendered: the placed lesion grown by ``grow`` voxels, with a weight falling
  linearly to 0 over ``margin`` more voxels (a soft edge), inside the brain and off the
  subject's own tumour;
* a crop of the generator's grid at its voxel size (RAS axes, as the run's data were prepared)
  is cut around the lesion: the subject's images scaled to [-1, 1] by their in-brain
  percentiles (the run's preprocessing), the new label map and the region; the generator
  renders the crop (seed ``seed``, the subject's or the given condition);
* the rendering is mapped back to the subject's grid and intensities and blended in with the
  region's weight; the label map gains the donor's classes on the lesion.

Every voxel where the weight is 0 keeps its exact value. :class:`InpaintPlacement` is the
deterministic twin, replayed by ``get_composed_history()``; ``corner=None`` (no room) passes the
subject through, and ``no_room`` counts those in this process.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torchio.transforms.augmentation import RandomTransform
from torchio.transforms.transform import Transform

from .seeded_twin import SeededTwin

from ..brats import MODALITIES
from ..data.preprocess import normalise
from ..errors import DataError
from ..io.checkpoint import checkpoint_hash
from ..io.run_files import generator_meta
from ..io.subjects import resolve_names
from ..pretrained import run_folder
from ..synthesis.generator_cache import get_generator, one_thread, worker_device
from ..precision import auto_precision
from ..synthesis.resampling import resample
from ..synthesis.sampling import check_precision
from .tumour_bank import BANK_FILE, spacing_of
from .tumour_paste import cached_bank, donor_in_grid, find_room, recipient, with_lesion

__all__ = ["InpaintPlacement", "TumourInpainter", "crop_geometry"]


def crop_geometry(affine: np.ndarray, centre_voxel, side: int, voxel_mm: float) -> np.ndarray:
    """The world affine of a ``side``^3 crop of ``voxel_mm`` voxels on RAS axes centred on the
    subject's voxel ``centre_voxel`` (the subject's voxel-to-world ``affine``)."""
    centre = (np.asarray(affine, dtype=np.float64) @ np.append(np.asarray(centre_voxel, dtype=np.float64), 1.0))[:3]
    crop = np.diag([voxel_mm] * 3 + [1.0])
    crop[:3, 3] = centre - voxel_mm * (side - 1) / 2.0
    return crop


class InpaintPlacement(Transform):
    """Deterministic twin of :class:`TumourInpainter`: render donor ``donor`` of the bank, flipped by
    ``flips``, with its box's first voxel at ``corner`` (None: no room, the subject passes through),
    with the generator's seed ``seed`` under ``condition`` (None: the subject's)."""

    def __init__(
        self,
        generator,
        generator_sha256,
        bank,
        bank_sha256,
        donor,
        flips=(False, False, False),
        corner=None,
        seed=0,
        condition=None,
        grow=2,
        margin=2,
        psi=1.0,
        modalities=None,
        label_key="seg",
        device="cpu",
        precision="fp32",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.precision = check_precision(precision)
        self.generator, self.generator_sha256 = str(generator), str(generator_sha256)
        self.bank, self.bank_sha256 = str(bank), str(bank_sha256)
        self.donor = int(donor)
        self.flips = tuple(bool(f) for f in flips)
        self.corner = None if corner is None else tuple(int(c) for c in corner)
        self.seed = int(seed)
        self.condition = dict(condition) if condition else None
        self.grow, self.margin, self.psi = int(grow), int(margin), float(psi)
        self.modalities = dict(modalities) if modalities else None
        self.label_key, self.device = label_key, device
        self.args_names = [
            "generator",
            "generator_sha256",
            "bank",
            "bank_sha256",
            "donor",
            "flips",
            "corner",
            "seed",
            "condition",
            "grow",
            "margin",
            "psi",
            "modalities",
            "label_key",
            "device",
            "precision",
        ]

    def apply_transform(self, subject):
        if self.corner is None:
            return subject
        from scipy import ndimage

        gen = get_generator(self.generator, self.generator_sha256, worker_device(self.device))
        names = resolve_names(subject, self.modalities)
        label, images, brain, affine = recipient(subject, names, self.label_key)
        d_label = donor_in_grid(cached_bank(self.bank, self.bank_sha256), self.donor, self.flips, affine)[0]
        box = tuple(slice(c, c + n) for c, n in zip(self.corner, d_label.shape))
        if any(s.stop > n or s.start < 0 for s, n in zip(box, label.shape)):
            raise DataError(None, f"the placement {self.corner} does not fit a {'x'.join(map(str, label.shape))} subject")
        new_label = with_lesion(label, d_label, self.corner)
        lesion = np.zeros(label.shape, bool)
        lesion[box] = d_label > 0
        distance = ndimage.distance_transform_edt(~lesion)
        weight = np.clip(1.0 - (distance - self.grow) / (self.margin + 1), 0.0, 1.0) * brain
        weight[(label > 0) & ~lesion] = 0.0  # the subject's own tumour keeps its voxels (labels and images agree)
        centre = np.argwhere(lesion).mean(0)
        side = gen.shape[0]
        crop_affine = crop_geometry(affine, centre, side, gen.voxel_mm)
        shape = gen.shape
        low, high = gen.preprocess.clip_percentiles
        ranges = {k: np.percentile(images[k][brain], [low, high]) for k in MODALITIES}  # each modality's in-brain range
        scaled = np.stack([normalise(images[k], brain, (low, high), None, bounds=ranges[k]) for k in MODALITIES])
        crop = resample(scaled + 1.0, affine, crop_affine, shape, "bilinear") - 1.0
        crop_label = resample(new_label[None].astype(np.float32), affine, crop_affine, shape, "nearest")[0]
        crop_label = np.where(crop_label == 4, 3, np.rint(crop_label)).astype(np.uint8)
        crop_region = np.clip(resample(weight[None].astype(np.float32), affine, crop_affine, shape, "bilinear")[0], 0, 1)
        condition = gen.encoder.for_subject(subject, self.condition, self.generator) if gen.conditions else None
        with one_thread():
            rendered = gen.inpaint(
                crop[None], crop_label[None], crop_region[None], condition, [self.seed], self.psi, self.precision
            )[0]
        back = resample(rendered + 1.0, crop_affine, affine, label.shape, "bilinear") - 1.0
        changed = weight > 0
        for key, name in names.items():
            original = images[key]
            lo, hi = ranges[key]
            values = lo + (back[MODALITIES.index(key)].astype(np.float64) + 1.0) / 2.0 * (hi - lo)
            blended = original.astype(np.float64) + weight * (values - original)
            out = original.copy()
            if np.issubdtype(out.dtype, np.integer):
                blended = np.rint(blended)
            out[changed] = blended[changed].astype(out.dtype)
            subject[name].set_data(torch.from_numpy(out[None]))
        subject[self.label_key].set_data(torch.from_numpy(new_label[None]))
        return subject


class TumourInpainter(SeededTwin, RandomTransform):
    """Place a bank's tumour into the subject and render it with an inpainting run (see the module).

    Args:
        generator: an inpainting run folder (``[model] mode = "inpaint"``).
        bank: a saved :class:`~augment3d.transforms.tumour_bank.TumourBank` (its folder, or the bank once saved).
        p: probability of inpainting into a subject.
        grow: voxels around the placed lesion rendered anew; ``margin``: voxels of soft edge beyond
            them, and of clearance from the subject's own tumour.
        condition: the condition to render under (columns it leaves out come from the subject's
            attributes, e.g. ``subject["site"]``); None: all from the subject.
        flip, max_tries, overlap: as :class:`~augment3d.transforms.tumour_paste.TumourPaste`.
        precision: ``auto`` (bf16 where the hardware has it), ``fp32`` or ``bf16`` rendering.
        seed: draws from this seed (per DataLoader worker) instead of torch's global generator.

    Example:
        >>> transform = tio.Compose([tio.RandomFlip(), TumourInpainter("runs/inpaint", "ssa_tumours", p=0.5)])  # doctest: +SKIP
    """

    def __init__(
        self,
        generator,
        bank,
        p: float = 0.5,
        grow: int = 2,
        margin: int = 2,
        condition: Mapping[str, str] | None = None,
        psi: float = 1.0,
        flip: bool = True,
        max_tries: int = 50,
        overlap: bool = False,
        modalities=None,
        label_key: str = "seg",
        device: str = "cpu",
        precision: str = "auto",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(p=p, **kwargs)
        #: the generator's arithmetic (``auto``: bf16 where the CPU has it), recorded in each history
        self.precision = check_precision(auto_precision(precision, device))
        self.generator = str(run_folder(getattr(generator, "path", generator)))
        meta = generator_meta(self.generator)
        if meta.get("model", {}).get("mode") != "inpaint":
            raise DataError(
                self.generator, 'is not an inpainting run ([model] mode = "inpaint"); TumourInpainter renders with one'
            )
        self.generator_sha256 = checkpoint_hash(self.generator)
        #: the generator's crop side in mm: a lesion (with its grown and soft edge) wider than it has no room
        self.crop_mm = float(meta["model"]["shape"][0]) * float(meta.get("voxel_mm", 1.0))
        path = getattr(bank, "path", bank)
        if path is None:
            raise ValueError("save the bank first (bank.save(folder)): workers load it from its folder")
        self.bank = str(path)
        self.bank_sha256 = checkpoint_hash(self.bank, BANK_FILE)
        cached_bank(self.bank, self.bank_sha256)  # a damaged bank fails here, not in a worker
        if max_tries < 1 or margin < 1 or grow < 0:
            raise ValueError("max_tries and margin must be at least 1, grow at least 0")
        self.grow, self.margin, self.psi = int(grow), int(margin), float(psi)
        self.condition = dict(condition) if condition else None
        self.flip, self.max_tries, self.overlap = bool(flip), int(max_tries), bool(overlap)
        self.modalities = dict(modalities) if modalities else None
        self.label_key, self.device, self.seed = label_key, device, seed
        self.no_room = 0
        self.inpainted = 0
        self.args_names = [
            "generator",
            "bank",
            "grow",
            "margin",
            "condition",
            "psi",
            "flip",
            "max_tries",
            "overlap",
            "modalities",
            "label_key",
            "device",
            "precision",
            "seed",
        ]

    def placement(self, subject, rng: np.random.Generator) -> InpaintPlacement:
        """The twin that inpaints a donor drawn with ``rng`` into ``subject`` (``corner=None``: no room)."""
        names = resolve_names(subject, self.modalities)
        bank = cached_bank(self.bank, self.bank_sha256)
        donor, flips, corner, lesion = find_room(
            bank, subject, names, self.label_key, rng, self.flip, self.overlap, self.margin, self.max_tries
        )
        seed = int(rng.integers(0, 2**31))
        if corner is not None:  # the lesion and its rendered surroundings must lie inside the generator's crop
            voxels = np.argwhere(lesion)
            grown = voxels.max(0) - voxels.min(0) + 1 + 2 * (self.grow + self.margin + 1)
            extent = grown * spacing_of(subject[self.label_key].affine)
            if (extent > self.crop_mm).any():
                corner = None
        if corner is None:
            self.no_room += 1
        else:
            self.inpainted += 1
        return InpaintPlacement(
            self.generator,
            self.generator_sha256,
            self.bank,
            self.bank_sha256,
            donor,
            flips,
            corner,
            seed,
            self.condition,
            self.grow,
            self.margin,
            self.psi,
            self.modalities,
            self.label_key,
            self.device,
            self.precision,
            **self._get_base_args(),
        )
