"""Strict NIfTI reading that refuses what nibabel and SimpleITK let through.

nibabel never checks the gzip CRC (a zeroed block reads as garbage) and SimpleITK loads
truncated files silently. Here the whole gzip stream is decompressed with Python's ``gzip``
module, which checks the CRC-32 and length trailer, the header is parsed by nibabel from
memory, and the voxel block must be complete and finite.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["NiftiVolume", "read_nifti", "decompress_nifti_bytes", "read_header"]

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class NiftiVolume:
    """A 3D volume read from disk: voxels (float32 for images), affine and voxel size in mm."""

    path: Path
    data: np.ndarray
    affine: np.ndarray
    zooms: tuple[float, float, float]


def decompress_nifti_bytes(path: Path, raw: bytes) -> bytes:
    """Return the uncompressed NIfTI bytes, checking the gzip CRC and length."""
    if raw[:2] != _GZIP_MAGIC:
        if path.name.endswith(".gz"):
            raise DataError(path, "named .gz but is not gzip-compressed data")
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(path, "truncated gzip stream: the file ends before its compressed data does") from None
    except gzip.BadGzipFile as exc:
        raise DataError(path, f"corrupted gzip data ({exc})") from None
    except zlib.error as exc:
        raise DataError(path, f"corrupted gzip data (zlib: {exc})") from None


def _parse(path: Path, data: bytes):
    import nibabel as nib

    if len(data) < 348:
        raise DataError(path, f"not a NIfTI file: {len(data)} bytes, shorter than a NIfTI header")
    errors = []
    for image_class in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            image = image_class.from_bytes(data)
        except Exception as exc:  # nibabel raises several types for a foreign header
            errors.append(str(exc))
            continue
        return image
    raise DataError(path, f"not a NIfTI file ({errors[0] or 'unrecognised header'})")


def _check_complete(path: Path, image, n_bytes: int) -> None:
    header = image.header
    shape = header.get_data_shape()
    itemsize = header.get_data_dtype().itemsize
    expected = int(header.get_data_offset()) + int(np.prod(shape, dtype=np.int64)) * itemsize
    if n_bytes < expected:
        raise DataError(
            path,
            f"truncated image data: the header promises {expected} bytes for shape {tuple(shape)}, "
            f"the file holds {n_bytes}",
        )


def read_header(path: str | os.PathLike):
    """Read only the NIfTI header (cheap: no voxel decoding). Raises :class:`DataError`."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file is missing")
    try:
        return nib.load(path).header
    except Exception as exc:
        raise DataError(path, f"cannot read NIfTI header ({exc})") from None


def read_nifti(path: str | os.PathLike, *, allow_constant: bool = False, dtype=np.float32) -> NiftiVolume:
    """Read a 3D NIfTI volume strictly.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        allow_constant: accept a volume whose voxels all have one value (label maps may be empty).
        dtype: dtype of the returned voxels.

    Raises:
        DataError: naming ``path`` and the problem (missing, empty, truncated or corrupt gzip,
            not a NIfTI, truncated voxel data, not 3D, NaN/Inf voxels, constant image).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file is missing")
    raw = path.read_bytes()
    if not raw:
        raise DataError(path, "file is empty (0 bytes)")
    data = decompress_nifti_bytes(path, raw)
    image = _parse(path, data)
    _check_complete(path, image, len(data))
    try:
        voxels = np.asarray(image.dataobj, dtype=dtype)
    except Exception as exc:
        raise DataError(path, f"cannot decode voxel data ({exc})") from None
    if voxels.ndim == 4 and voxels.shape[3] == 1:
        voxels = voxels[..., 0]
    if voxels.ndim != 3:
        raise DataError(path, f"expected a 3D volume, got shape {tuple(voxels.shape)}")
    bad = voxels.size - int(np.count_nonzero(np.isfinite(voxels)))
    if bad:
        raise DataError(path, f"{bad} voxels are NaN or Inf")
    if not allow_constant and voxels.size and voxels.min() == voxels.max():
        raise DataError(path, f"empty image: every voxel is {float(voxels.flat[0]):g}")
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise DataError(path, "affine contains NaN or Inf")
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    if any(z <= 0 for z in zooms):
        raise DataError(path, f"voxel size must be positive, header says {zooms}")
    return NiftiVolume(path=path, data=voxels, affine=affine, zooms=zooms)
