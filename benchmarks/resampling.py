"""The models' x2 resampling, ours against torch's, forward + backward (prints figures; not a test).

Usage:
    python benchmarks/resampling.py [--device cuda] [--batch 4] [--repeats 10]

Times, on bf16 ``channels_last_3d`` tensors of the shapes a 128^3 ``brats_africa_128`` step
resamples: 2x2x2 downsampling (``F.avg_pool3d``, the depthwise-convolution ``_BoxDown`` the CPU
uses, ``block_means`` that a GPU uses) and trilinear x2 upsampling (``F.interpolate``,
``axis_upsample`` that a GPU uses). Each line: median milliseconds of forward + backward after
one warm-up call, and the largest difference from torch's result.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gan_throughput as gt  # noqa: E402  (device, timing)

from augment3d.models.ops import _BoxDown, _channels_last, axis_upsample, block_means  # noqa: E402

DOWN = {"avg_pool3d": lambda t: F.avg_pool3d(t, 2), "_BoxDown": _BoxDown.apply, "block_means": block_means}
UP = {
    "interpolate": lambda t: F.interpolate(t, scale_factor=2, mode="trilinear", align_corners=False),
    "axis_upsample": axis_upsample,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--shrink", type=int, default=1, help="divide every side by this (a quick check)")
    args = parser.parse_args()
    gt.DEVICE[0] = args.device
    print(f"machine: {gt.machine()}")
    # (kind, (channels, side), ops): the largest inputs of the discriminator's and generator's resampling
    cases = [("down", (128, 128), DOWN), ("down", (64, 128), DOWN), ("up", (128, 64), UP), ("up", (256, 32), UP)]
    for kind, (channels, side), ops in cases:
        side //= args.shrink
        x = torch.randn(args.batch, channels, side, side, side, device=args.device, dtype=torch.bfloat16)
        x = x.contiguous(memory_format=torch.channels_last_3d).requires_grad_()
        reference = None
        for name, op in ops.items():
            try:
                out = op(x)
            except NotImplementedError as error:  # e.g. avg_pool3d has no bf16 kernel on the CPU
                print(f"{kind} {args.batch}x{channels}x{side}^3 bf16 {name:14s}: not available ({str(error)[:60]})")
                continue
            grad = torch.ones_like(out)

            def step(op=op, x=x, grad=grad):
                op(x).backward(grad)

            ms = 1000 * gt.median_seconds(step, args.repeats)
            with torch.no_grad():
                value = op(x).float()
            reference = value if reference is None else reference
            layout = "channels_last" if _channels_last(out) else "channels-first"
            print(
                f"{kind} {args.batch}x{channels}x{side}^3 bf16 {name:14s}: {ms:8.2f} ms forward+backward, "
                f"output {layout}, largest difference from the first timed line's {float((value - reference).abs().max()):.3g}"
            )


if __name__ == "__main__":
    main()
