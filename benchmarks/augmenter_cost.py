"""SyntheticAugmenter cost per subject against torchio's own spatial transforms (prints figures).

Usage:
    python benchmarks/augmenter_cost.py [--side 64] [--grid 32 64] [--subjects 32] [--batch-size 8]
                                        [--precision auto fp32 bf16] [--spade-kernel 3 1] [--device cuda]
                                        [--workers 2] [--loader-subjects 96]

One 64^3 subject (four modalities + label map) is transformed --subjects times by each
transform, in the same process; the augmenter's time is amortised over its batched generation
(a new generator batch every --batch-size subjects). The generator has the `quick` recipe's
architecture (labels to images: the augmenter restyles the subject, keeping its label map) with
random weights (cost does not depend on training); ``--spade-kernel`` overrides its SPADE
output convolution (3x3x3 or 1x1x1) to price that architecture choice. The default precision is the augmenter's
own default, ``auto`` (bf16 where the CPU has bf16 arithmetic, fp32 elsewhere); the line says
which it resolved to. ``--device cuda`` generates on the GPU (torchio's transforms stay on the
CPU, as they always run).

Each transform is timed by the wall clock and by the process's CPU time (all its threads). They
differ because the augmenter generates at one thread (as in a DataLoader worker; that keeps replays
exact) while torchio's elastic and affine transforms resample with SimpleITK at all its threads: the
wall ratio is what a loop in the main process waits; with workers keeping every core busy the cost
moves towards the CPU ratio (``--workers`` measures it). On the CPU a line gives the generator's
arithmetic per subject (``torch.utils.flop_counter``) against the one-thread channels-last Conv3d
peak measured in the same process, in the generation's precision: the time that arithmetic (the
generator's convolutions, 99%) would take at that peak is the floor of this architecture on this CPU.

``--workers W`` also times each transform where training uses it: ``--loader-subjects`` copies
of the subject through a ``tio.SubjectsLoader`` with W worker processes (batch 1, worker start-up
included; workers generate on the CPU), against the same loader with no transform.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import replace

import numpy as np
import SimpleITK as sitk
import torch
import torchio as tio
from gan_throughput import conv_peak, flop_counter

from augment3d import SyntheticAugmenter
from augment3d.synthesis.generator_cache import one_thread
from augment3d.config.recipe import load_recipe
from augment3d.data import ConditionEncoder
from augment3d.models import Generator3D
from augment3d.data.preprocess import PreprocessConfig
from augment3d.precision import auto_precision, cpu_has_bf16
from augment3d.synthesis.sampling import save_generator


def make_subject(side: int) -> tio.Subject:
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, side)] * 3, indexing="ij"))
    brain = (grid**2).sum(0) < 0.7
    images = {
        k: tio.ScalarImage(
            tensor=torch.from_numpy((brain * (100 + rng.normal(0, 5, brain.shape)))[None].astype(np.float32)),
            affine=np.diag([1.5, 1.5, 1.5, 1]),
        )
        for k in ("t1n", "t1c", "t2w", "t2f")
    }
    label = (((grid - 0.2) ** 2).sum(0) < 0.05).astype(np.int64) * 3
    return tio.Subject(
        **images,
        seg=tio.LabelMap(tensor=torch.from_numpy(label[None]), affine=np.diag([1.5, 1.5, 1.5, 1])),
        site="SSA",
        grade="HGG",
    )


def time_per_subject(transform, subject, n: int) -> tuple[float, float]:
    """(wall, CPU) seconds per subject over ``n`` calls after one warm-up call (which loads the
    generator and fills caches); CPU time is the process's, summed over its threads."""
    transform(subject)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        transform(subject)
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def _unchanged(tensor):
    return tensor  # tio.Lambda's function gets each image's tensor


def loader_time(transform, subject, workers: int, n: int) -> float:
    """Seconds per subject for ``n`` copies of ``subject`` through a ``tio.SubjectsLoader`` with
    ``workers`` worker processes (batch 1): what a training loop gets, worker start-up included."""
    loader = tio.SubjectsLoader(tio.SubjectsDataset([subject] * n, transform=transform), batch_size=1, num_workers=workers)
    start = time.perf_counter()
    for _ in loader:
        pass
    return (time.perf_counter() - start) / n


def generator_floor(aug, subject, precision: str, peaks: dict) -> tuple[float, float]:
    """(FLOPs of one subject through the augmenter, the one-thread channels-last Conv3d peak in
    ``precision``, GFLOP/s); ``peaks`` caches the peak per precision."""
    counter = flop_counter()
    with counter:
        aug(subject)
    if precision not in peaks:
        with one_thread():
            peaks[precision] = conv_peak(bf16=precision == "bf16", channels_last=True)
    return float(counter.get_total_flops()), peaks[precision]


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
    parser.add_argument(
        "--spade-kernel",
        type=int,
        nargs="+",
        default=[None],
        choices=[1, 3],
        help="SPADE output convolution kernel(s) to time (default: the quick recipe's)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="*",
        default=[],
        metavar="W",
        help="also time each transform through a SubjectsLoader with W worker processes",
    )
    parser.add_argument("--loader-subjects", type=int, default=96, help="subjects per SubjectsLoader timing")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, torchio {tio.__version__}, "
        f"threads {torch.get_num_threads()}, bf16 arithmetic: {'yes' if cpu_has_bf16() else 'no (AVX512-BF16/AMX absent)'}"
        + (f", GPU {torch.cuda.get_device_name(args.device)}" if args.device.startswith("cuda") else "")
    )
    subject = make_subject(args.side)
    print(f"subject: {args.side}^3, four modalities + label map; {args.subjects} subjects per transform")
    print(
        f"threads: the augmenter generates at 1 (as in a DataLoader worker); torchio's transforms resample with "
        f"SimpleITK at {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}"
    )
    elastic, elastic_cpu = time_per_subject(tio.RandomElasticDeformation(), subject, max(4, args.subjects // 4))
    affine, affine_cpu = time_per_subject(tio.RandomAffine(), subject, max(4, args.subjects // 4))
    print(f"tio.RandomElasticDeformation: {1000 * elastic:.1f} ms/subject (CPU time {1000 * elastic_cpu:.1f} ms)")
    print(f"tio.RandomAffine:             {1000 * affine:.1f} ms/subject (CPU time {1000 * affine_cpu:.1f} ms)")
    loaders = {}  # workers -> (no transform, elastic) seconds per subject through a SubjectsLoader
    for workers in args.workers:
        loaders[workers] = tuple(
            loader_time(t, subject, workers, args.loader_subjects)
            for t in (tio.Lambda(_unchanged), tio.RandomElasticDeformation())
        )
        print(
            f"through a SubjectsLoader with {workers} workers ({args.loader_subjects} subjects): no transform "
            f"{1000 * loaders[workers][0]:.1f} ms/subject, tio.RandomElasticDeformation {1000 * loaders[workers][1]:.1f}"
        )
    peaks: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for grid, kernel in [(g, k) for g in args.grid for k in args.spade_kernel]:
            run = make_run(os.path.join(tmp, f"g{grid}k{kernel}"), grid, kernel)
            spade = "" if kernel is None else f", SPADE kernel {kernel}"
            for precision in args.precision:
                aug = SyntheticAugmenter(run, p=1.0, seed=0, batch_size=args.batch_size, precision=precision, device=args.device)
                cost, cost_cpu = time_per_subject(aug, subject, args.subjects)
                # the machine's speed drifts: compare with RandomElasticDeformation timed just after
                beside, _ = time_per_subject(tio.RandomElasticDeformation(), subject, max(4, args.subjects // 4))
                used = auto_precision(precision, args.device)
                print(
                    f"SyntheticAugmenter ({args.device}, generator grid {grid}^3{spade}, batch {args.batch_size}, {precision}"
                    f"{f' = {used}' if used != precision else ''}): "
                    f"{1000 * cost:.1f} ms/subject = {cost / elastic:.3f} x RandomElasticDeformation "
                    f"({cost / beside:.3f} x its {1000 * beside:.0f} ms timed right after), "
                    f"{cost / affine:.3f} x RandomAffine; CPU time {1000 * cost_cpu:.1f} ms = "
                    f"{cost_cpu / elastic_cpu:.3f} x elastic's"
                )
                for workers, (plain, elastic_loaded) in loaders.items():
                    loaded = loader_time(aug, subject, workers, args.loader_subjects)
                    print(
                        f"  through the SubjectsLoader with {workers} workers: {1000 * loaded:.1f} ms/subject = "
                        f"{loaded / elastic_loaded:.3f} x elastic's ({(loaded - plain) / (elastic_loaded - plain):.3f} "
                        f"without the loader's own {1000 * plain:.0f} ms)"
                    )
                if args.device == "cpu":
                    flops, peak = generator_floor(aug, subject, used, peaks)
                    floor = flops / (peak * 1e9)
                    print(
                        f"  {flops / 1e9:.2f} GFLOP a subject; at the one-thread {used} channels-last Conv3d peak "
                        f"({peak:.0f} GFLOP/s) {1000 * floor:.0f} ms = {floor / elastic:.3f} x elastic, this "
                        f"architecture's floor here; the augmenter's {1000 * cost:.0f} ms make "
                        f"{flops / cost / 1e9:.0f} GFLOP/s = {100 * flops / cost / 1e9 / peak:.0f}% of that peak"
                    )


if __name__ == "__main__":
    main()
