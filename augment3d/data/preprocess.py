"""Preprocessing a case onto the model's grid.

Steps, in order: reorient to RAS+ (closest canonical), crop to the brain's bounding box
(voxels that are non-zero in any modality), pad to a cube in millimetres, clip each modality to
in-brain percentiles and scale it to [-1, 1] (background -1), resample to the recipe's shape
(trilinear with an anti-aliasing Gaussian for images, nearest-neighbour for labels). The
world affine of the output grid is kept, so generated volumes can be mapped back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ..errors import DataError
from ..config.field_types import enforce_field_types
from ..models.architecture import MAX_SIDE
from ..brats import MODALITIES
from .validation import LoadedCase

__all__ = ["PreprocessConfig", "PreparedCase", "CubeBox", "cube_box", "normalise", "preprocess_case", "to_canonical"]


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings of the model grid. ``shape`` is the output side length (or three lengths)."""

    shape: tuple[int, int, int] = (32, 32, 32)
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    margin_mm: float = 2.0

    def __post_init__(self):
        enforce_field_types(self)
        shape = self.shape
        if isinstance(shape, int):
            shape = (shape, shape, shape)
        if (
            not isinstance(shape, tuple)
            or len(shape) != 3
            or any(isinstance(s, bool) or not isinstance(s, int) for s in shape)
            or min(shape) < 4
        ):
            raise ValueError(f"shape must be an int or three ints >= 4, got {self.shape!r}")
        if max(shape) > MAX_SIDE:
            raise ValueError(
                f"shape {shape} is larger than augment3d prepares (sides up to {MAX_SIDE}; the proposal's grid is 128)"
            )
        percentiles = self.clip_percentiles
        if (
            not isinstance(percentiles, (list, tuple))
            or len(percentiles) != 2
            or not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in percentiles)
        ):
            raise ValueError(f"clip_percentiles must be two numbers, got {percentiles!r}")
        lo, hi = (float(p) for p in percentiles)
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"clip_percentiles must satisfy 0 <= low < high <= 100, got {self.clip_percentiles!r}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "clip_percentiles", (lo, hi))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessConfig:
        """Settings as :meth:`to_dict` wrote them. Runs before 0.1 also kept ``voxel_mm`` and
        ``recipe`` here (now beside it in ``generator.json``); they are not settings and are skipped."""
        known = {f.name for f in fields(cls)}
        settings: dict = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**settings)


@dataclass
class PreparedCase:
    """A case on the model grid: ``images`` (4, X, Y, Z) float32 in [-1, 1], ``label`` uint8."""

    subject_id: str
    images: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    conditions: dict[str, str] = field(default_factory=dict)
    source_shape: tuple[int, ...] = (0, 0, 0)
    source_affine: np.ndarray | None = None


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder/flip axes so the voxel axes point to R, A, S; return data and the new affine."""
    import nibabel.orientations as ornt_mod

    ornt = ornt_mod.io_orientation(affine)
    target = ornt_mod.axcodes2ornt(("R", "A", "S"))
    transform = ornt_mod.ornt_transform(ornt, target)
    out = ornt_mod.apply_orientation(data, transform)
    new_affine = affine @ ornt_mod.inv_ornt_aff(transform, data.shape)
    return np.ascontiguousarray(out), new_affine


def _bounding_box(mask: np.ndarray, margin: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    idx = np.nonzero(mask)
    lo = np.array([max(0, int(i.min()) - m) for i, m in zip(idx, margin)])
    hi = np.array([min(s, int(i.max()) + 1 + m) for i, s, m in zip(idx, mask.shape, margin)])
    return lo, hi


def normalise(x: np.ndarray, mask: np.ndarray, percentiles, path, bounds=None) -> np.ndarray:
    """``x`` clipped to its in-``mask`` ``percentiles`` and scaled to [-1, 1], -1 outside the mask;
    ``bounds`` (low, high): those values, already computed, instead of the percentiles."""
    lo, hi = bounds if bounds is not None else np.percentile(x[mask], percentiles)
    if not hi > lo:
        raise DataError(path, "image is constant inside the brain; cannot scale it to [-1, 1]")
    out = (np.clip(x, lo, hi) - lo) / (hi - lo) * 2.0 - 1.0
    out[~mask] = -1.0
    return out.astype(np.float32)


def _resample(volumes: np.ndarray, shape, mode: str, zoom_factors) -> np.ndarray:
    """Resample a (C, X, Y, Z) stack to ``shape`` (align_corners=False convention)."""
    import torch
    import torch.nn.functional as F
    from scipy import ndimage

    if mode == "trilinear":
        sigmas = [max(0.0, (f - 1.0) / 2.0) for f in zoom_factors]
        if any(s > 0 for s in sigmas):
            volumes = np.stack([ndimage.gaussian_filter(v, sigmas, mode="nearest") for v in volumes])
    tensor = torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))[None]
    kwargs = {"align_corners": False} if mode == "trilinear" else {}
    out = F.interpolate(tensor, size=tuple(shape), mode=mode, **kwargs)
    return out[0].numpy()


@dataclass(frozen=True)
class CubeBox:
    """Where the model grid sits in a (RAS-ordered) volume: crop box, cube padding, grid affine."""

    lo: np.ndarray
    hi: np.ndarray
    padded: np.ndarray
    before: np.ndarray
    factors: np.ndarray
    grid_affine: np.ndarray


def cube_box(mask: np.ndarray, affine: np.ndarray, config: PreprocessConfig) -> CubeBox:
    """The brain's bounding box (plus margin), padded to a cube in mm, and the grid's world affine.

    ``mask`` and ``affine`` are in RAS voxel order (see :func:`to_canonical`).
    """
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    margin = tuple(int(np.ceil(config.margin_mm / z)) for z in zooms)
    lo, hi = _bounding_box(mask, margin)
    side_mm = float(((hi - lo) * zooms).max())
    padded = np.maximum(np.round(side_mm / zooms).astype(int), hi - lo)
    before = (padded - (hi - lo)) // 2
    origin = lo - before  # index of the padded block's first voxel (may be negative)
    factors = padded / np.array(config.shape)
    # output voxel j sits at input index origin + (j + 0.5) * factor - 0.5
    grid = np.eye(4)
    grid[:3, :3] = np.diag(factors)
    grid[:3, 3] = origin + 0.5 * factors - 0.5
    return CubeBox(lo=lo, hi=hi, padded=padded, before=before, factors=factors, grid_affine=affine @ grid)


def preprocess_case(loaded: LoadedCase, config: PreprocessConfig) -> PreparedCase:
    """Bring one checked case onto the model grid described by ``config``."""
    paths = loaded.case.paths
    stack = np.stack([loaded.images[k] for k in MODALITIES])
    stack, affine = to_canonical(np.moveaxis(stack, 0, -1), loaded.affine)
    stack = np.moveaxis(stack, -1, 0)
    label, _ = to_canonical(loaded.label, loaded.affine)

    mask = np.any(stack != 0, axis=0)
    if not mask.any():
        raise DataError(paths[MODALITIES[0]], "no brain voxels: every modality is zero")
    box = cube_box(mask, affine, config)
    lo, hi, padded, before = box.lo, box.hi, box.padded, box.before

    def crop_pad(vol: np.ndarray, fill) -> np.ndarray:
        out = np.full(tuple(padded), fill, dtype=vol.dtype)
        sl_src = tuple(slice(a, b) for a, b in zip(lo, hi))
        sl_dst = tuple(slice(b, b + (h - low)) for b, low, h in zip(before, lo, hi))
        out[sl_dst] = vol[sl_src]
        return out

    crop_mask = crop_pad(mask, False)
    images = np.stack(
        [normalise(crop_pad(stack[i], 0.0), crop_mask, config.clip_percentiles, paths[key]) for i, key in enumerate(MODALITIES)]
    )
    label = crop_pad(label, 0)

    shape = np.array(config.shape)
    images = _resample(images, shape, "trilinear", box.factors)
    new_mask = _resample(crop_mask[None].astype(np.float32), shape, "trilinear", box.factors)[0] > 0.5
    images[:, ~new_mask] = -1.0
    images = np.clip(images, -1.0, 1.0)
    label = _resample(label[None].astype(np.float32), shape, "nearest-exact", box.factors)[0].astype(np.uint8)
    return PreparedCase(
        subject_id=loaded.subject_id,
        images=images.astype(np.float32),
        label=label,
        affine=box.grid_affine,
        conditions=dict(loaded.conditions),
        source_shape=tuple(int(s) for s in loaded.label.shape),
        source_affine=loaded.affine,
    )
