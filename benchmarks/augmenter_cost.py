"""SyntheticAugmenter cost per subject against torchio's own spatial transforms (prints figures).

Usage:
    python benchmarks/augmenter_cost.py [--side 64] [--grid 32 64] [--subjects 32] [--batch-size 8]
                                        [--precision auto fp32 bf16] [--spade-kernel 3 1] [--device cuda]

One 64^3 subject (four modalities + label map) is transformed --subjects times by each
transform, in the same process; the augmenter's time is amortised over its batched generation
(a new generator batch every --batch-size subjects). The generator has the `quick` recipe's
architecture (labels to images: the augmenter restyles the subject, keeping its label map) with
random weights (cost does not depend on training); ``--spade-kernel`` overrides its SPADE
output convolution (3x3x3 or 1x1x1) to price that architecture choice. The default precision is the augmenter's
own default, ``auto`` (bf16 where the CPU has bf16 arithmetic, fp32 elsewhere); the line says
which it resolved to. ``--device cuda`` generates on the GPU (torchio's transforms stay on the
CPU, as they always run).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch
import torchio as tio

from augment3d import SyntheticAugmenter
from augment3d.config import load_recipe
from augment3d.data import ConditionEncoder
from augment3d.models import Generator3D
from augment3d.data.preprocess import PreprocessConfig
from augment3d.precision import auto_precision, cpu_has_bf16
from augment3d.sampling import save_generator


def make_subject(side: int) -> tio.Subject:
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, side)] * 3, indexing="ij"))
    brain = (grid**2).sum(0) < 0.7
    images = {k: tio.ScalarImage(tensor=torch.from_numpy((brain * (100 + rng.normal(0, 5, brain.shape)))[None].astype(np.float32)),
                                 affine=np.diag([1.5, 1.5, 1.5, 1])) for k in ("t1n", "t1c", "t2w", "t2f")}
    label = (((grid - 0.2) ** 2).sum(0) < 0.05).astype(np.int64) * 3
    return tio.Subject(**images, seg=tio.LabelMap(tensor=torch.from_numpy(label[None]), affine=np.diag([1.5, 1.5, 1.5, 1])),
                       site="SSA", grade="HGG")


def time_per_subject(transform, subject, n: int) -> float:
    transform(subject)  # warm-up (loads the generator, fills caches)
    t0 = time.perf_counter()
    for _ in range(n):
        transform(subject)
    return (time.perf_counter() - t0) / n


def make_run(folder: str, grid: int, spade_kernel: int | None = None) -> str:
    recipe = load_recipe("quick")
    enc = ConditionEncoder(recipe.data.categories)
    torch.manual_seed(0)
    config = replace(recipe.model_config(enc.dim), shape=(grid,) * 3)
    net = Generator3D(config if spade_kernel is None else replace(config, spade_kernel=spade_kernel))
    save_generator(folder, net, enc, PreprocessConfig(shape=grid), step=0, info={"voxel_mm": 2.0})
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--grid", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--subjects", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", nargs="+", default=["auto"], choices=["auto", "fp32", "bf16"])
    parser.add_argument("--device", default="cpu", help="where the augmenter generates: cpu or cuda")
    parser.add_argument("--spade-kernel", type=int, nargs="+", default=[None], choices=[1, 3],
                        help="SPADE output convolution kernel(s) to time (default: the quick recipe's)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, torchio {tio.__version__}, "
          f"threads {torch.get_num_threads()}, bf16 arithmetic: {'yes' if cpu_has_bf16() else 'no (AVX512-BF16/AMX absent)'}"
          + (f", GPU {torch.cuda.get_device_name(args.device)}" if args.device.startswith("cuda") else ""))
    subject = make_subject(args.side)
    print(f"subject: {args.side}^3, four modalities + label map; {args.subjects} subjects per transform")
    elastic = time_per_subject(tio.RandomElasticDeformation(), subject, max(4, args.subjects // 4))
    affine = time_per_subject(tio.RandomAffine(), subject, max(4, args.subjects // 4))
    print(f"tio.RandomElasticDeformation: {1000 * elastic:.1f} ms/subject")
    print(f"tio.RandomAffine:             {1000 * affine:.1f} ms/subject")
    with tempfile.TemporaryDirectory() as tmp:
        for grid, kernel in [(g, k) for g in args.grid for k in args.spade_kernel]:
            run = make_run(os.path.join(tmp, f"g{grid}k{kernel}"), grid, kernel)
            spade = "" if kernel is None else f", SPADE kernel {kernel}"
            for precision in args.precision:
                aug = SyntheticAugmenter(run, p=1.0, seed=0, batch_size=args.batch_size, precision=precision,
                                         device=args.device)
                cost = time_per_subject(aug, subject, args.subjects)
                # the machine's speed drifts: compare with RandomElasticDeformation timed just after
                beside = time_per_subject(tio.RandomElasticDeformation(), subject, max(4, args.subjects // 4))
                used = auto_precision(precision, args.device)
                print(f"SyntheticAugmenter ({args.device}, generator grid {grid}^3{spade}, batch {args.batch_size}, {precision}"
                      f"{f' = {used}' if used != precision else ''}): "
                      f"{1000 * cost:.1f} ms/subject = {cost / elastic:.3f} x RandomElasticDeformation "
                      f"({cost / beside:.3f} x its {1000 * beside:.0f} ms timed right after), "
                      f"{cost / affine:.3f} x RandomAffine")


if __name__ == "__main__":
    main()
