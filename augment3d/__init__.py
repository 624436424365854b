"""augment3d: conditional 3D StyleGAN augmentation for brain-tumour MRI segmentation.

``import augment3d`` is light: heavy dependencies (torch, nibabel, scikit-learn) load when a
submodule that needs them is used; segbench, segmentation-models-pytorch-3d and matplotlib are
never imported from here.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
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
    "load_generator": "augment3d.synthesis.sampling",
    "SyntheticGenerator": "augment3d.synthesis.sampling",
    "SyntheticAugmenter": "augment3d.transforms.augmenter",
    "SyntheticReplacement": "augment3d.transforms.augmenter",
    "SlowGenerationWarning": "augment3d.transforms.augmenter",
    "SyntheticSubjectsDataset": "augment3d.transforms.synthetic_dataset",
    "brain_mask": "augment3d.transforms.masks",
    "TumourBank": "augment3d.transforms.tumour_bank",
    "TumourPaste": "augment3d.transforms.tumour_paste",
    "TumourPlacement": "augment3d.transforms.tumour_paste",
    "TumourInpainter": "augment3d.transforms.tumour_inpaint",
}

__all__ = ["Augment3DError", "CheckpointError", "DataError", "RecipeError", "__version__", *_LAZY]  # noqa: PLE0604 (the lazy names are strings)


#: module paths before the stage packages (0.x): importing one gives the module at its new home
_MOVED = {
    "atomic": "io.atomic",
    "checkpoint": "io.checkpoint",
    "output_folders": "io.output_folders",
    "run_files": "io.run_files",
    "subject_io": "io.subjects",
    "field_types": "config.field_types",
    "cli_progress": "cli.progress",
    "sampling": "synthesis.sampling",
    "generator_cache": "synthesis.generator_cache",
    "synthetic_cohort": "synthesis.cohort",
    "export": "synthesis.export",
    "resampling": "synthesis.resampling",
    "label_bank": "data.label_bank",
    "label_deformation": "data.label_deformation",
    "augmenter": "transforms.augmenter",
    "synthetic_dataset": "transforms.synthetic_dataset",
    "masks": "transforms.masks",
    "tumour_bank": "transforms.tumour_bank",
    "tumour_paste": "transforms.tumour_paste",
    "stacked": "transforms.stacked",
    "training.loss_term": "training.terms.base",
    "training.mode_seeking": "training.terms.mode_seeking",
    "training.label_consistency": "training.terms.label_consistency",
    "training.texture_match": "training.terms.texture_match",
    "training.contrast_match": "training.terms.contrast_match",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``augment3d.<old name>`` and hands back the module at its new path (one module object, two names)."""

    def find_spec(self, fullname, path=None, target=None):
        old = fullname.partition("augment3d.")[2]
        if not fullname.startswith("augment3d.") or old not in _MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(f"augment3d.{_MOVED[spec.name.partition('.')[2]]}")
        spec.loader_state = module.__spec__  # the import system is about to set the old name's spec on it
        return module

    def exec_module(self, module):
        spec = module.__spec__
        if spec is not None and spec.loader_state is not None:
            module.__spec__ = spec.loader_state


sys.meta_path.append(_MovedModules())


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'augment3d' has no attribute {name!r}")
