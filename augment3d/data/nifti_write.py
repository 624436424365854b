"""Writing NIfTI files byte-for-byte reproducibly (gzip mtime 0) and atomically."""

from __future__ import annotations

import gzip
import os

import numpy as np

from ..io.atomic import atomic_write_bytes

__all__ = ["nifti_bytes", "write_nifti"]


def nifti_bytes(data: np.ndarray, affine: np.ndarray, dtype=None, compress: bool = True) -> bytes:
    """Encode ``data`` as NIfTI-1 (gzip-compressed with a fixed header time when ``compress``)."""
    import nibabel as nib

    array = np.asarray(data if dtype is None else data.astype(dtype))
    image = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    raw = image.to_bytes()
    return gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw


def write_nifti(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, dtype=None) -> None:
    """Write ``data`` to ``path`` (``.nii.gz`` or ``.nii``) atomically."""
    atomic_write_bytes(path, nifti_bytes(data, affine, dtype, compress=str(path).endswith(".gz")))
