"""GAN training and generation throughput on this machine (prints figures; not a test).

Usage:
    python benchmarks/gan_throughput.py [--shapes 32 64] [--steps 5] [--recipe quick]

Training: full steps (D step with lazy R1 every 16th, G step, EMA) at batch 4 on random data,
volumes/s = batch / seconds per step (median over --steps after one warm-up step).
Generation: EMA generator forward, volumes/s at batch 1 and 8, fp32 and bf16 autocast.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch

from augment3d.config import load_recipe
from augment3d.data import ConditionEncoder
from augment3d.models import Generator3D
from augment3d.training.trainer import TrainingData, train_gan


AMP = [None]  # --amp overrides the recipe's autocast setting


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}"


def train_rate(recipe, shape: int, steps: int) -> float:
    from dataclasses import replace

    enc = ConditionEncoder(recipe.data.categories)
    model = replace(recipe.model_config(enc.dim), shape=(shape,) * 3)
    n = 8
    g = torch.Generator().manual_seed(0)
    data = TrainingData(torch.rand(n, 4, shape, shape, shape, generator=g) * 2 - 1,
                        torch.randint(0, 4, (n, shape, shape, shape), generator=g),
                        torch.from_numpy(enc.encode(enc.all_conditions()[:1] * n)))
    times = []
    last = [time.perf_counter()]

    def tick(step, total, metrics):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    cfg = replace(recipe.train, steps=steps + 1, checkpoint_every=10**9, log_every=10**9, amp=AMP[0] or recipe.train.amp)
    with tempfile.TemporaryDirectory() as tmp:
        train_gan(tmp, data, model, cfg, enc, {}, progress=tick)
    return cfg.batch / statistics.median(times[1:])


@torch.no_grad()
def generation_rate(recipe, shape: int, batch: int, bf16: bool, repeats: int = 3) -> float:
    from dataclasses import replace

    enc = ConditionEncoder(recipe.data.categories)
    net = Generator3D(replace(recipe.model_config(enc.dim), shape=(shape,) * 3)).eval()
    z = torch.randn(batch, net.config.z_dim)
    c = torch.from_numpy(enc.encode(enc.all_conditions()[:1] * batch)) if enc.dim else None
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            net(z, c)
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--gen-shapes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--recipe", default="quick")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default=None, help="override the recipe's autocast")
    args = parser.parse_args()
    AMP[0] = args.amp
    recipe = load_recipe(args.recipe)
    print(f"machine: {machine()}")
    print(f"recipe: {args.recipe} (model {recipe.model}, batch {recipe.train.batch}, loss {recipe.train.loss}, "
          f"training autocast {args.amp or recipe.train.amp})")
    for shape in args.shapes:
        rate = train_rate(recipe, shape, args.steps)
        print(f"train {shape}^3 batch {recipe.train.batch}: {rate:.2f} volumes/s ({recipe.train.batch / rate:.2f} s/step)")
    for shape in args.gen_shapes:
        for batch in (1, 8):
            for bf16 in (False, True):
                rate = generation_rate(recipe, shape, batch, bf16)
                print(f"generate {shape}^3 batch {batch} {'bf16' if bf16 else 'fp32'}: {rate:.2f} volumes/s "
                      f"({1000 / rate:.0f} ms/volume)")


if __name__ == "__main__":
    main()
