"""Random deformations of label maps (with their brain masks): a left-right flip, an affine
(rotation, scaling, translation) and a smooth elastic field, sampled nearest-neighbour so the
classes stay exact.

A labels-to-images generator trains on the real training subjects' maps deformed this way (the
images of the real pair are not needed for the fake), and ``sample`` draws new subjects from
the run's maps deformed by a seed. Parameters are drawn on the CPU from a ``torch.Generator``,
so a seed names a deformation on every device.

Example:
    >>> import torch
    >>> maps = torch.zeros(2, 4, 16, 16, 16); maps[:, 0, 2:14, 2:14, 2:14] = 1; maps[:, 2, 6:9, 6:9, 6:9] = 1
    >>> params = draw_deformations(2, torch.Generator().manual_seed(0))
    >>> out = deform_maps(maps, params)
    >>> sorted(set(out.unique().tolist())), tuple(out.shape)
    ([0.0, 1.0], (2, 4, 16, 16, 16))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .batched import Batched

__all__ = ["Deformation", "DeformationRange", "draw_deformations", "deform_maps"]


@dataclass(frozen=True)
class DeformationRange:
    """How far a deformation may go: flip probability, rotation (degrees), scaling (fraction),
    translation and elastic displacement (fractions of the grid side), elastic control points."""

    flip: float = 0.5
    degrees: float = 10.0
    scale: float = 0.1
    translate: float = 0.05
    elastic: float = 0.03
    control_points: int = 5


DEFAULT_RANGE = DeformationRange()


@dataclass(frozen=True)
class Deformation(Batched):
    """One deformation per map: left-right flip (B,), rotation angles (B, 3, radians), scales (B, 3),
    shifts (B, 3, normalised coordinates), elastic control-point displacements (B, 3, k, k, k)."""

    flip: torch.Tensor
    angles: torch.Tensor
    scales: torch.Tensor
    shifts: torch.Tensor
    elastic: torch.Tensor


def draw_deformations(batch: int, generator: torch.Generator, ranges: DeformationRange = DEFAULT_RANGE) -> Deformation:
    """Deformation parameters for ``batch`` maps (a fixed number of draws from ``generator``, in field order)."""
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    k = ranges.control_points
    return Deformation(
        flip=rand(batch) < ranges.flip,
        angles=(rand(batch, 3) * 2 - 1) * math.radians(ranges.degrees),
        scales=1 + (rand(batch, 3) * 2 - 1) * ranges.scale,
        shifts=(rand(batch, 3) * 2 - 1) * ranges.translate * 2,  # normalised coordinates span 2
        elastic=(rand(batch, 3, k, k, k) * 2 - 1) * ranges.elastic * 2,
    )


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """(B, 3) angles about the three axes -> (B, 3, 3) rotation matrices."""
    matrices: list[torch.Tensor] = []
    for a, b in ((1, 2), (0, 2), (0, 1)):
        angle = angles[:, len(matrices)]
        m = torch.eye(3, device=angles.device).repeat(len(angles), 1, 1)
        m[:, a, a], m[:, b, b] = torch.cos(angle), torch.cos(angle)
        m[:, a, b], m[:, b, a] = -torch.sin(angle), torch.sin(angle)
        matrices.append(m)
    return matrices[0] @ matrices[1] @ matrices[2]


def _grid(params: Deformation, shape) -> torch.Tensor:
    """Where each output voxel samples the input, in grid_sample's normalised (z, y, x) order."""
    batch = len(params.flip)
    linear = _rotation(params.angles) * params.scales[:, None, :]
    linear[:, :, 0] = torch.where(params.flip[:, None], -linear[:, :, 0], linear[:, :, 0])  # left-right
    theta = torch.cat([linear, params.shifts[:, :, None]], 2)  # in (x, y, z) order
    order = [2, 1, 0]  # grid_sample's coordinates run (W, H, D) = (z, y, x)
    theta = theta[:, order][:, :, [*order, 3]]
    grid = F.affine_grid(theta, [batch, 1, *shape], align_corners=False)
    elastic = F.interpolate(params.elastic, size=tuple(shape), mode="trilinear", align_corners=True)
    return grid + elastic[:, order].permute(0, 2, 3, 4, 1)


def deform_maps(maps: torch.Tensor, params: Deformation, grid_device: torch.device | str = "cpu") -> torch.Tensor:
    """Deform (B, C, X, Y, Z) maps (zeros come in from outside), nearest-neighbour, on the maps'
    device; values stay those of the input. The sampling grid is computed on ``grid_device``: the
    CPU by default, so that a draw deforms a map the same way on any device; the training loop
    computes it on its GPU, where the maps are."""
    grid = _grid(params.to(grid_device), maps.shape[2:]).to(maps.device, maps.dtype)
    return F.grid_sample(maps, grid, mode="nearest", padding_mode="zeros", align_corners=False)
