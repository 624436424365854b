"""augment3d's transforms as MONAI dictionary transforms (``pip install augment3d[monai]``).

BraTS pipelines in MONAI stack the four modalities in one channel-first ``image`` and convert the
label map to overlapping TC/WT/ET channels right after loading. Put these transforms after
``LoadImaged`` + ``EnsureChannelFirstd`` (and any spatial transform such as ``Orientationd``),
before the label-to-regions conversion, the intensity normalisation and the crop::

    from monai import transforms as mt
    from augment3d.monai import RandSyntheticReplaced, RandTumourPasted

    train = mt.Compose([
        mt.LoadImaged(keys=["image", "label"]),             # image: four files, one per modality
        mt.EnsureChannelFirstd(keys=["image", "label"]),
        mt.Orientationd(keys=["image", "label"], axcodes="RAS"),
        RandTumourPasted("ssa_tumours", prob=0.5, channels=("t1n", "t1c", "t2w", "t2f")),
        RandSyntheticReplaced("phantom", prob=0.5, condition={"site": "SSA"}),   # or one of the two
        mt.ConvertToMultiChannelBasedOnBratsClassesd(keys="label"),   # BraTS 2021 labels (ET = 4)
        mt.NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
        mt.RandSpatialCropd(keys=["image", "label"], roi_size=[96, 96, 96]),
    ])

What the contract of a MONAI transform asks, and what these do:

- random draws come from the transform's own ``self.R`` (``set_random_state``; MONAI's
  ``DataLoader`` seeds it per worker), one seed per call, so a fixed random state replays;
- the transform is a ``RandomizableTransform``: ``CacheDataset`` caches what comes before it and
  runs it afresh every epoch; it never writes into its input (a cached item stays as it was,
  also with ``copy_cache=False``);
- the affine is read from the ``MetaTensor`` (an identity where there is none) and the outputs are
  the input ``MetaTensor`` s with new values: metadata and ``applied_operations`` are kept, and
  as the transform records no operation of its own, ``Compose.inverse`` still inverts the
  invertible transforms before it (the pasted tumour stays where it was put).

This module imports MONAI; ``import augment3d`` does not import it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch

try:
    from monai.config import KeysCollection
    from monai.data import MetaTensor
    from monai.transforms import MapTransform, RandomizableTransform
    from monai.utils.enums import TransformBackends
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("augment3d.monai needs MONAI: pip install 'augment3d[monai]'") from exc

from .brats import MODALITIES
from .transforms.stacked import canonical_channels, pasted, restyled, stacked_subject, unstacked

__all__ = ["RandTumourPasted", "RandSyntheticReplaced"]


def _affine(tensor) -> np.ndarray:
    affine = getattr(tensor, "affine", None)
    return np.eye(4) if affine is None else np.asarray(torch.as_tensor(affine).detach().cpu(), dtype=np.float64)


def _like(original, values: torch.Tensor):
    """``values`` carried by a copy of ``original`` (its MetaTensor metadata and operations kept)."""
    if isinstance(original, MetaTensor):
        out = original.clone()
        out.copy_(values.to(dtype=original.dtype))
        return out
    if isinstance(original, np.ndarray):
        return values.numpy().astype(original.dtype)
    return values.to(device=original.device, dtype=original.dtype)


def _stacked(d: dict, image_key: str, label_key: str, channels: Sequence[str], allow_missing: bool, who: str):
    """The sample's images (C, X, Y, Z) and label map (1, X, Y, Z) as CPU tensors, checked; (None,
    None) when a key is missing and that is allowed."""
    if image_key not in d or label_key not in d:
        if allow_missing:
            return None, None
        missing = [k for k in (image_key, label_key) if k not in d]
        raise KeyError(f"{who}: the sample has no {', '.join(missing)} (keys: {', '.join(map(str, d))})")
    images = torch.as_tensor(d[image_key]).detach().cpu()
    labels = torch.as_tensor(d[label_key]).detach().cpu()
    if images.ndim != 4 or images.shape[0] != len(channels):
        raise ValueError(
            f"{who}: {image_key!r} must be channel-first with {len(channels)} channels "
            f"({', '.join(channels)}), got shape {tuple(images.shape)}"
        )
    if labels.ndim != 4 or labels.shape[0] != 1 or labels.shape[1:] != images.shape[1:]:
        raise ValueError(
            f"{who}: {label_key!r} must be one channel on the image's grid "
            f"{tuple(images.shape[1:])}, got shape {tuple(labels.shape)}"
        )
    return images, labels


class _StackedSubjectTransform(RandomizableTransform, MapTransform):
    """What both transforms share: keys and channel order checked once, one seed drawn from ``R``
    per call, the sample's stacked images and label map checked and handed to :meth:`_apply` as a
    torchio subject's tensors (on a copy of the sample's dict)."""

    backend = [TransformBackends.TORCH]

    def __init__(self, prob: float, image_key: str, label_key: str, channels: Sequence[str], allow_missing_keys: bool):
        keys: KeysCollection = [image_key, label_key]
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.image_key, self.label_key = image_key, label_key
        self.channels = canonical_channels(channels)
        self._seed = 0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        images, labels = _stacked(d, self.image_key, self.label_key, self.channels, self.allow_missing_keys, type(self).__name__)
        if images is None:
            return d
        return self._apply(d, images, labels)

    def _apply(self, d: dict, images: torch.Tensor, labels: torch.Tensor) -> dict:
        raise NotImplementedError


class RandTumourPasted(_StackedSubjectTransform):
    """With probability ``prob``, paste a tumour from a :class:`~augment3d.TumourBank` into the
    sample: :class:`~augment3d.TumourPaste` (same placement, blending and guarantees) on MONAI's
    stacked, channel-first ``image`` and its ``label``.

    Args:
        bank: a saved tumour bank's folder (or the bank, saved).
        prob: chance of pasting into a sample.
        image_key, label_key: the stacked images (C=4, X, Y, Z) and the label map (1, X, Y, Z) with
            BraTS labels (2023: ET 3; 2021: ET 4, kept).
        channels: the modality of each image channel, in order (BraTS names or common aliases).
        margin, flip, max_tries, overlap: as for :class:`~augment3d.TumourPaste`.

    A sample with no room passes through unchanged; ``pasted`` and ``no_room`` count per process.
    """

    def __init__(
        self,
        bank,
        prob: float = 0.5,
        image_key: str = "image",
        label_key: str = "label",
        channels: Sequence[str] = MODALITIES,
        margin: int = 3,
        flip: bool = True,
        max_tries: int = 50,
        overlap: bool = False,
        allow_missing_keys: bool = False,
    ):
        from .transforms.tumour_paste import TumourPaste

        super().__init__(prob, image_key, label_key, channels, allow_missing_keys)
        self.paste = TumourPaste(bank, p=1.0, margin=margin, flip=flip, max_tries=max_tries, overlap=overlap, label_key="seg")

    @property
    def pasted(self) -> int:
        return self.paste.pasted

    @property
    def no_room(self) -> int:
        return self.paste.no_room

    def _apply(self, d: dict, images: torch.Tensor, labels: torch.Tensor) -> dict:
        image, label = d[self.image_key], d[self.label_key]
        out = pasted(self.paste, stacked_subject(images, labels, _affine(image), self.channels), self._seed)
        if out is None:
            return d
        new_images, new_labels = unstacked(out, self.channels)
        d[self.image_key] = _like(image, new_images.to(images.dtype))
        d[self.label_key] = _like(label, new_labels)
        return d


class RandSyntheticReplaced(_StackedSubjectTransform):
    """With probability ``prob``, give the sample new images from a generator:
    :class:`~augment3d.SyntheticAugmenter`'s replacement (its deterministic twin,
    :class:`~augment3d.SyntheticReplacement`) on MONAI's stacked ``image`` and its ``label``. A
    labels-to-images generator renders the sample's own label map, which stays exactly as it was; a
    joint one replaces the label map too.

    Args:
        generator: a run folder, or a bundled generator's name (``"phantom"``).
        prob: chance of replacing a sample.
        condition: ``"subject"`` (each condition column read from the sample's own keys, e.g.
            ``data["site"]``), a dict such as ``{"site": "SSA"}`` (columns it leaves out come from
            the sample), or None (a condition drawn uniformly per sample).
        psi, device, precision: as for :class:`~augment3d.SyntheticAugmenter` (DataLoader
            workers generate on the CPU).
        image_key, label_key, channels: as for :class:`RandTumourPasted`.

    A generated subject is named by its seed: the one drawn from ``R`` for the sample.
    """

    def __init__(
        self,
        generator,
        prob: float = 0.5,
        condition="subject",
        psi: float = 1.0,
        image_key: str = "image",
        label_key: str = "label",
        channels: Sequence[str] = MODALITIES,
        device: str = "cpu",
        precision: str = "auto",
        allow_missing_keys: bool = False,
    ):
        from .transforms.augmenter import SyntheticAugmenter

        super().__init__(prob, image_key, label_key, channels, allow_missing_keys)
        # the torchio transform checks the generator, the condition and the precision once, here
        self.augmenter = SyntheticAugmenter(
            generator, p=1.0, condition=condition, psi=psi, device=device, precision=precision, label_key="seg"
        )

    def _apply(self, d: dict, images: torch.Tensor, labels: torch.Tensor) -> dict:
        from .synthesis.generator_cache import get_generator, worker_device

        a = self.augmenter
        gen = get_generator(a.checkpoint, a.checkpoint_sha256, worker_device(a.device))
        attributes = {c: str(d[c]) for c in gen.conditions if c in d}
        subject = stacked_subject(images, labels, _affine(d[self.image_key]), self.channels, attributes)
        out, kept_labels = restyled(a, subject, self._seed)
        new_images, new_labels = unstacked(out, self.channels)
        d[self.image_key] = _like(d[self.image_key], new_images.to(images.dtype))
        if not kept_labels:
            d[self.label_key] = _like(d[self.label_key], new_labels)
        return d
