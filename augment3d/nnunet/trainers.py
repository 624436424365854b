"""nnU-Net v2 trainer classes that put augment3d's transforms in front of nnU-Net's own augmentation.

nnU-Net finds a trainer by its name (``-tr``) in its own package or, from v2.8, in the folders
listed in ``nnUNet_extTrainer``. ``augment3d nnunet-trainers DIR`` writes a one-file folder there
that imports these classes and calls :func:`configure`; the classes themselves live here, in an
importable module, so they and their transforms pickle into nnU-Net's worker processes whatever
the start method. Prediction resolves the trainer by the same name and needs only the network,
which these trainers leave as nnU-Net builds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

try:
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("augment3d.nnunet needs nnU-Net v2: pip install 'augment3d[nnunet]'") from exc

from .labels import brats_classes
from .transforms import SyntheticRestyleTransform, TumourPasteTransform

__all__ = ["Settings", "configure", "settings", "nnUNetTrainerTumourPaste", "nnUNetTrainerSynthetic"]


@dataclass(frozen=True)
class Settings:
    """What the trainers insert: the paste's bank, the restyle's generator and condition, the chance
    per sample, the dataset's label numbers (None: read from its dataset.json) and a seed."""

    bank: str | None = None
    generator: str = "phantom"
    condition: Mapping[str, str] = field(default_factory=lambda: {"site": "SSA"})
    prob: float = 0.5
    labels: Mapping[str, int] | None = None
    seed: int | None = None


_SETTINGS = Settings()


def configure(**changes) -> Settings:
    """Set what the trainers insert (fields of :class:`Settings`); returns the settings now in force."""
    global _SETTINGS
    unknown = set(changes) - set(Settings.__dataclass_fields__)
    if unknown:
        raise TypeError(f"configure() got unknown settings {sorted(unknown)}; known: {', '.join(Settings.__dataclass_fields__)}")
    _SETTINGS = replace(_SETTINGS, **changes)
    return _SETTINGS


def settings() -> Settings:
    return _SETTINGS


class _Augment3dTrainer(nnUNetTrainer):
    """nnU-Net's trainer with one augment3d transform first in the training pipeline: on the crop
    the data loader took, before the spatial transform cuts the patch from its centre."""

    def _augment3d_transform(self, patch_size):
        raise NotImplementedError

    def _augment3d_common(self) -> dict:
        s = settings()
        channels = [self.dataset_json["channel_names"][str(i)] for i in range(len(self.dataset_json["channel_names"]))]
        classes = brats_classes(
            self.dataset_json["labels"], s.labels, source=f"{self.preprocessed_dataset_folder_base}/dataset.json"
        )
        return {
            "prob": s.prob,
            "classes": classes,
            "channels": channels,
            "spacing": self.configuration_manager.spacing,
            "seed": s.seed,
        }

    def get_training_transforms(
        self, patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug, **kwargs
    ):
        # nnU-Net calls this through the instance (self.get_training_transforms), so it can see the
        # dataset's labels, channels and spacing; nnU-Net's own pipeline follows unchanged
        theirs = nnUNetTrainer.get_training_transforms(
            patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug, **kwargs
        )
        ours = self._augment3d_transform(patch_size)
        self.print_to_log_file(f"augment3d: {type(ours).__name__} first in the training transforms ({settings()})")
        return ComposeTransforms([ours, *theirs.transforms])


class nnUNetTrainerTumourPaste(_Augment3dTrainer):
    """Tumour copy-paste from ``configure(bank=...)``'s bank into the training samples."""

    def _augment3d_transform(self, patch_size):
        s = settings()
        if s.bank is None:
            raise RuntimeError(
                "nnUNetTrainerTumourPaste needs a tumour bank: augment3d nnunet-trainers DIR --bank BANK "
                "(or augment3d.nnunet.configure(bank=...))"
            )
        return TumourPasteTransform(s.bank, patch_size=patch_size, **self._augment3d_common())


class nnUNetTrainerSynthetic(_Augment3dTrainer):
    """Training samples restyled by ``configure(generator=..., condition=...)``'s generator (by
    default the bundled phantom generator, into the scarce site SSA)."""

    def _augment3d_transform(self, patch_size):
        s = settings()
        return SyntheticRestyleTransform(s.generator, condition=s.condition, **self._augment3d_common())
