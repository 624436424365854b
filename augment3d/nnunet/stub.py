"""``augment3d nnunet-trainers DIR``: the folder ``nnUNet_extTrainer`` points at.

One file, ``augment3d_trainers.py``: it imports the trainer classes from
:mod:`augment3d.nnunet.trainers` (so nnU-Net finds them by name, for training and prediction)
and passes the chosen settings to :func:`~augment3d.nnunet.trainers.configure`. Needs neither
nnU-Net to write.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..io.atomic import atomic_write_text
from ..errors import DataError

__all__ = ["STUB", "TRAINERS", "write_trainer_folder"]

STUB = "augment3d_trainers.py"
TRAINERS = ("nnUNetTrainerTumourPaste", "nnUNetTrainerSynthetic")


def write_trainer_folder(
    folder: str | os.PathLike,
    *,
    bank: str | os.PathLike | None = None,
    generator: str = "phantom",
    condition: Mapping[str, str] | None = None,
    prob: float = 0.5,
    labels: Mapping[str, int] | None = None,
    seed: int | None = None,
) -> Path:
    """Write ``folder/augment3d_trainers.py`` (the folder is created; the file replaced atomically)."""
    from ..io.checkpoint import bundle_exists
    from ..pretrained import run_folder
    from ..io.run_files import GENERATOR
    from ..transforms.tumour_bank import BANK_FILE

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(folder, "exists and is not a folder")
    if not 0.0 <= prob <= 1.0:
        raise DataError(None, f"--prob must be in [0, 1], got {prob}")
    if bank is not None:
        bank = Path(bank).resolve()
        if not (bank / f"{BANK_FILE}.safetensors").is_file():
            raise DataError(bank, f"is not a tumour bank (no {BANK_FILE}.safetensors); build one with augment3d.TumourBank")
    if not bundle_exists(run_folder(generator), GENERATOR):
        raise DataError(Path(generator), "is neither a run folder with a trained generator nor a bundled generator's name")
    if Path(generator).exists():
        generator = str(Path(generator).resolve())
    settings = {
        "bank": None if bank is None else str(bank),
        "generator": generator,
        "condition": dict(condition) if condition is not None else {"site": "SSA"},
        "prob": float(prob),
        "labels": dict(labels) if labels else None,
        "seed": seed,
    }
    text = (
        f'"""augment3d\'s nnU-Net v2 trainers, written by `augment3d nnunet-trainers`.\n\n'
        f"    export nnUNet_extTrainer={folder.resolve()}\n"
        f"    nnUNetv2_train DATASET 3d_fullres FOLD -tr {TRAINERS[0]}   # or -tr {TRAINERS[1]}\n"
        f'"""\n\n'
        f"from augment3d.nnunet.trainers import configure, {', '.join(TRAINERS)}  # noqa: F401\n\n"
        f"configure(**{settings!r})\n"
    )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / STUB, text)
    return folder / STUB
