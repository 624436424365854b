"""Reading a torchio subject the way augment3d's transforms need it: modality names resolved,
voxels read strictly (a damaged file or NaN/Inf is one error naming it), label values scanned,
one grid checked. Shared by :mod:`augment3d.transforms.augmenter` and :mod:`augment3d.transforms.tumour_paste`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from ..brats import MODALITIES, MODALITY_ALIASES
from ..errors import DataError

__all__ = ["resolve_names", "read_voxels", "label_values", "check_same_shape", "check_file"]


def resolve_names(subject, modalities: Mapping[str, str] | None) -> dict[str, str]:
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


def check_file(path) -> None:
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
    from ..data.nifti import read_nifti

    read_nifti(path, allow_constant=True)
    _CHECKED_FILES[key] = True
    while len(_CHECKED_FILES) > 4096:
        _CHECKED_FILES.popitem(last=False)


def read_voxels(subject, name: str) -> np.ndarray:
    """One image's voxels; a damaged file, or NaN/Inf, is a DataError naming the file."""
    image = subject[name]
    where = getattr(image, "path", None) or f"subject image '{name}'"
    check_file(getattr(image, "path", None))
    try:
        data = image.data[0].numpy()
    except Exception as exc:  # torchio reads lazily: a damaged file fails here
        raise DataError(where, f"cannot read image '{name}' ({exc.__class__.__name__}: {exc})") from None
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise DataError(where, f"image '{name}' has {int((~np.isfinite(data)).sum())} NaN or Inf voxels")
    return data


def label_values(label: np.ndarray) -> set:
    """The values in a label map: a bincount for small non-negative integers (the usual case,
    about 9x faster than ``np.unique`` on a 64^3 map: 0.35 against 3.1 ms), ``np.unique`` otherwise."""
    if np.issubdtype(label.dtype, np.integer) and label.size and 0 <= label.min() and label.max() < 256:
        return set(np.flatnonzero(np.bincount(label.ravel())).tolist())
    return set(np.unique(label).tolist())


def check_same_shape(subject, names: list[str]) -> None:
    """The images replaced and the label map must share one grid (they are generated as one)."""
    shapes = {name: tuple(subject[name].spatial_shape) for name in names}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in shapes.items())
        odd = next(name for name in names if shapes[name] != shapes[names[0]])
        where = getattr(subject[odd], "path", None) or f"subject image '{odd}'"
        raise DataError(
            where,
            f"the subject's images differ in shape ({listed}); SyntheticAugmenter needs "
            "co-registered images on one grid (resample them first, e.g. tio.Resample)",
        )
