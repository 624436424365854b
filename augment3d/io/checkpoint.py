"""Checkpoints: safetensors weights + a JSON description, written atomically, never unpickled.

A run folder holds:

* ``generator.safetensors`` + ``generator.json`` - the EMA generator, with everything needed to use
  it (architecture, modalities, shape, condition encoder, preprocessing, package version, step);
* ``train_state.safetensors`` + ``train_state.json`` - G, D, EMA, optimiser moments and RNG state,
  for ``--resume``.

Each JSON file records the SHA-256 of its weights file. A save writes the new weights to
``<name>.safetensors.next``, then the JSON, then renames the weights into place, each step
atomic, so a save killed at any point leaves one intact bundle: the old one (JSON not yet
replaced; the stray ``.next`` is ignored) or the new one (JSON replaced; the loader finds the
weights matching its hash in ``.next`` and finishes the rename). Weights matching neither are
refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .atomic import atomic_write_bytes, atomic_write_text, fsync_dir
from ..errors import CheckpointError

__all__ = ["FORMAT_VERSION", "save_bundle", "load_bundle", "bundle_exists", "recorded_step"]

FORMAT_VERSION = 1
_NEXT = ".next"  # suffix of weights written but not yet committed


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_bundle(folder: str | os.PathLike, name: str, kind: str, tensors: Mapping[str, torch.Tensor], meta: dict) -> None:
    """Write ``<name>.safetensors`` then ``<name>.json`` (atomic each; JSON carries the hash)."""
    from safetensors.torch import save

    folder = Path(folder)
    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    blob = save(clean)
    weights, pending = folder / f"{name}.safetensors", folder / f"{name}.safetensors{_NEXT}"
    atomic_write_bytes(pending, blob)
    record = {
        "format": f"augment3d.{kind}",
        "format_version": FORMAT_VERSION,
        **meta,
        "weights": weights.name,
        "weights_sha256": _sha256(blob),
    }
    atomic_write_text(folder / f"{name}.json", json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(pending, weights)
    fsync_dir(folder)


def bundle_exists(folder: str | os.PathLike, name: str) -> bool:
    folder = Path(folder)
    weights = folder / f"{name}.safetensors"
    return (folder / f"{name}.json").is_file() and (weights.is_file() or weights.with_name(weights.name + _NEXT).is_file())


def recorded_step(folder: str | os.PathLike, name: str):
    """The ``step`` a bundle's JSON records (None when it is missing or unreadable); no weights are read."""
    try:
        meta = json.loads((Path(folder) / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return meta.get("step") if isinstance(meta, dict) else None


def _matching_weights(weights_path: Path, sha256) -> bytes | None:
    """The weights whose hash the JSON records: in place, or in ``.next`` when a save was cut short."""
    blob = weights_path.read_bytes() if weights_path.is_file() else None
    if blob is not None and _sha256(blob) == sha256:
        return blob
    pending = weights_path.with_name(weights_path.name + _NEXT)
    if pending.is_file():
        candidate = pending.read_bytes()
        if _sha256(candidate) == sha256:
            try:  # finish the interrupted save
                os.replace(pending, weights_path)
            except OSError:
                pass
            return candidate
    return None


def load_bundle(folder: str | os.PathLike, name: str, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and check a bundle written by :func:`save_bundle`. Raises :class:`CheckpointError`."""
    from safetensors.torch import load

    folder = Path(folder)
    meta_path, weights_path = folder / f"{name}.json", folder / f"{name}.safetensors"
    if not meta_path.is_file():
        raise CheckpointError(meta_path, "missing (not an augment3d run folder, or the run saved nothing yet)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(meta_path, f"not a JSON file ({exc.__class__.__name__})") from None
    except RecursionError:
        raise CheckpointError(meta_path, "nested too deeply to be an augment3d description") from None
    if not isinstance(meta, dict) or meta.get("format") != f"augment3d.{kind}":
        raise CheckpointError(
            meta_path, f"not an augment3d {kind} description (format {meta.get('format') if isinstance(meta, dict) else None!r})"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            meta_path, f"format version {version!r} is newer than this augment3d reads ({FORMAT_VERSION}); upgrade augment3d"
        )
    if not bundle_exists(folder, name):
        raise CheckpointError(weights_path, "missing")
    blob = _matching_weights(weights_path, meta.get("weights_sha256"))
    if blob is None:
        raise CheckpointError(
            weights_path, "does not match the SHA-256 recorded in " + meta_path.name + " (damaged, replaced or half-written)"
        )
    try:
        tensors = load(blob)
    except Exception as exc:  # safetensors parses; it never executes what it reads
        raise CheckpointError(weights_path, f"not a safetensors file ({exc})") from None
    return tensors, meta


def checkpoint_hash(path: str | os.PathLike, name: str = "generator") -> str:
    """The SHA-256 of a bundle's weights (a run's generator, a tumour bank), as recorded in its ``<name>.json``."""
    import json

    meta_path = Path(path) / f"{name}.json"
    try:
        return str(json.loads(meta_path.read_text())["weights_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(meta_path, f"missing or not an augment3d {name.replace('_', ' ')} description") from None
