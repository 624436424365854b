"""augment3d's transforms as MONAI dictionary transforms (``pip install augment3d[monai]``).

BraTS pipelines in MONAI stack the four modalities in one channel-first ``image`` and convert the
label map to overlapping TC/WT/ET channels right after loading. Put these transforms after
``LoadImaged`` + ``EnsureChannelFirstd`` (and any spatial transform such as ``Orientationd``),
before the label-to-regions conversion, the intensity normalisation and the crop::

    from monai import transforms as mt
    from augment3d.monai import RandTumourPasted

    train = mt.Compose([
        mt.LoadImaged(keys=["image", "label"]),             # image: four files, one per modality
        mt.EnsureChannelFirstd(keys=["image", "label"]),
        mt.Orientationd(keys=["image", "label"], axcodes="RAS"),
        RandTumourPasted("ssa_tumours", prob=0.5, channels=("t1n", "t1c", "t2w", "t2f")),
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

from .brats import MODALITIES, MODALITY_ALIASES

__all__ = ["RandTumourPasted"]


def _canonical(channels: Sequence[str]) -> list[str]:
    """The BraTS key (t1n, t1c, t2w, t2f) of each channel name, refusing unknown or repeated ones."""
    out = []
    for name in channels:
        key = next((k for k, aliases in MODALITY_ALIASES.items() if name in aliases or name == k), None)
        if key is None:
            raise ValueError(f"channel {name!r} is not a BraTS modality (known: "
                             f"{', '.join(a for v in MODALITY_ALIASES.values() for a in v)})")
        out.append(key)
    if sorted(out) != sorted(MODALITIES):
        raise ValueError(f"channels must name the four modalities once each, got {list(channels)}")
    return out


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
    return values.to(dtype=original.dtype)


class RandTumourPasted(RandomizableTransform, MapTransform):
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

    backend = [TransformBackends.TORCH]

    def __init__(self, bank, prob: float = 0.5, image_key: str = "image", label_key: str = "label",
                 channels: Sequence[str] = MODALITIES, margin: int = 3, flip: bool = True, max_tries: int = 50,
                 overlap: bool = False, allow_missing_keys: bool = False):
        from .tumour_paste import TumourPaste

        keys: KeysCollection = [image_key, label_key]
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.image_key, self.label_key = image_key, label_key
        self.channels = _canonical(channels)
        self.paste = TumourPaste(bank, p=1.0, margin=margin, flip=flip, max_tries=max_tries, overlap=overlap,
                                 label_key="seg")
        self._seed = 0

    @property
    def pasted(self) -> int:
        return self.paste.pasted

    @property
    def no_room(self) -> int:
        return self.paste.no_room

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        import torchio as tio

        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        if self.image_key not in d or self.label_key not in d:
            if self.allow_missing_keys:
                return d
            missing = [k for k in (self.image_key, self.label_key) if k not in d]
            raise KeyError(f"RandTumourPasted: the sample has no {', '.join(missing)} (keys: {', '.join(map(str, d))})")
        image, label = d[self.image_key], d[self.label_key]
        images = torch.as_tensor(image).detach().cpu()
        labels = torch.as_tensor(label).detach().cpu()
        if images.ndim != 4 or images.shape[0] != len(self.channels):
            raise ValueError(f"RandTumourPasted: {self.image_key!r} must be channel-first with {len(self.channels)} "
                             f"channels ({', '.join(self.channels)}), got shape {tuple(images.shape)}")
        if labels.ndim != 4 or labels.shape[0] != 1 or labels.shape[1:] != images.shape[1:]:
            raise ValueError(f"RandTumourPasted: {self.label_key!r} must be one channel on the image's grid "
                             f"{tuple(images.shape[1:])}, got shape {tuple(labels.shape)}")
        affine = _affine(image)
        fields = {key: tio.ScalarImage(tensor=images[c:c + 1].float().clone(), affine=affine)
                  for c, key in enumerate(self.channels)}
        subject = tio.Subject(**fields, seg=tio.LabelMap(tensor=labels.round().long().clone(), affine=affine))
        twin = self.paste.placement(subject, np.random.default_rng(self._seed))
        if twin.corner is None:
            return d
        out = twin.apply_transform(subject)
        pasted = torch.cat([out[key].data for key in self.channels]).to(images.dtype)
        d[self.image_key] = _like(image, pasted)
        d[self.label_key] = _like(label, out["seg"].data)
        return d
