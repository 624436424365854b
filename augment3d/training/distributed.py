"""Multi-process training under ``torchrun``: gloo on CPU, nccl on GPU.

Gradients are summed with one ``all_reduce`` per optimiser step (no DistributedDataParallel
wrapper: lazy R1 needs double backward, which DDP's hooks do not support). Every rank draws the
same global batch from the same seeded generator and works on its own slice of it.

A process group this module starts, it also ends (:func:`leave_world`): every rank first waits
until all ranks are done, so no rank returns while rank 0 still writes the run folder (and
torchrun, which stops the other ranks when one exits, cannot stop rank 0 mid-save). A group
the caller started is left to the caller.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "World",
    "init_world",
    "joined_world",
    "leave_world",
    "barrier",
    "all_reduce_grads",
    "all_reduce_sum",
    "collective_device",
]


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    owns_group: bool = False  # init_world started the process group, so leave_world ends it

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_world(device: str) -> World:
    """Join the process group described by torchrun's environment (a no-op for one process)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    owns = not dist.is_initialized()
    if owns:
        where = torch.device(device)
        if where.type == "cuda" and where.index is None:  # "cuda" means this process's own GPU
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if where.type == "cuda" else "gloo")
    return World(rank=dist.get_rank(), size=dist.get_world_size(), owns_group=owns)


@contextlib.contextmanager
def joined_world(device: str) -> Iterator[World]:
    """:func:`init_world` for the block, :func:`leave_world` after it (without waiting for the
    other ranks when the block raised)."""
    world = init_world(device)
    try:
        yield world
    except BaseException:
        leave_world(world, wait=False)
        raise
    leave_world(world)


def barrier(world: World) -> None:
    """Wait until every rank gets here (a no-op for one process)."""
    if world.size > 1:
        dist.barrier()


def leave_world(world: World, *, wait: bool = True) -> None:
    """Wait for every rank (unless ``wait`` is false: this rank failed and the others may never
    get here), then end the process group if :func:`init_world` started it."""
    if wait:
        barrier(world)
    if world.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_grads(module: torch.nn.Module, world: World) -> None:
    """Sum every parameter's gradient across ranks (missing gradients count as zero)."""
    if world.size <= 1:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def collective_device() -> torch.device:
    """Where the default process group's collectives take their tensors: this process's GPU
    under nccl (which has no CPU tensors), the CPU under gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: list[float], world: World) -> list[float]:
    """Each value summed over the ranks (in float64, on the device the backend takes)."""
    if world.size <= 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=collective_device())
    dist.all_reduce(t)
    return t.tolist()
