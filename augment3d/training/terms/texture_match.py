"""The texture term: G's images under a condition as sharp as the real subjects of that condition.

Scanners differ in what a discriminator learns slowly from a few cases: an older scanner's images
are blurrier and noisier (thick slices, low field), a newer one's sharp. Measured on the phantom
cohort, real SSA subjects had half the high-frequency energy of HIC ones (mean |Laplacian| 0.26
against 0.57 on T1), while the generator's restyles into SSA kept HIC's (0.43): the site
classifier then called three in four of them HIC (docs/lab/model.md, "Texture match"). The term
compares, per modality, the log mean |Laplacian| inside the brain of each generated subject with
the mean of the real training subjects that share its condition (each site/grade combination its
own reference, fixed at the start), a spectral statistic matched per condition as in spectral
regularisation of GANs (Durall et al., CVPR 2020).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...models.spatial_conditioning import brain_masks
from .base import Fakes, LossTerm, TermContext

__all__ = ["TextureMatch", "texture_statistic", "condition_combinations", "condition_rows"]


def condition_combinations(conditions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of encoded ``conditions`` (N, C) and each subject's row index; an
    unconditional run (C = 0) has one combination, the empty one."""
    if conditions.shape[1] == 0:
        return conditions[:1], torch.zeros(conditions.shape[0], dtype=torch.long)
    return torch.unique(conditions, dim=0, return_inverse=True)


def condition_rows(conditions: torch.Tensor | None, combos: torch.Tensor, term: str) -> torch.Tensor:
    """Each subject's row in ``combos`` (the real training data's condition combinations), for a
    term that compares G's subjects with the real ones of their condition."""
    if conditions is None:
        raise ValueError(f"the {term} term needs the conditions G rendered its subjects under")
    match = (conditions[:, None, :] == combos[None]).all(-1)
    if not match.any(1).all():
        raise ValueError(f"the {term} term got a condition none of the real training subjects has")
    return match.float().argmax(1)


def _laplacian_kernel(channels: int, device, dtype) -> torch.Tensor:
    k = torch.zeros(3, 3, 3, device=device, dtype=dtype)
    k[1, 1, 1] = -6.0
    for axis in range(3):
        for end in (0, 2):
            index = [1, 1, 1]
            index[axis] = end
            k[tuple(index)] = 1.0
    return k.expand(channels, 1, 3, 3, 3).contiguous()


def texture_statistic(images: torch.Tensor, masks: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """log mean |Laplacian| per subject and modality over the brain's interior (voxels whose six
    neighbours are brain too): (B, C, X, Y, Z) images, (B, X, Y, Z) masks -> (B, C)."""
    x = images.float()
    lap = F.conv3d(x, _laplacian_kernel(x.shape[1], x.device, x.dtype), padding=1, groups=x.shape[1]).abs()
    inside = -F.max_pool3d(-masks[:, None].float(), 3, stride=1, padding=1)  # eroded by one voxel
    total = (lap * inside).sum((2, 3, 4))
    return torch.log(total / inside.sum((2, 3, 4)).clamp_min(1.0) + eps)


class TextureMatch(LossTerm):
    """Squared gap between each generated subject's texture statistic and its condition's real mean.

    Logs ``texture`` (the mean squared log-ratio, before the weight).
    """

    name = "texture"

    def __init__(
        self, weight: float, images: torch.Tensor, masks: torch.Tensor, conditions: torch.Tensor, device: str, batch: int = 8
    ):
        super().__init__(weight)
        with torch.no_grad():
            stats = torch.cat(
                [texture_statistic(images[i : i + batch], masks[i : i + batch]) for i in range(0, len(images), batch)]
            )
        #: the condition combinations of the real subjects and each one's mean statistic (K, C)
        self.combos, index = condition_combinations(conditions)
        self.reference = torch.stack([stats[index == k].mean(0) for k in range(len(self.combos))]).to(device)
        self.combos = self.combos.to(device)

    @classmethod
    def from_settings(cls, settings, context: TermContext) -> TextureMatch:
        data = context.data
        return cls(settings.weight, data.images, data.masks, data.conditions, context.device)

    def loss(self, fakes: Fakes) -> torch.Tensor:
        rows = condition_rows(fakes.conditions, self.combos, "texture")
        found = texture_statistic(fakes.images, brain_masks(fakes.images.detach()))
        return ((found - self.reference[rows]) ** 2).mean()
