"""The label maps a labels-to-images run keeps: its training subjects' maps and brain masks on
the model grid (``label_maps.safetensors`` + ``.json`` in the run folder), so that ``sample``
can draw new subjects without the data: a seed picks a map (one of the requested condition's,
when the run has any) and deforms it (:mod:`augment3d.data.label_deformation`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..io.checkpoint import bundle_exists, load_bundle, save_bundle
from ..errors import CheckpointError
from .label_deformation import deform_maps, draw_deformations
from ..models.spatial_conditioning import label_maps

__all__ = ["LabelBank", "BANK_FILE"]

BANK_FILE = "label_maps"


@dataclass
class LabelBank:
    """``labels`` (N, X, Y, Z) uint8 in 0-3, ``masks`` (N, X, Y, Z) bool, and per map its
    subject id and condition."""

    labels: np.ndarray
    masks: np.ndarray
    subjects: list[str]
    conditions: list[dict[str, str]]

    @classmethod
    def from_training_data(cls, data, encoder, subject_ids: Sequence[str] | None = None) -> LabelBank:
        """The maps of :class:`~augment3d.training.loop.TrainingData` (subjects named by ``subject_ids``
        or by their index)."""
        n = data.labels.shape[0]
        conditions = encoder.decode(data.conditions.numpy()) if encoder.dim else [{} for _ in range(n)]
        return cls(
            data.labels.numpy().astype(np.uint8),
            data.masks.numpy().astype(bool),
            list(subject_ids) if subject_ids is not None else [f"subject {i}" for i in range(n)],
            conditions,
        )

    def save(self, folder: str | os.PathLike) -> None:
        tensors = {
            "labels": torch.from_numpy(self.labels.astype(np.uint8)),
            "masks": torch.from_numpy(self.masks.astype(np.uint8)),
        }
        save_bundle(folder, BANK_FILE, "label_maps", tensors, {"subjects": self.subjects, "conditions": self.conditions})

    @classmethod
    def load(cls, folder: str | os.PathLike, shape: Sequence[int]) -> LabelBank | None:
        """The bank of a run folder (None when the run has none). Raises :class:`CheckpointError`."""
        if not bundle_exists(folder, BANK_FILE):
            return None
        tensors, meta = load_bundle(folder, BANK_FILE, "label_maps")
        where = os.path.join(folder, f"{BANK_FILE}.json")
        try:
            labels, masks = tensors["labels"].numpy(), tensors["masks"].numpy().astype(bool)
            subjects, conditions = [str(s) for s in meta["subjects"]], [dict(c) for c in meta["conditions"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(where, f"does not describe label maps ({exc})") from None
        n = len(subjects)
        if labels.shape != (n, *shape) or masks.shape != labels.shape or len(conditions) != n or labels.max(initial=0) > 3:
            raise CheckpointError(
                where, f"label maps of shape {labels.shape} do not fit {n} subjects on the {'x'.join(map(str, shape))} grid"
            )
        return cls(labels, masks, subjects, conditions)

    def candidates(self, condition: Mapping[str, str] | None) -> list[int]:
        """The maps of subjects with the requested condition (every column given), or all of them."""
        matching = [i for i, c in enumerate(self.conditions) if all(c.get(k) == v for k, v in (condition or {}).items())]
        return matching or list(range(len(self.subjects)))

    def draw(self, generator: torch.Generator, condition: Mapping[str, str] | None) -> tuple[torch.Tensor, str]:
        """One deformed map (1, 4, X, Y, Z) and its source subject, drawn from ``generator``."""
        options = self.candidates(condition)
        index = options[int(torch.randint(len(options), (), generator=generator))]
        maps = label_maps(
            torch.from_numpy(self.labels[index : index + 1].astype(np.int64)), torch.from_numpy(self.masks[index : index + 1])
        )
        return deform_maps(maps, draw_deformations(1, generator)), self.subjects[index]
