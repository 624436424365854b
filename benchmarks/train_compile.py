"""Does ``torch.compile`` pay for GAN training on this machine? (prints figures; not a test)

Usage:
    python benchmarks/train_compile.py [--shape 64] [--steps 7] [--layout last]

Times training steps of the ``quick`` architecture at batch 4 in bf16, eager and with the
discriminator and the generator's synthesis wrapped in ``torch.compile`` (inductor). R1 is off
in both (its double backward does not go through compiled graphs), so these are the 15 of 16
steps without it. The first compiled step includes compilation; the median is over the steps
after the third.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from augment3d.config.recipe import load_recipe
from augment3d.training.loop import TrainingLoop

from gan_throughput import machine, random_setup


def seconds_per_step(shape: int, steps: int, channels_last: bool, compiled: bool) -> tuple[float, float]:
    """(median s/step, first step's seconds) for one configuration."""
    recipe = load_recipe("quick")
    enc, model, data = random_setup(recipe, shape)
    cfg = replace(recipe.train, r1_gamma=0.0, amp="bf16", channels_last=channels_last)
    loop = TrainingLoop(data, model, cfg, "cpu")
    if compiled:
        loop.D = torch.compile(loop.D)
        loop.G.from_w = torch.compile(loop.G.from_w)
    times = []
    for step in range(1, steps + 1):
        t = time.perf_counter()
        loop.step(step)
        times.append(time.perf_counter() - t)
    return statistics.median(times[3:]), times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--layout", choices=["first", "last"], default="last")
    args = parser.parse_args()
    print(machine())
    for compiled in (False, True):
        median, first = seconds_per_step(args.shape, args.steps, args.layout == "last", compiled)
        print(
            f"{'compiled' if compiled else 'eager   '} {args.shape}^3 batch 4 bf16 {args.layout}: "
            f"{median:.2f} s/step (first step {first:.1f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
