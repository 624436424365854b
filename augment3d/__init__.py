"""augment3d: conditional 3D StyleGAN augmentation for brain-tumour MRI segmentation.

``import augment3d`` is light: heavy dependencies (torch, nibabel, scikit-learn) load when a
submodule that needs them is used; segbench, segmentation-models-pytorch-3d and matplotlib are
never imported from here.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from .errors import Augment3DError, CheckpointError, DataError, RecipeError

try:
    __version__ = version("augment3d")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

_LAZY = {
    "ConditionEncoder": "augment3d.data.conditions",
    "PreprocessConfig": "augment3d.data.preprocess",
    "discover_cases": "augment3d.data.layout",
    "validate_cohort": "augment3d.data.validation",
    "prepare_cohort": "augment3d.data.cohort",
    "read_nifti": "augment3d.data.nifti",
    "make_phantom_cohort": "augment3d.data.phantom.cohort",
    "PhantomConfig": "augment3d.data.phantom.cohort",
    "load_recipe": "augment3d.config",
    "load_generator": "augment3d.sampling",
    "SyntheticGenerator": "augment3d.sampling",
    "SyntheticAugmenter": "augment3d.augmenter",
    "SyntheticReplacement": "augment3d.augmenter",
    "SlowGenerationWarning": "augment3d.augmenter",
    "SyntheticSubjectsDataset": "augment3d.synthetic_dataset",
    "brain_mask": "augment3d.masks",
    "TumourBank": "augment3d.tumour_bank",
    "TumourPaste": "augment3d.tumour_paste",
    "TumourPlacement": "augment3d.tumour_paste",
}

__all__ = ["Augment3DError", "CheckpointError", "DataError", "RecipeError", "__version__", *_LAZY]  # noqa: PLE0604 (the lazy names are strings)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'augment3d' has no attribute {name!r}")
