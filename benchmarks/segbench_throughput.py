"""segbench training throughput (cases/s) and peak memory (RSS) for the bench recipes' networks.

    python benchmarks/segbench_throughput.py [--recipe quick] [--steps 20] [--shape 32]

Prints the machine, then one line per configuration: seconds per step, cases per second and the
process's peak RSS so far. Random inputs: the figure is the network's, not the data pipeline's.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from dataclasses import replace

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="quick")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--shape", type=int, default=32)
    args = parser.parse_args()

    from augment3d.config import load_recipe
    from segbench.model import build_model, seg_loss

    base = load_recipe(args.recipe).bench
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for norm in ("group", "batch"):
        config = replace(base, norm=norm)
        torch.manual_seed(0)
        model = build_model(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
        x = torch.randn(config.batch, 4, args.shape, args.shape, args.shape)
        y = torch.randint(0, 4, (config.batch, args.shape, args.shape, args.shape))
        for step in range(args.steps + 3):
            if step == 3:
                start = time.perf_counter()
            loss = seg_loss(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds = (time.perf_counter() - start) / args.steps
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{config.architecture}/{config.encoder} decoder {list(config.decoder_channels)} norm={norm} "
              f"batch {config.batch} {args.shape}^3: {seconds:.3f} s/step, {config.batch / seconds:.2f} cases/s, "
              f"peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
