"""augment3d's transforms as batchgeneratorsv2 transforms, for nnU-Net v2's training pipeline.

What a transform sees there (nnU-Net's data loader, per sample, before its spatial transform):
``image`` float32 (C, z, y, x), already z-scored (0 outside the brain, negative values inside
it), a crop larger than the patch and not always the whole brain; ``segmentation`` int16 (1, z, y,
x) in the dataset's own label numbers with -1 outside the brain; no affine. So each transform

- reads the brain from ``segmentation >= 0`` and the BraTS classes from the dataset's labels
  (:func:`augment3d.nnunet.labels.brats_classes`);
- hands the images to the deterministic twin shifted so that the background is each channel's
  minimum (the twins read a brain as "above the background"), and maps the result back into the
  z-scored range: voxels the twin did not change keep their exact values;
- builds the voxel grid from the configuration's spacing, the array axes (z, y, x) taken as
  (S, A, R);
- draws from numpy (nnU-Net seeds numpy afresh in every worker process and leaves torch alone,
  so torch draws would repeat across workers); ``seed`` makes a process's draws reproducible,
  mixed with the worker's number.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch

try:
    from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("augment3d.nnunet needs nnU-Net v2: pip install 'augment3d[nnunet]'") from exc

from ..brats import MODALITIES
from ..transforms.stacked import canonical_channels, pasted, restyled, stacked_subject

__all__ = ["TumourPasteTransform", "SyntheticRestyleTransform", "grid_affine"]


def grid_affine(spacing: Sequence[float]) -> np.ndarray:
    """The affine of an nnU-Net array: axes (z, y, x) with ``spacing`` (z, y, x) mm, taken as (S, A, R)."""
    sz, sy, sx = (float(s) for s in spacing)
    return np.array([[0, 0, sx, 0], [0, sy, 0, 0], [sz, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def _box(mask: torch.Tensor) -> tuple[slice, ...] | None:
    """The bounding box of ``mask``'s True voxels (None when there are none)."""
    spans = []
    for axis in range(mask.ndim):
        hit = mask.any(dim=tuple(a for a in range(mask.ndim) if a != axis)).nonzero()
        if hit.numel() == 0:
            return None
        spans.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(spans)


class _SampleTransform(BasicTransform):
    """What both transforms share: the probability and seed draws, the label numbers, the brain
    from the segmentation, the shift into and out of the twins' intensity convention."""

    def __init__(
        self, prob: float, classes: Mapping[int, int], channels: Sequence[str], spacing: Sequence[float], seed: int | None
    ):
        super().__init__()
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob = float(prob)
        self.classes = {int(k): int(v) for k, v in classes.items()}  # dataset value -> BraTS class
        self.values = {c: min(k for k, v in self.classes.items() if v == c) for c in sorted(set(self.classes.values()))}
        self.channels = canonical_channels(channels)
        self.affine = grid_affine(spacing)
        self.seed = seed
        self.applied = 0  # samples changed in this process
        self._rng: tuple[int, np.random.Generator] | None = None

    def _draw(self) -> np.random.Generator:
        if self.seed is None:  # numpy's global state, which nnU-Net seeds afresh in every worker
            return np.random.default_rng(np.random.randint(0, 2**31 - 1))
        if self._rng is None or self._rng[0] != os.getpid():
            worker = tuple(multiprocessing.current_process()._identity)
            self._rng = (os.getpid(), np.random.default_rng([int(self.seed), *worker]))
        return self._rng[1]

    def get_parameters(self, **data_dict) -> dict:
        rng = self._draw()
        return {"apply": bool(rng.random() < self.prob), "seed": int(rng.integers(0, 2**31 - 1))}

    def apply(self, data_dict: dict, **params) -> dict:
        if not params["apply"] or data_dict.get("image") is None or data_dict.get("segmentation") is None:
            return data_dict
        image, seg = torch.as_tensor(data_dict["image"]), torch.as_tensor(data_dict["segmentation"])
        if image.ndim != 4 or image.shape[0] != len(self.channels) or seg.ndim != 4 or seg.shape[1:] != image.shape[1:]:
            raise ValueError(
                f"{type(self).__name__}: expected image (4, z, y, x) and segmentation (K, z, y, x) on "
                f"its grid, got {tuple(image.shape)} and {tuple(seg.shape)}"
            )
        region = self._region(tuple(image.shape[1:]))
        done = self._apply_region(image, seg, region, params["seed"])
        if done is not None:
            data_dict["image"], data_dict["segmentation"] = done
            self.applied += 1
        return data_dict

    def _region(self, shape: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(None) for _ in shape)

    def _apply_region(self, image: torch.Tensor, seg: torch.Tensor, region: tuple[slice, ...], seed: int):
        label = seg[0][region]
        brain = label >= 0
        if not bool(brain.any()):
            return None
        images = image[(slice(None), *region)].float()
        classes = torch.zeros(label.shape, dtype=torch.long)
        for value, cls in self.classes.items():
            classes.masked_fill_(label == value, cls)
        # a class augment3d does not know (e.g. resection cavity): kept clear of, as tumour
        classes.masked_fill_((label > 0) & (classes == 0), 2)
        outside = ~brain
        low = images.masked_fill(outside, float("inf")).amin(dim=(1, 2, 3)) - 1.0  # brain shifted to >= 1
        shifted = (images - low[:, None, None, None]).masked_fill_(outside, 0.0)  # the background to 0
        out = self._change(stacked_subject(shifted, classes[None], self.affine, self.channels, copy=False), seed)
        if out is None:
            return None
        image, seg = image.clone(), seg.clone()
        view = image[(slice(None), *region)]
        for c, key in enumerate(self.channels):  # only where the twin changed a voxel, within its box
            new = out[key].data[0]
            changed = new != shifted[c]
            box = _box(changed)
            if box is None:
                continue
            values = torch.where(brain[box], new[box].clamp(min=1.0), new[box]) + low[c]
            view[c][box] = torch.where(changed[box], values.to(image.dtype), view[c][box])
        new_classes = out["seg"].data[0]
        relabelled = new_classes != classes
        if bool(relabelled.any()):
            out_label = seg[0][region]
            for cls, value in [*self.values.items(), (0, 0)]:
                out_label.masked_fill_(relabelled & (new_classes == cls), value)
        return image, seg

    def _change(self, subject, seed: int):
        raise NotImplementedError


class TumourPasteTransform(_SampleTransform):
    """With probability ``prob``, paste a tumour from a :class:`~augment3d.TumourBank` into the
    sample (:class:`~augment3d.TumourPaste`'s placement, intensity fit and blending), inside the
    central ``patch_size`` region, which nnU-Net's spatial transform keeps: a sample whose own
    tumour lies outside the patch still gets its insertion where the network sees it.

    Args:
        bank: a saved tumour bank's folder.
        prob: chance of pasting into a sample.
        classes: {dataset label value: BraTS class 1 NETC / 2 SNFH / 3 ET}
            (:func:`augment3d.nnunet.labels.brats_classes`).
        channels: the modality of each image channel, in order (dataset.json ``channel_names``).
        spacing: the configuration's voxel spacing (z, y, x) in mm.
        patch_size: the configuration's patch size (z, y, x); None: the whole sample.
        margin, flip, max_tries, overlap: as for :class:`~augment3d.TumourPaste`.
        seed: None (numpy's state, seeded per worker by nnU-Net) or a seed for reproducible draws.

    ``applied`` and ``no_room`` count per process.
    """

    def __init__(
        self,
        bank,
        prob: float = 0.5,
        classes: Mapping[int, int] | None = None,
        channels: Sequence[str] = MODALITIES,
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        patch_size: Sequence[int] | None = None,
        margin: int = 3,
        flip: bool = True,
        max_tries: int = 50,
        overlap: bool = False,
        seed: int | None = None,
    ):
        from ..transforms.tumour_paste import TumourPaste

        super().__init__(prob, classes or {1: 1, 2: 2, 3: 3}, channels, spacing, seed)
        self.patch_size = None if patch_size is None else tuple(int(p) for p in patch_size)
        self.paste = TumourPaste(bank, p=1.0, margin=margin, flip=flip, max_tries=max_tries, overlap=overlap, label_key="seg")

    @property
    def no_room(self) -> int:
        return self.paste.no_room

    def _region(self, shape: tuple[int, ...]) -> tuple[slice, ...]:
        if self.patch_size is None:
            return super()._region(shape)
        starts = [max(0, (n - p) // 2) for n, p in zip(shape, self.patch_size)]
        return tuple(slice(s, min(n, s + p)) for s, n, p in zip(starts, shape, self.patch_size))

    def _change(self, subject, seed: int):
        return pasted(self.paste, subject, seed)  # None (counted in no_room) where the patch has no room


class SyntheticRestyleTransform(_SampleTransform):
    """With probability ``prob``, give the sample new images rendered by a labels-to-images
    generator from the sample's own label map (which stays exactly as it was), under
    ``condition``: :class:`~augment3d.SyntheticAugmenter`'s restyle.

    Args:
        generator: a run folder, or a bundled generator's name (``"phantom"``).
        prob: chance of restyling a sample.
        condition: e.g. ``{"site": "SSA"}``; columns it leaves out (nnU-Net samples carry no site
            or grade) are drawn per sample; None draws the whole condition.
        classes, channels, spacing, seed: as for :class:`TumourPasteTransform`.
        psi, precision: as for :class:`~augment3d.SyntheticAugmenter` (workers generate on the CPU).

    The generator renders what the sample shows of the brain (nnU-Net's crop, not always the
    whole brain) at its own grid; ``applied`` counts per process.
    """

    def __init__(
        self,
        generator="phantom",
        prob: float = 0.5,
        condition: Mapping[str, str] | None = None,
        classes: Mapping[int, int] | None = None,
        channels: Sequence[str] = MODALITIES,
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        psi: float = 1.0,
        precision: str = "auto",
        seed: int | None = None,
    ):
        from ..transforms.augmenter import SyntheticAugmenter
        from ..synthesis.sampling import load_generator
        from ..pretrained import run_folder

        super().__init__(prob, classes or {1: 1, 2: 2, 3: 3}, channels, spacing, seed)
        if not load_generator(run_folder(generator)).takes_labels:
            raise ValueError(
                f"{generator}: the nnU-Net restyle needs a labels-to-images generator ([model] mode = "
                '"labels"): the dataset\'s label maps must stay the truth'
            )
        self.augmenter = SyntheticAugmenter(
            generator,
            p=1.0,
            condition=dict(condition) if condition else None,
            psi=psi,
            device="cpu",
            precision=precision,
            label_key="seg",
        )

    def _change(self, subject, seed: int):
        return restyled(self.augmenter, subject, seed, draw_missing=True)[0]
