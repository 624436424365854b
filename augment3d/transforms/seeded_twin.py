"""What the placing transforms share: a per-worker seeded stream and a deterministic twin applied and recorded.

:class:`~augment3d.transforms.tumour_paste.TumourPaste` and
:class:`~augment3d.transforms.tumour_inpaint.TumourInpainter` each draw a placement for a subject
(``placement(subject, rng)`` returns the deterministic twin), apply the twin to the subject and
record it in the subject's history, so ``get_composed_history()`` replays exactly. With a
``seed`` the draws come from a stream seeded by it and the DataLoader worker's id (workers
differ, reruns repeat); without one, from torch's global generator, as torchio's own transforms draw.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["SeededTwin"]


class SeededTwin:
    """Mixin for a torchio ``RandomTransform`` with ``seed`` and ``placement(subject, rng)``."""

    seed: int | None
    _rng: np.random.Generator | None = None
    _rng_worker: int | None = None

    def _generator(self) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(0, 2**31, (1,)).item()))
        info = torch.utils.data.get_worker_info()
        worker = -1 if info is None else info.id
        if self._rng is None or self._rng_worker != worker:
            self._rng, self._rng_worker = np.random.default_rng([int(self.seed), worker + 1]), worker
        return np.random.default_rng(int(self._rng.integers(0, 2**31)))

    def placement(self, subject, rng: np.random.Generator):
        raise NotImplementedError

    def apply_transform(self, subject):
        # torchio's __call__ has drawn whether to apply (p) already, and the subject is already this
        # transform's copy: apply the twin in place and record it (replaying the history copies as usual)
        twin = self.placement(subject, self._generator())
        subject = twin.apply_transform(subject)
        subject.add_transform(twin, twin._get_reproducing_arguments())
        return subject
