"""The contrast term: each tumour class as bright or dark, per modality, as in the real subjects.

A labels-to-images generator knows where each class is but learns slowly from a few dozen cases
how it looks. Measured on the phantom recipe's generators (docs/lab/model.md, "Contrast match"),
enhancing tumour came out too dark on T1 (-0.54 to -0.67 below healthy brain, against -0.15 in
the real cases) and the necrotic core too bright on T2 (+1.1 to +1.25 against +0.62 to +0.92),
on both sites and with either texture weight: a segmenter trained on such subjects learns
tumour classes that no real scan shows.

The term compares, for each generated subject, tumour class and modality, the class's mean
intensity minus the healthy brain's (brain voxels labelled background) with the same contrast
averaged over the real training subjects of its condition, a first-moment statistic matched per
class and condition (feature matching, Salimans et al. 2016, restricted to the regions the label
map names). A condition with few real subjects borrows from all of them: its reference is
shrunk towards the pooled mean with the weight of ``prior`` subjects. Gaps are measured in units
of the real subjects' own spread around their reference, and the first unit is free: a subject
within the real spread is not pulled (the term corrects contrasts no real subject has without
making every subject the average one).
"""

from __future__ import annotations

import torch

from ...models.segmenter import one_hot
from ...models.spatial_conditioning import brain_masks
from .base import Fakes, LossTerm, TermContext
from .texture_match import condition_combinations, condition_rows

__all__ = ["ContrastMatch", "class_contrasts"]


def class_contrasts(
    images: torch.Tensor, onehot: torch.Tensor, masks: torch.Tensor, min_voxels: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each tumour class's mean minus the healthy brain's mean, per subject and modality.

    ``images`` (B, C, X, Y, Z), ``onehot`` (B, 1 + K, X, Y, Z) with background first, ``masks``
    (B, X, Y, Z) -> contrasts (B, K, C) and whether the class has at least ``min_voxels`` voxels
    (and the subject some healthy brain) to measure it on (B, K).

    Example:
        >>> img = torch.zeros(1, 1, 2, 2, 2); img[0, 0, 0] = 1.0
        >>> lab = torch.zeros(1, 2, 2, 2, dtype=torch.long); lab[0, 0] = 1
        >>> contrast, present = class_contrasts(img, one_hot(lab, 2), torch.ones(1, 2, 2, 2), min_voxels=4)
        >>> contrast.tolist(), present.tolist()
        ([[[1.0]]], [[True]])
    """
    x = images.float()
    tumour = onehot[:, 1:].float()
    healthy = onehot[:, 0].float() * masks.float()
    h_count = healthy.sum((1, 2, 3))
    h_mean = (x * healthy[:, None]).sum((2, 3, 4)) / h_count.clamp_min(1.0)[:, None]
    t_count = tumour.sum((2, 3, 4))
    t_mean = torch.einsum("bcxyz,bkxyz->bkc", x, tumour) / t_count.clamp_min(1.0)[..., None]
    present = (t_count >= min_voxels) & (h_count >= min_voxels)[:, None]
    return t_mean - h_mean[:, None], present


class ContrastMatch(LossTerm):
    """How far each generated tumour class's contrast lies outside its condition's real spread.

    Logs ``contrast``: over the classes each subject has, the mean squared excess of the gap over
    one real spread, in real spreads (before the weight).
    """

    name = "contrast"

    def __init__(
        self,
        weight: float,
        images: torch.Tensor,
        labels: torch.Tensor,
        masks: torch.Tensor,
        conditions: torch.Tensor,
        classes: int,
        device: str,
        prior: float = 2.0,
        min_spread: float = 0.05,
        batch: int = 8,
    ):
        super().__init__(weight)
        found_parts, present_parts = [], []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                c, p = class_contrasts(images[i : i + batch], one_hot(labels[i : i + batch], classes), masks[i : i + batch])
                found_parts.append(c)
                present_parts.append(p)
        found, present = torch.cat(found_parts), torch.cat(present_parts).float()
        pooled_n = present.sum(0)  # (K,)
        pooled = (found * present[..., None]).sum(0) / pooled_n.clamp_min(1.0)[:, None]
        self.combos, index = condition_combinations(conditions)
        rows = []
        for k in range(len(self.combos)):
            mine = index == k
            n = present[mine].sum(0)
            total = (found[mine] * present[mine][..., None]).sum(0)
            rows.append((total + prior * pooled) / (n + prior).clamp_min(1e-8)[:, None])
        reference = torch.stack(rows)
        residual = (found - reference[index]) ** 2 * present[..., None]
        #: per condition combination, class and modality: the real contrast G's subjects are pulled to
        self.reference = reference.to(device)
        #: per class and modality: the real subjects' spread around their reference (floored)
        self.spread = (residual.sum(0) / pooled_n.clamp_min(1.0)[:, None]).sqrt().clamp_min(min_spread).to(device)
        #: the classes some real training subject has (a class no real subject shows is not judged)
        self.known = (pooled_n > 0).to(device)
        self.combos = self.combos.to(device)

    @classmethod
    def from_settings(cls, settings, context: TermContext) -> ContrastMatch:
        data = context.data
        return cls(
            settings.weight, data.images, data.labels, data.masks, data.conditions, context.model.label_classes, context.device
        )

    def loss(self, fakes: Fakes) -> torch.Tensor:
        rows = condition_rows(fakes.conditions, self.combos, "contrast")
        if fakes.labels is None:
            raise ValueError("the contrast term needs the label maps G rendered its subjects from")
        found, present = class_contrasts(fakes.images, fakes.labels.detach(), brain_masks(fakes.images.detach()))
        judged = present & self.known[None]
        gap = (((found - self.reference[rows]).abs() / self.spread - 1.0).clamp_min(0.0) ** 2).mean(-1)  # (B, K)
        return torch.where(judged, gap, 0.0).sum() / judged.sum().clamp_min(1)
