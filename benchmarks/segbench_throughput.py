"""segbench training throughput (cases/s) and peak memory (RSS) for the bench recipes' networks.

    python benchmarks/segbench_throughput.py [--recipe quick] [--steps 20] [--shape 32] [--amp none bf16]

``--amp`` defaults to ``none`` and, where the CPU has bf16 arithmetic (AVX512-BF16, AMX), ``bf16``:
elsewhere oneDNN emulates bf16, minutes for a figure that means nothing.

Prints the machine and the Conv3d peak measured first in the same process (as
``gan_throughput.py``: a 64-channel 3x3x3 convolution on 32^3, batch 4, fp32 channels-first and,
where the hardware has bf16 arithmetic, bf16 channels-last), then one line per configuration
(norm x autocast): seconds per step, cases per second, the step's FLOPs
(``torch.utils.flop_counter``: forward and backward) over its time as GFLOP/s and as a share of
the peak of the same arithmetic, and the process's peak RSS so far. The training step is
segbench's own (``segbench.train.train_step``: autocast around the network, the loss in fp32).
Random inputs: the figure is the network's, not the data pipeline's.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from dataclasses import replace

import torch

from gan_throughput import fast_bf16, flop_counter, peaks_line, reference_peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="quick")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--shape", type=int, default=32)
    parser.add_argument(
        "--amp",
        nargs="+",
        choices=["none", "bf16"],
        default=None,
        help="autocast modes to time (default: none, and bf16 where the hardware has it)",
    )
    parser.add_argument("--norms", nargs="+", choices=["group", "batch"], default=["group", "batch"])
    args = parser.parse_args()
    if args.shape % 32:  # five 2x downsamplings (segbench pads real cases; this times the bare network)
        parser.error(f"--shape must be a multiple of 32 (the encoder halves it five times), got {args.shape}")

    from augment3d.config.recipe import load_recipe
    from augment3d.precision import cpu_has_bf16
    from segbench.config import bench_config
    from segbench.model import build_model
    from segbench.train import train_step

    base = bench_config(load_recipe(args.recipe))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, bf16 arithmetic: {'yes' if cpu_has_bf16() else 'no'}"
    )
    amps = args.amp or (["none", "bf16"] if fast_bf16() else ["none"])
    measured = reference_peaks(bf16="bf16" in amps)
    print(peaks_line(measured))
    peaks = {"none": measured[False, False], "bf16": measured.get((True, True))}
    for norm in args.norms:
        for amp in amps:
            config = replace(base, norm=norm)
            torch.manual_seed(0)
            model = build_model(config)
            optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
            x = torch.randn(config.batch, 4, args.shape, args.shape, args.shape)
            y = torch.randint(0, 4, (config.batch, args.shape, args.shape, args.shape))

            def step(model=model, optimizer=optimizer, x=x, y=y, amp=amp):
                train_step(model, optimizer, x, y, "cpu", amp)

            counter = flop_counter()
            with counter:
                step()
            flops = counter.get_total_flops()
            for _ in range(2):
                step()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            seconds = (time.perf_counter() - start) / args.steps
            peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            achieved = flops / seconds / 1e9
            print(
                f"{config.architecture}/{config.encoder} decoder {list(config.decoder_channels)} norm={norm} "
                f"amp={amp} batch {config.batch} {args.shape}^3: {seconds:.3f} s/step, "
                f"{config.batch / seconds:.2f} cases/s, {flops / 1e9:.1f} GFLOP/step, {achieved:.0f} GFLOP/s"
                + (
                    f" = {100 * achieved / peaks[amp]:.0f}% of the {'bf16' if amp == 'bf16' else 'fp32'} peak"
                    if peaks[amp]
                    else ""
                )
                + f"; peak RSS {peak_rss:.0f} MiB"
            )


if __name__ == "__main__":
    main()
