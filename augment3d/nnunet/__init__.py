"""augment3d inside nnU-Net v2 (``pip install augment3d[nnunet]``): transforms and trainers.

- :class:`TumourPasteTransform`, :class:`SyntheticRestyleTransform`: batchgeneratorsv2
  transforms for nnU-Net's training pipeline (:mod:`augment3d.nnunet.transforms`);
- :class:`nnUNetTrainerTumourPaste`, :class:`nnUNetTrainerSynthetic`: trainers that put them
  first, found by nnU-Net through ``nnUNet_extTrainer`` (``augment3d nnunet-trainers DIR``
  writes that folder) and set up with :func:`configure` (:mod:`augment3d.nnunet.trainers`);
- :func:`brats_classes`: a dataset.json's label numbers as BraTS classes.

docs/NNUNET.md shows a training and a prediction run. ``import augment3d`` does not import this.
"""

from .labels import brats_classes
from .trainers import Settings, configure, nnUNetTrainerSynthetic, nnUNetTrainerTumourPaste, settings
from .transforms import SyntheticRestyleTransform, TumourPasteTransform

__all__ = [
    "brats_classes",
    "Settings",
    "configure",
    "settings",
    "nnUNetTrainerSynthetic",
    "nnUNetTrainerTumourPaste",
    "SyntheticRestyleTransform",
    "TumourPasteTransform",
]
