"""Multi-process training under ``torchrun``: gloo on CPU, nccl on GPU.

Gradients are summed with one ``all_reduce`` per optimiser step (no DistributedDataParallel
wrapper: lazy R1 needs double backward, which DDP's hooks do not support). Every rank draws the
same global batch from the same seeded generator and works on its own slice of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["World", "init_world", "all_reduce_grads", "all_reduce_sum"]


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_world(device: str) -> World:
    """Join the process group described by torchrun's environment (a no-op for one process)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return World(rank=dist.get_rank(), size=dist.get_world_size())


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


def all_reduce_sum(values: list[float], world: World) -> list[float]:
    if world.size <= 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()
