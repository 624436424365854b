"""Resampling volumes between a subject's voxel grid and the model grid, by their world affines.

Axis-aligned maps (the usual case: both grids share axes) run as three separable 1D
resamplings, 5-10x faster than ``grid_sample`` and the same values (tests/models/test_numerics.py);
others as one ``affine_grid`` + ``grid_sample``. Zeros come in from outside.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

__all__ = ["resample"]

_GRIDS: OrderedDict = OrderedDict()


def _sampling_grid(theta: np.ndarray, shape) -> torch.Tensor:
    """``affine_grid`` for a subject geometry, cached: the same subjects come back every epoch."""
    import torch.nn.functional as F

    key = (theta.tobytes(), tuple(shape))
    if key not in _GRIDS:
        _GRIDS[key] = F.affine_grid(torch.from_numpy(theta[:3]).float()[None], [1, 1, *shape[::-1]], align_corners=False)
        while len(_GRIDS) > 4:
            _GRIDS.popitem(last=False)
    return _GRIDS[key]


def _axis_positions(scale: float, offset: float, n_out: int, n_in: int) -> np.ndarray:
    """Source voxel positions of the output voxel centres along one axis (align_corners=False)."""
    u = (2.0 * np.arange(n_out) + 1.0) / n_out - 1.0
    return ((scale * u + offset + 1.0) * n_in - 1.0) / 2.0


def _linear_matrix(positions: np.ndarray, n_in: int) -> torch.Tensor:
    """(n_out, n_in) linear-interpolation weights; neighbours outside the volume count as zero."""
    low = np.floor(positions).astype(np.int64)
    frac = positions - low
    matrix = np.zeros((len(positions), n_in + 2))  # columns 0 and n_in + 1 catch the outside
    rows = np.arange(len(positions))
    for index, weight in ((low, 1.0 - frac), (low + 1, frac)):
        np.add.at(matrix, (rows, np.clip(index, -1, n_in) + 1), weight)
    return torch.from_numpy(matrix[:, 1:-1].astype(np.float32))


def _separable_resample(volumes: torch.Tensor, theta: np.ndarray, shape, mode: str) -> torch.Tensor:
    """``grid_sample`` for an axis-aligned ``theta`` as three 1D resamplings (the same values, 5-10x faster)."""
    sizes = volumes.shape[1:]
    positions = [_axis_positions(theta[a, a], theta[a, 3], shape[a], sizes[a]) for a in range(3)]
    if mode == "nearest":  # grid_sample rounds half to even, as np.rint does
        index = [np.rint(p).astype(np.int64) for p in positions]
        inside = [(i >= 0) & (i < n) for i, n in zip(index, sizes)]
        picked = volumes[:, np.clip(index[0], 0, sizes[0] - 1)][:, :, np.clip(index[1], 0, sizes[1] - 1)][
            :, :, :, np.clip(index[2], 0, sizes[2] - 1)
        ]
        keep = torch.from_numpy(inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])
        return picked * keep
    mx, my, mz = (_linear_matrix(p, n) for p, n in zip(positions, sizes))
    out = torch.einsum("cxyz,kz->cxyk", volumes, mz)
    out = torch.einsum("cxyk,jy->cxjk", out, my)
    return torch.einsum("cxjk,ix->cijk", out, mx)


def resample(volumes: np.ndarray, source_affine: np.ndarray, affine: np.ndarray, shape, mode: str) -> np.ndarray:
    """Resample (C, X, Y, Z) volumes with world affine ``source_affine`` onto the voxel grid
    ``affine``, ``shape`` (model grid -> subject, or subject -> model grid).

    The map from the target's normalised voxel coordinates to the source's is affine,
    composed in float64 (align_corners=False, zeros outside). When it is axis-aligned (the usual
    case: both grids share axes) it runs as three separable 1D resamplings; otherwise as one
    ``affine_grid`` + ``grid_sample``.
    """
    import torch.nn.functional as F

    def normaliser(sizes) -> np.ndarray:  # voxel index -> [-1, 1]
        n = np.asarray(sizes, dtype=np.float64)
        m = np.eye(4)
        m[:3, :3] = np.diag(2.0 / n)
        m[:3, 3] = 1.0 / n - 1.0
        return m

    to_grid = np.linalg.inv(source_affine) @ affine
    theta = normaliser(volumes.shape[1:]) @ to_grid @ np.linalg.inv(normaliser(shape))
    linear = theta[:3, :3]
    if np.abs(linear - np.diag(np.diag(linear))).max() <= 1e-9 * np.abs(linear).max():
        vol = torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))
        return _separable_resample(vol, theta, tuple(shape), mode).numpy()
    # torch orders (x, y, z) as (W, H, D): keep our axis 0 as x by transposing the volumes
    grid = _sampling_grid(theta, shape)
    vol = torch.from_numpy(np.ascontiguousarray(volumes.transpose(0, 3, 2, 1), dtype=np.float32))[None]
    out = F.grid_sample(vol, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out[0].numpy().transpose(0, 3, 2, 1)
