"""Where one GAN training step's time goes, by kind of op, and the share of the peak it allows.

Usage:
    python benchmarks/step_profile.py [--shape 64] [--recipe phantom] [--train-set terms.label_consistency.autocast=true]
                                      [--model-set spade_kernel=1] [--table 25] [--device cuda] [--by-shape]

Runs a few training steps (as ``gan_throughput.py`` does: random data, batch of the recipe) and
profiles the fourth with ``torch.profiler``. Prints the step's time split into convolutions
(forward and backward), elementwise passes, copies and layout conversions, up/down-sampling,
normalisation and the rest; the rate the convolutions reach inside their own time; and the
ceiling: the step's FLOPs over (FLOPs at the Conv3d peak in the training's precision, measured in
the same process, + everything else as measured). A step cannot reach a larger share of the peak without
removing work that is not convolution.

On a GPU (``--device cuda``) the split is of the GPU's kernel time, and the step's wall time is
printed beside it: the difference is time the GPU waits for the host (Python, work left on the
CPU). A second table lists the ops by their host time.
"""

from __future__ import annotations

import argparse
import os
import sys
import statistics

from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gan_throughput as gt  # noqa: E402  (the same setup and FLOP count as the throughput figures)

from augment3d.config.recipe import load_recipe  # noqa: E402

KINDS = {
    "convolution": ("convolution",),
    "copy / layout": ("copy_", "_to_copy", "contiguous", "clone", "cat"),
    "up/down-sampling": ("upsample", "pool", "grid_sampler"),
    "normalisation": ("norm",),
    "elementwise": (
        "mul",
        "add",
        "leaky",
        "where",
        "sub",
        "div",
        "sqrt",
        "pow",
        "sgn",
        "exp",
        "log",
        "softmax",
        "neg",
        "clamp",
        "fill",
        "lerp",
    ),
}


def kind(op: str) -> str:
    return next((name for name, keys in KINDS.items() if any(k in op for k in keys)), "other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--recipe", default="phantom")
    parser.add_argument("--train-set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--model-set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--table", type=int, default=25, help="rows of the per-op table (0: none)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument(
        "--by-shape", action="store_true", help="also list the ops by input shapes (which tensors the copies and passes are)"
    )
    args = parser.parse_args()
    gt.apply_overrides(args.train_set, args.model_set)
    gt.DEVICE[0] = args.device
    gpu = gt.on_gpu()
    recipe = load_recipe(args.recipe)
    print(f"machine: {gt.machine()}")
    reference = gt.reference_conv(recipe)
    peak, peak_name = gt.conv_peak(*reference), gt.conv_name(*reference)
    flops, _ = gt.step_flops(recipe, args.shape)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    prof = profile(activities=activities, schedule=schedule(wait=3, warmup=0, active=1), record_shapes=args.by_shape)
    # six steps: the fourth is profiled; the second, third and fifth give the unprofiled wall time
    # (the first builds the networks, the last writes the run folder)
    with prof:
        walls = gt.step_walls(recipe, args.shape, 6, on_step=prof.step)
    ops = prof.key_averages()
    # an op's own time: its kernels' time on a GPU (rows of the host's ops only: kernels are not counted twice)
    own = (
        (lambda e: e.self_device_time_total if e.device_type == DeviceType.CPU else 0)
        if gpu
        else (lambda e: e.self_cpu_time_total)
    )
    total = sum(own(e) for e in ops) / 1e6
    what = "GPU kernel time" if gpu else "ops' own time"
    split = dict.fromkeys([*KINDS, "other"], 0.0)
    for e in ops:
        split[kind(e.key)] += own(e) / 1e6
    print(
        f"recipe {args.recipe} at {args.shape}^3, batch {recipe.train.batch}"
        + (f", [train] {gt.TRAIN_SET}" if gt.TRAIN_SET else "")
        + (f", [model] {gt.MODEL_SET}" if gt.MODEL_SET else "")
        + f": profiled step {total:.3f} s ({what}), "
        f"{flops / 1e9:.0f} GFLOP; {peak_name} Conv3d peak {peak:.0f} GFLOP/s"
    )
    if gpu:
        plain = statistics.median([walls[1], walls[2], walls[4]])
        print(
            f"  wall time of that step {walls[3]:.3f} s (profiled): the GPU is busy {100 * total / walls[3]:.0f}% of it; "
            f"unprofiled steps {plain:.3f} s (median of three)"
        )
    for name, seconds in split.items():
        print(f"  {name:18s} {seconds:6.2f} s  {100 * seconds / total:5.1f}%")
    conv = split["convolution"]
    print(
        f"  the convolutions run at {flops / conv / 1e9:.0f} GFLOP/s inside their own time = "
        f"{100 * flops / conv / 1e9 / peak:.0f}% of the peak"
    )
    ceiling = flops / (flops / (peak * 1e9) + total - conv) / 1e9
    print(
        f"  ceiling (convolutions at the peak, the rest as measured): {ceiling:.0f} GFLOP/s = {100 * ceiling / peak:.0f}% of the peak"
    )
    if args.table:
        if gpu:
            print(ops.table(sort_by="self_device_time_total", row_limit=args.table, max_name_column_width=45))
        print(ops.table(sort_by="self_cpu_time_total", row_limit=args.table, max_name_column_width=45))
    if args.table and args.by_shape:
        by_shape = prof.key_averages(group_by_input_shape=True)
        print(
            by_shape.table(
                sort_by="self_device_time_total" if gpu else "self_cpu_time_total",
                row_limit=args.table,
                max_name_column_width=30,
                max_shapes_column_width=90,
            )
        )


if __name__ == "__main__":
    main()
