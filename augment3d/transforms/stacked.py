"""One sample as other frameworks hold it: the four modalities stacked in one channel-first array
and a label map beside it. What :mod:`augment3d.monai` and :mod:`augment3d.nnunet` share: the
channel order read from names, the sample as a torchio subject for the deterministic twins
(:class:`~augment3d.TumourPlacement`, :class:`~augment3d.SyntheticReplacement`) and back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..brats import MODALITIES, MODALITY_ALIASES

__all__ = ["canonical_channels", "stacked_subject", "unstacked", "pasted", "restyled"]


def canonical_channels(channels: Sequence[str]) -> list[str]:
    """The BraTS key (t1n, t1c, t2w, t2f) of each channel name (case ignored), refusing unknown or
    repeated ones."""
    out = []
    for name in channels:
        key = next(
            (
                k
                for k, aliases in MODALITY_ALIASES.items()
                if str(name).lower() == k or str(name).lower() in {a.lower() for a in aliases}
            ),
            None,
        )
        if key is None:
            raise ValueError(
                f"channel {name!r} is not a BraTS modality (known: {', '.join(a for v in MODALITY_ALIASES.values() for a in v)})"
            )
        out.append(key)
    if sorted(out) != sorted(MODALITIES):
        raise ValueError(f"channels must name the four modalities once each, got {list(channels)}")
    return out


def stacked_subject(
    images: torch.Tensor,
    labels: torch.Tensor,
    affine: np.ndarray,
    channels: Sequence[str],
    attributes: Mapping | None = None,
    copy: bool = True,
):
    """A torchio subject with one image per channel (named by its BraTS key) and the label map as
    ``seg``; copies (unless ``copy=False``, for arrays the caller made for it), so the twins never
    write into the caller's arrays."""
    import torchio as tio

    def own(x: torch.Tensor) -> torch.Tensor:
        return x.clone() if copy else x

    fields = {key: tio.ScalarImage(tensor=own(images[c : c + 1].float()), affine=affine) for c, key in enumerate(channels)}
    return tio.Subject(**fields, seg=tio.LabelMap(tensor=own(labels.round().long()), affine=affine), **(attributes or {}))


def unstacked(subject, channels: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The subject's images stacked back in ``channels`` order (C, ...) and its label map (1, ...)."""
    return torch.cat([subject[key].data for key in channels]), subject["seg"].data


def pasted(paste, subject, seed: int):
    """``subject`` with a tumour from ``paste``'s bank (:class:`~augment3d.TumourPaste` with
    ``label_key="seg"``) placed by the draw ``seed`` names, or None where it found no room."""
    twin = paste.placement(subject, np.random.default_rng(seed))
    return None if twin.corner is None else twin.apply_transform(subject)


def restyled(augmenter, subject, seed: int, draw_missing: bool = False):
    """(``subject`` with images the generator of ``augmenter`` (a
    :class:`~augment3d.SyntheticAugmenter` with ``label_key="seg"``) gave it under seed ``seed``,
    whether the label map was rendered from (True) or replaced too (False)).

    The condition: the augmenter's; with ``None`` one drawn by the seed. ``draw_missing``: columns
    that neither the augmenter's condition nor the subject names are drawn by the seed too (a
    sample that carries no site or grade, as in nnU-Net)."""
    from .augmenter import SyntheticReplacement
    from ..synthesis.generator_cache import get_generator, worker_device

    a = augmenter
    gen = get_generator(a.checkpoint, a.checkpoint_sha256, worker_device(a.device))
    if gen.conditions and (a.condition is None or draw_missing):
        fixed = {} if a.condition is None else {**{c: str(subject[c]) for c in gen.conditions if c in subject}, **a.condition}
        options = gen.encoder.matching(fixed, source=a.checkpoint)  # every combination where nothing is fixed
        condition = options[seed % len(options)]
    else:
        condition = a._condition_for(subject, gen)
    twin = SyntheticReplacement(
        a.checkpoint, a.checkpoint_sha256, [seed], 0, condition, a.psi, None, "seg", a.device, a.precision
    )
    return twin.apply_transform(subject), gen.takes_labels
