"""Cache of prepared cases, so repeated runs do not re-read and re-sample NIfTI files.

One safetensors file per case (never a pickle). The key hashes the cache format version, the
preprocessing settings, the conditioning columns and, for every input file, its resolved path,
size and modification time (ns); metadata.csv is part of the key too. A rewritten file
changes its size or mtime, so it is noticed and the case is prepared again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_write_bytes
from ..brats import KEYS
from .layout import Case
from .preprocess import PreparedCase

__all__ = ["CACHE_VERSION", "default_cache_dir", "cache_key", "load_cached", "store_cached"]

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$AUGMENT3D_CACHE`` if set, else ``~/.cache/augment3d/prepared``."""
    env = os.environ.get("AUGMENT3D_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "augment3d" / "prepared"


def _stat(path: Path | None) -> list:
    if path is None or not path.exists():
        return [None]
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def cache_key(case: Case, settings: dict, metadata_path: Path | None = None) -> str:
    payload = {
        "version": CACHE_VERSION,
        "settings": settings,
        "files": {key: _stat(case.paths.get(key)) for key in KEYS},
        "metadata": _stat(metadata_path),
        "subject": case.subject_id,
    }
    digest = hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=16).hexdigest()
    return f"{case.subject_id}-{digest}"


def load_cached(cache_dir: Path, key: str) -> PreparedCase | None:
    """The cached case for ``key``, or ``None`` (missing or unreadable entries are ignored)."""
    from safetensors import safe_open

    path = Path(cache_dir) / f"{key}.safetensors"
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        return PreparedCase(
            subject_id=meta["subject_id"],
            images=tensors["images"],
            label=tensors["label"],
            affine=tensors["affine"],
            conditions=json.loads(meta["conditions"]),
            source_shape=tuple(json.loads(meta["source_shape"])),
            source_affine=tensors["source_affine"],
        )
    except Exception:  # a damaged cache entry is rebuilt, never trusted
        return None


def store_cached(cache_dir: Path, key: str, prepared: PreparedCase) -> None:
    from safetensors.numpy import save

    tensors: dict[str, np.ndarray] = {
        "images": np.ascontiguousarray(prepared.images, dtype=np.float32),
        "label": np.ascontiguousarray(prepared.label, dtype=np.uint8),
        "affine": np.ascontiguousarray(prepared.affine, dtype=np.float64),
        "source_affine": np.ascontiguousarray(prepared.source_affine, dtype=np.float64),
    }
    meta = {
        "subject_id": prepared.subject_id,
        "conditions": json.dumps(prepared.conditions),
        "source_shape": json.dumps(list(prepared.source_shape)),
    }
    atomic_write_bytes(Path(cache_dir) / f"{key}.safetensors", save(tensors, metadata=meta))
