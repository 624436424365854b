"""Label maps as the generator's input (labels-to-images mode): the map tensor and SPADE.

A label map enters as four channels on the model grid: the brain mask, then one channel per
tumour class (NETC, SNFH, ET). :class:`SpatialModulation` turns the map, resized to a layer's
grid, into a per-voxel scale and shift of that layer's features (SPADE, Park et al. 2019), so no
style can ignore where the tumour is: the style (z and the site/grade condition) sets the
appearance, the map the anatomy and the lesion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import EqualConv3d

__all__ = [
    "SpatialModulation",
    "ball_regions",
    "brain_masks",
    "inpaint_maps",
    "label_maps",
    "maps_to_labels",
    "map_pyramid",
    "tumour_regions",
]


def brain_masks(images: torch.Tensor) -> torch.Tensor:
    """Where any of a subject's images is above the background (-1): (N, 4, ...) -> (N, ...) bool."""
    return (images > -1.0 + 1e-3).any(1)


def label_maps(labels: torch.Tensor, mask: torch.Tensor, classes: int = 4) -> torch.Tensor:
    """(B, X, Y, Z) labels in 0..classes-1 and a (B, X, Y, Z) brain mask -> (B, classes, X, Y, Z)
    float maps: the mask, then one channel per tumour class (tumour voxels count as brain).

    Example:
        >>> labels = torch.tensor([[[[0, 1], [2, 3]]]])
        >>> label_maps(labels, labels >= 0)[0, :, 0, 1, 1].tolist()
        [1.0, 0.0, 0.0, 1.0]
    """
    labels = labels.long()
    tumour = F.one_hot(labels, classes).movedim(-1, 1)[:, 1:].float()
    brain = (mask.bool() | (labels > 0)).float()[:, None]
    return torch.cat([brain, tumour], 1)


def inpaint_maps(maps: torch.Tensor, images: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """An inpainting generator's input: label ``maps`` (B, classes, ...) as :func:`label_maps`
    makes them, the crop's ``images`` (B, C, ...) with the region blanked to 0 (mid-grey on the
    [-1, 1] scale: nothing of what was there shows through) and the ``region`` to render (B, ...),
    1 inside, 0 outside (values between blend the rendering into the crop).

    Example:
        >>> maps = label_maps(torch.zeros(1, 2, 2, 2, dtype=torch.long), torch.ones(1, 2, 2, 2))
        >>> region = torch.zeros(1, 2, 2, 2); region[0, 0] = 1.0
        >>> x = inpaint_maps(maps, torch.full((1, 4, 2, 2, 2), 0.5), region)
        >>> tuple(x.shape), x[0, 4:8, 0, 0, 0].tolist(), x[0, 4:8, 1, 0, 0].tolist()
        ((1, 9, 2, 2, 2), [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5])
    """
    region = region.to(images.dtype)[:, None]
    return torch.cat([maps.to(images.dtype), images * (1.0 - region), region], 1)


def ball_regions(shape, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Balls (B, X, Y, Z) float, 0 or 1: ball i of radius ``radii[i]`` voxels around ``centres[i]``
    (B, 3; voxel coordinates)."""
    device = centres.device
    grid = [torch.arange(n, device=device, dtype=torch.float32) for n in shape]
    x, y, z = (g.reshape([1] + [-1 if i == j else 1 for j in range(3)]) for i, g in enumerate(grid))
    c = centres.to(torch.float32)
    distance = (
        (x - c[:, 0, None, None, None]) ** 2 + (y - c[:, 1, None, None, None]) ** 2 + (z - c[:, 2, None, None, None]) ** 2
    ).sqrt()
    return (distance <= radii.to(device=device, dtype=torch.float32).reshape(-1, 1, 1, 1)).float()


def tumour_regions(
    labels: torch.Tensor,
    grow: torch.Tensor,
    radius: float = 0.0,
    balls: torch.Tensor | None = None,
    centres: torch.Tensor | None = None,
) -> torch.Tensor:
    """The regions an inpainting generator renders: each subject's tumour (labels > 0, (B, X, Y, Z))
    grown by ``grow[i]`` voxels (26-connected); or a ball of ``radius + grow[i]`` voxels around
    ``centres[i]`` (B, 3; default the grid's centre) for a subject without tumour or where
    ``balls[i]`` (B,) bool is set (healthy tissue, or whatever the map says there, rendered again).
    (B, X, Y, Z) float, 0 or 1.

    Example:
        >>> labels = torch.zeros(2, 5, 5, 5, dtype=torch.long); labels[0, 2, 2, 2] = 3
        >>> regions = tumour_regions(labels, torch.tensor([1, 0]), radius=1.0)
        >>> int(regions[0].sum()), int(regions[1].sum())  # a 3^3 cube; a ball of radius 1: 7 voxels
        (27, 7)
    """
    tumour = (labels > 0).to(torch.float32)[:, None]
    grown = [tumour]
    for _ in range(int(grow.max()) if grow.numel() else 0):
        grown.append(F.max_pool3d(grown[-1], 3, stride=1, padding=1))
    index = grow.to(device=labels.device, dtype=torch.long)
    regions = torch.stack(grown)[index, torch.arange(labels.shape[0], device=labels.device), 0]
    ball = tumour.flatten(1).sum(1) == 0
    if balls is not None:
        ball = ball | balls.to(labels.device)
    if ball.any():
        if centres is None:
            centres = torch.tensor([(n - 1) / 2 for n in labels.shape[1:]], device=labels.device).expand(labels.shape[0], 3)
        drawn = ball_regions(labels.shape[1:], centres.to(labels.device), radius + index.float())
        regions = torch.where(ball.reshape(-1, 1, 1, 1), drawn, regions)
    return regions


def maps_to_labels(maps: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`label_maps` for the labels: (B, classes, ...) -> (B, ...) uint8."""
    values = torch.arange(1, maps.shape[1], device=maps.device, dtype=maps.dtype).reshape(1, -1, 1, 1, 1)
    return (maps[:, 1:] * values).sum(1).round().to(torch.uint8)


def map_pyramid(maps: torch.Tensor, sizes, channels_last: bool = False) -> dict[tuple, torch.Tensor]:
    """``maps`` averaged down to every grid in ``sizes`` (each voxel: the share of each class)."""
    out = {}
    for size in sizes:
        size = tuple(size)
        resized = maps if tuple(maps.shape[2:]) == size else F.interpolate(maps, size=size, mode="area")
        out[size] = resized.contiguous(memory_format=torch.channels_last_3d) if channels_last else resized
    return out


class SpatialModulation(nn.Module):
    """SPADE: ``x * (1 + gamma(map)) + beta(map)`` with gamma, beta from a 3x3x3 convolution of
    the map, then a ``kernel``-sized one (3: as in SPADE; 1: far cheaper at the same receptive
    field of the map's encoding).

    The output convolution starts at zero, so a new network starts as plain StyleGAN modulation
    and learns how much the map should shape each layer.
    """

    def __init__(self, map_channels: int, channels: int, hidden: int = 16, kernel: int = 3):
        super().__init__()
        self.shared = EqualConv3d(map_channels, hidden, 3, activate=True)
        self.scale_shift = EqualConv3d(hidden, 2 * channels, kernel)
        nn.init.zeros_(self.scale_shift.weight)

    def forward(self, x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.scale_shift(self.shared(maps.to(x.dtype))).chunk(2, dim=1)
        # the product added into the fresh sum in place: addcmul's values, one full-size
        # allocation fewer (docs/lab/performance.md)
        return (x + beta).addcmul_(x, gamma)
