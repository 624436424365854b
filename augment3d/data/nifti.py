"""Strict NIfTI reading that refuses what nibabel and SimpleITK let through.

nibabel never checks the gzip CRC (a zeroed block reads as garbage) and SimpleITK loads
truncated files silently. Here the gzip stream is decompressed with Python's ``gzip`` module,
which checks the CRC-32 and length trailer; the header is read first, and a volume larger than
augment3d reads, or than this process can still allocate, is refused before the rest is
decompressed (a small .nii.gz can claim gigabytes); the stream may not decompress to more than
its header promises; the voxel block must be complete and finite; complex-valued images,
singular affines and qform/sform that disagree are refused.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..memory import check_fits

__all__ = ["NiftiVolume", "read_nifti", "decompress_nifti_bytes", "read_header", "MAX_VOXELS"]

_GZIP_MAGIC = b"\x1f\x8b"
#: the largest volume read: 512^3 voxels (a whole head at 0.5 mm; BraTS' 240x240x155 is 8.9 million)
MAX_VOXELS = 512**3
_CHUNK = 1 << 24


@dataclass
class NiftiVolume:
    """A 3D volume read from disk: voxels (float32 for images), affine and voxel size in mm."""

    path: Path
    data: np.ndarray
    affine: np.ndarray
    zooms: tuple[float, float, float]


def _header(path: Path, prefix: bytes):
    """The NIfTI-1 or NIfTI-2 header at the start of ``prefix`` (no voxel data needed)."""
    import nibabel as nib

    for header_class, size in ((nib.Nifti1Header, 348), (nib.Nifti2Header, 540)):
        if len(prefix) < size:
            continue
        try:
            return header_class.from_fileobj(io.BytesIO(prefix[:size]))
        except Exception:  # nibabel raises several types for a foreign header
            continue
    if len(prefix) < 348:
        raise DataError(path, f"not a NIfTI file: {len(prefix)} bytes, shorter than a NIfTI header")
    raise DataError(path, "not a NIfTI file (unrecognised header)")


def _payload_bytes(path: Path, header, compressed: int) -> int:
    """Bytes the header promises (offset + voxels); refuses what cannot or should not be read."""
    try:
        dtype = header.get_data_dtype()
        shape = tuple(int(n) for n in header.get_data_shape())
    except Exception as exc:
        raise DataError(path, f"unreadable NIfTI header ({exc})") from None
    if dtype.kind == "c":
        raise DataError(path, f"complex-valued image ({dtype}); augment3d reads real-valued images only")
    voxels = int(np.prod(shape, dtype=np.int64)) if shape else 0
    shown = "x".join(map(str, shape))
    if voxels > MAX_VOXELS:
        raise DataError(
            path, f"header claims {shown} voxels ({voxels:.3g}), more than augment3d reads ({MAX_VOXELS:.3g}, a 512^3 volume)"
        )
    payload = int(header.get_data_offset()) + voxels * dtype.itemsize
    # the decompressed file, the decoded voxels in float32 and a working copy
    check_fits(compressed + payload + 2 * 4 * voxels, path, f"reading its {shown} {dtype} voxels")
    return payload


def decompress_nifti_bytes(path: Path, raw: bytes) -> bytes:
    """The uncompressed NIfTI bytes, checking the gzip CRC and length, the header's claimed size
    (before decompressing the voxels) and that the stream holds no more than the header says."""
    if raw[:2] != _GZIP_MAGIC:
        if path.name.endswith(".gz"):
            raise DataError(path, "named .gz but is not gzip-compressed data")
        _payload_bytes(path, _header(path, raw[:540]), 0)
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            chunks = [stream.read(540)]
            limit = _payload_bytes(path, _header(path, chunks[0]), len(raw)) + (1 << 20)  # NIfTI extensions, padding
            total = len(chunks[0])
            while chunk := stream.read(min(_CHUNK, limit + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise DataError(path, "decompresses to more data than its header promises; refused")
    except EOFError:
        raise DataError(path, "truncated gzip stream: the file ends before its compressed data does") from None
    except gzip.BadGzipFile as exc:
        raise DataError(path, f"corrupted gzip data ({exc})") from None
    except zlib.error as exc:
        raise DataError(path, f"corrupted gzip data (zlib: {exc})") from None
    return b"".join(chunks)


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
            f"truncated image data: the header promises {expected} bytes for shape {tuple(shape)}, the file holds {n_bytes}",
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


def _checked_affine(path: Path, image) -> np.ndarray:
    """The image's affine: finite, invertible, and agreeing with the other form when the header
    sets both qform and sform (readers differ on which one they use)."""
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise DataError(path, "affine contains NaN or Inf")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(path, "affine is singular (a zero or repeated axis): the voxels have no position in space")
    header = image.header
    qform, q_code = header.get_qform(coded=True)
    sform, s_code = header.get_sform(coded=True)
    if q_code and s_code and qform is not None and sform is not None:
        shift = float(np.abs(qform[:3, 3] - sform[:3, 3]).max())
        axes = float(np.abs(qform[:3, :3] - sform[:3, :3]).max())
        if shift > 1.0 or axes > 1e-3 * max(1.0, float(np.abs(sform[:3, :3]).max())):
            raise DataError(
                path,
                f"qform and sform disagree (origins {shift:.1f} mm apart, axes by {axes:.3g}): "
                "tools would place the image differently; make them agree (e.g. set the qform "
                "from the sform) before using it",
            )
    return affine


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
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read the file ({exc.strerror or exc})") from None
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
    affine = _checked_affine(path, image)
    x, y, z = (float(v) for v in image.header.get_zooms()[:3])
    zooms = (x, y, z)
    if any(v <= 0 for v in zooms):
        raise DataError(path, f"voxel size must be positive, header says {zooms}")
    return NiftiVolume(path=path, data=voxels, affine=affine, zooms=zooms)
