"""Generators that ship inside augment3d, by name: ``phantom``.

A bundled generator is the generator of a run folder (weights in safetensors, its JSON, the
training label maps it renders from) kept as package data, with ``pretrained.json`` saying how it
was made: the bundled recipe and its SHA-256, the phantom cohort and the subjects it trained on,
the command. ``augment3d sample phantom OUT``, ``SyntheticAugmenter("phantom")`` and a recipe's
``[bench] generator = "phantom"`` use it without training; a folder of that name in the current
directory takes precedence, as a path always does.

``phantom``: trained by the ``phantom`` recipe on its development cohort's training split (37 of
its 124 cases: 31 HIC, 6 SSA), the generator the ``quick`` recipe's bench (``make demo``) uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["PRETRAINED_DIR", "available", "bundled_path", "run_folder", "provenance"]

PRETRAINED_DIR = Path(__file__).parent
PROVENANCE = "pretrained.json"


def available() -> list[str]:
    """Names of the bundled generators."""
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / PROVENANCE).is_file())


def bundled_path(name: str) -> Path | None:
    """The folder of the bundled generator ``name``, or None."""
    folder = PRETRAINED_DIR / name
    return folder if "/" not in name and (folder / PROVENANCE).is_file() else None


def run_folder(name_or_path: str | os.PathLike) -> Path:
    """A run folder as given, or, when no such folder exists, the bundled generator of that name."""
    path = Path(name_or_path)
    if path.exists():
        return path
    return bundled_path(str(name_or_path)) or path


def provenance(folder: str | os.PathLike) -> dict | None:
    """How a bundled generator was made (its ``pretrained.json``); None for any other run folder."""
    path = Path(folder) / PROVENANCE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
