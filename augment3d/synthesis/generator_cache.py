"""The per-process generator cache shared by augment3d's transforms and datasets.

Each process (the main one, every DataLoader worker) loads a generator once and keeps the last few
generated batches, so a transform's deterministic twin replays what its batch produced. Leaf of the
torchio face: :mod:`augment3d.transforms.augmenter`, :mod:`augment3d.transforms.synthetic_dataset` and
:mod:`augment3d.monai` use it; it knows nothing of torchio.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

__all__ = [
    "SLOW_GFLOP",
    "SlowGenerationWarning",
    "worker_device",
    "get_generator",
    "keep_generator",
    "one_thread",
    "generate_batch",
]

_GENERATORS: dict[tuple, Any] = {}  # path, device -> SyntheticGenerator
_BATCHES: OrderedDict = OrderedDict()
_BATCH_CACHE_SIZE = 8


def worker_device(device: str) -> str:
    """CUDA cannot be re-initialised in forked DataLoader workers: generate on the CPU there."""
    if torch.device(device).type == "cuda" and torch.utils.data.get_worker_info() is not None:
        return "cpu"
    return device


#: a generator doing more than this many GFLOP a subject gets a :class:`SlowGenerationWarning` when
#: it is loaded to render on the CPU (the `quick` recipe's does 8.5, `brats_africa_128`'s 2983: tens of
#: seconds a subject on one CPU thread, docs/AUGMENTER.md)
SLOW_GFLOP = 100.0


class SlowGenerationWarning(UserWarning):
    """The generator renders on the CPU but is too large for that: seconds to minutes a subject."""


def _warn_if_slow_on_cpu(gen) -> None:
    from ..models.generator import render_flops

    gflop = render_flops(gen.network.config) / 1e9
    if gflop <= SLOW_GFLOP:
        return
    worker = torch.utils.data.get_worker_info() is not None
    where = "in a DataLoader worker (where CUDA cannot run)" if worker else "on the CPU"
    warnings.warn(
        f"the generator of {gen.path} does {gflop:.0f} GFLOP a subject ({'x'.join(map(str, gen.shape))} grid) and "
        f"renders {where}: seconds to minutes a subject at one thread, and GiBs of memory a process. Generate "
        f"on a GPU in the main process (device='cuda' with num_workers=0), or write a synthetic cohort once "
        f"with `augment3d sample --device cuda` and mix it in (docs/AUGMENTER.md, 'Cost')",
        SlowGenerationWarning,
        stacklevel=2,
    )


def get_generator(path: str, sha256: str, device: str):
    """The generator of ``path`` for this process, loaded once (lazily) and checked against ``sha256``."""
    from .sampling import load_generator

    key = (str(Path(path).resolve()), device)
    gen = _GENERATORS.get(key)
    if gen is None or gen.meta.get("weights_sha256") != sha256:
        gen = load_generator(path, device)
        if gen.meta.get("weights_sha256") != sha256:
            raise CheckpointError(
                path,
                f"generator weights changed since the transform was made (expected {sha256[:12]}..., found {str(gen.meta.get('weights_sha256'))[:12]}...)",
            )
        _GENERATORS[key] = gen
        if gen.device.type == "cpu":
            _warn_if_slow_on_cpu(gen)
    return gen


def keep_generator(path: str, generator) -> None:
    """Serve ``generator`` (already loaded from ``path``) to this process's transforms."""
    _GENERATORS[(str(Path(path).resolve()), str(generator.device))] = generator


@contextlib.contextmanager
def one_thread():
    """Generate at one thread, as DataLoader workers do: convolutions then round the same way in
    a worker and in the main process, so a history made in one replays exactly in the other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def generate_batch(
    gen,
    seeds: tuple[int, ...],
    condition: dict | None,
    psi: float,
    precision: str = "fp32",
    maps_matching: tuple[str, ...] | None = None,
):
    """A whole batch, cached: the twin replays exactly what the batch produced."""
    key = (
        gen.meta.get("weights_sha256"),
        str(gen.device),
        seeds,
        tuple(sorted((condition or {}).items())),
        psi,
        precision,
        maps_matching,
    )
    if key in _BATCHES:
        _BATCHES.move_to_end(key)
        return _BATCHES[key]
    with one_thread():
        result = gen.generate(
            condition=condition,
            seeds=list(seeds),
            psi=psi,
            batch_size=len(seeds),
            precision=precision,
            maps_matching=maps_matching,
        )
    _BATCHES[key] = result
    while len(_BATCHES) > _BATCH_CACHE_SIZE:
        _BATCHES.popitem(last=False)
    return result
