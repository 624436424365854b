"""GAN training and generation throughput on this machine (prints figures; not a test).

Usage:
    python benchmarks/gan_throughput.py [--shapes 32 64] [--steps 5] [--recipe quick] [--amp bf16]
        [--train-set terms.label_consistency.weight=1 terms.label_consistency.warmup=0] [--peak-channels 32 16] [--device cuda]

Conv3d peak: a 64-channel 3x3x3 convolution on 32^3 (batch 4; on a GPU 64^3, batch 8, so that
one call is not dominated by its launch) in fp32 (channels-first) and in bf16 with
``channels_last_3d`` (only where the hardware has bf16), measured first in the same process. The
training figures are a share of the one in the training's precision: bf16 channels-last under
autocast, fp32 in the training's layout without (``auto`` on a CPU without bf16). On a GPU the
bf16 8192^3 matrix product is printed beside it (the tensor cores' rate).
Training: full steps (D step with lazy R1 every 16th, G step, EMA) at batch 4 on random data,
volumes/s = batch / seconds per step (median over --steps after one warm-up step). The FLOPs of
one step (convolutions and matrix products, forward and backward, counted by
``torch.utils.flop_counter``) over that time give the achieved GFLOP/s. Peak RSS is the
process's maximum so far (shapes run in increasing order, so the last line is the largest's); on a
GPU, the peak GPU memory allocated by the timed steps of that shape.
Generation: generator forward, volumes/s at batch 1 and 8, fp32 and (where fast) bf16 autocast, in
``channels_last_3d`` (what ``load_generator`` uses) and, with --layouts both, channels-first.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import tempfile
import time
import tomllib

import torch

from augment3d.config.recipe import load_recipe
from augment3d.data import ConditionEncoder
from augment3d.models import Generator3D
from augment3d.models.spatial_conditioning import label_maps
from augment3d.precision import auto_amp, cpu_has_bf16
from augment3d.training.trainer import TrainingData, train_gan


AMP = [None]  # --amp overrides the recipe's autocast setting
DEVICE = ["cpu"]  # --device
LAYOUT = [None]  # --train-layout overrides the recipe's channels_last setting
TRAIN_SET: dict = {}  # --train-set KEY=VALUE overrides of the recipe's [train] section
MODEL_SET: dict = {}  # --model-set KEY=VALUE overrides of the recipe's [model] section


def apply_overrides(train_set: list[str], model_set: list[str]) -> None:
    """KEY=VALUE strings (TOML values) into TRAIN_SET and MODEL_SET."""
    for items, into in ((train_set, TRAIN_SET), (model_set, MODEL_SET)):
        for item in items:
            key, _, value = item.partition("=")
            into[key] = tomllib.loads(f"v = {value}")["v"]


def train_overrides(train) -> dict:
    """TRAIN_SET as ``replace`` keywords for ``train``: ``terms.NAME.KEY`` set inside its term's table."""
    from dataclasses import asdict

    flat = {k: v for k, v in TRAIN_SET.items() if not k.startswith("terms.")}
    terms = asdict(train.terms)
    for key, value in TRAIN_SET.items():
        if key.startswith("terms."):
            _, name, field = key.split(".")
            terms[name][field] = value
    return {**flat, "terms": terms}


def on_gpu() -> bool:
    return torch.device(DEVICE[0]).type == "cuda"


def sync() -> None:
    """Wait for the GPU's queued work (timers read the host's clock)."""
    if on_gpu():
        torch.cuda.synchronize()


def machine() -> str:
    gpu = f", GPU {torch.cuda.get_device_name()}" if on_gpu() else ""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs{gpu}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}"
    )


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up call."""
    times = []
    for _ in range(repeats + 1):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def peak_shape() -> tuple[int, int]:
    """(side, batch) of the reference convolution: 32^3 x 4 on a CPU, 64^3 x 8 on a GPU."""
    return (64, 8) if on_gpu() else (32, 4)


def conv_peak(bf16: bool, channels_last: bool, channels: int = 64, repeats: int = 5) -> float:
    """GFLOP/s of one 3x3x3 Conv3d forward (the machine's practical limit for our layers)."""
    side, batch = peak_shape()
    conv = torch.nn.Conv3d(channels, channels, 3, padding=1, bias=False).to(DEVICE[0])
    x = torch.randn(batch, channels, side, side, side, device=DEVICE[0])
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last_3d), x.contiguous(memory_format=torch.channels_last_3d)
    if bf16:
        conv, x = conv.to(torch.bfloat16), x.to(torch.bfloat16)
    flops = 2 * channels * channels * 27 * batch * side**3
    with torch.no_grad():
        return flops / median_seconds(lambda: conv(x), repeats) / 1e9


def fast_bf16() -> bool:
    """bf16 arithmetic in hardware here (a GPU, or a CPU with AVX512-BF16/AMX); elsewhere oneDNN
    emulates it, minutes for a measurement that means nothing."""
    return on_gpu() or cpu_has_bf16()


def reference_peaks(bf16: bool = True) -> dict:
    """The reference Conv3d peaks, GFLOP/s by (bf16, channels_last): fp32 channels-first, and bf16
    channels-last where ``bf16`` is asked for and the hardware has bf16 arithmetic."""
    peaks = {(False, False): conv_peak(bf16=False, channels_last=False)}
    if bf16 and fast_bf16():
        peaks[True, True] = conv_peak(bf16=True, channels_last=True)
    return peaks


def peaks_line(peaks: dict) -> str:
    """The printed Conv3d peaks: ``peaks`` maps (bf16, channels_last) to GFLOP/s, as measured."""
    side, batch = peak_shape()
    if (True, True) in peaks:
        bf16 = f"bf16 channels_last_3d {peaks[True, True]:.0f} GFLOP/s"
    else:
        bf16 = "bf16 not measured" + ("" if fast_bf16() else " (no bf16 arithmetic on this CPU)")
    return f"Conv3d peak (64 ch, 3x3x3, {side}^3, batch {batch}): fp32 {peaks[False, False]:.0f} GFLOP/s, {bf16}"


def reference_conv(recipe) -> tuple[bool, bool]:
    """(bf16, channels_last) of the Conv3d the training figures are a share of: bf16 channels-last
    where the timed training runs under autocast, else fp32 in the training's memory layout."""
    if auto_amp(AMP[0] or recipe.train.amp, DEVICE[0]) != "none":
        return True, True
    return False, recipe.train.channels_last if LAYOUT[0] is None else LAYOUT[0] == "last"


def conv_name(bf16: bool, channels_last: bool) -> str:
    return f"{'bf16' if bf16 else 'fp32'} {'channels-last' if channels_last else 'channels-first'}"


def matmul_peak(n: int = 8192, repeats: int = 10) -> float:
    """GFLOP/s of an n x n x n bf16 matrix product on the GPU (its tensor cores' practical rate)."""
    a, b = (torch.randn(n, n, device=DEVICE[0], dtype=torch.bfloat16) for _ in range(2))
    return 2 * n**3 / median_seconds(lambda: a @ b, repeats) / 1e9


def flop_counter():
    """``torch.utils.flop_counter.FlopCounterMode`` that also counts ``aten.mkldnn_convolution``,
    where ``augment3d.models.ops.conv3d`` sends one fp32 CPU sample (torch's counter knows only
    ``aten.convolution`` and its GPU kernels, so those convolutions would count as nothing)."""
    from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

    def onednn(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        return conv_flop_count(x_shape, w_shape, out_shape)

    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.mkldnn_convolution: onednn})


def step_flops(recipe, shape: int) -> tuple[float, float]:
    """FLOPs of one training step (no R1) and the convolutions' share of them."""
    counter = flop_counter()
    with counter:
        train_rate(recipe, shape, steps=0)
    total = counter.get_total_flops()
    conv = sum(n for op, n in counter.get_flop_counts().get("Global", {}).items() if "convolution" in str(op))
    return float(total), conv / max(total, 1)


def random_setup(recipe, shape: int, n: int = 8):
    """(encoder, model config at ``shape``^3, ``n`` random training subjects) for timing steps."""
    from dataclasses import replace

    enc = ConditionEncoder(recipe.data.categories)
    model = replace(recipe.model_config(enc.dim), shape=(shape,) * 3, **MODEL_SET)
    g = torch.Generator().manual_seed(0)
    data = TrainingData(
        torch.rand(n, 4, shape, shape, shape, generator=g) * 2 - 1,
        torch.randint(0, 4, (n, shape, shape, shape), generator=g),
        torch.from_numpy(enc.encode(enc.all_conditions()[:1] * n)),
    )
    return enc, model, data


def step_walls(recipe, shape: int, steps: int, on_step=None) -> list[float]:
    """Wall seconds of each of ``steps`` training steps on random data (the first includes building
    the networks, the last writing the run folder); ``on_step()`` is called after each."""
    from dataclasses import replace

    enc, model, data = random_setup(recipe, shape)
    walls = []
    last = [time.perf_counter()]

    def tick(step, total, metrics):
        sync()
        now = time.perf_counter()
        walls.append(now - last[0])
        last[0] = now
        if on_step is not None:
            on_step()

    cfg = replace(
        recipe.train,
        steps=steps,
        checkpoint_every=10**9,
        log_every=10**9,
        amp=AMP[0] or recipe.train.amp,
        channels_last=recipe.train.channels_last if LAYOUT[0] is None else LAYOUT[0] == "last",
        **train_overrides(recipe.train),
    )
    with tempfile.TemporaryDirectory() as tmp:
        train_gan(tmp, data, model, cfg, enc, device=DEVICE[0], progress=tick)
    return walls


def train_rate(recipe, shape: int, steps: int) -> float:
    """Volumes/s over ``steps`` timed steps after one warm-up step (``steps=0``: the warm-up only, 0.0)."""
    walls = step_walls(recipe, shape, steps + 1)
    return recipe.train.batch / statistics.median(walls[1:]) if steps else 0.0


@torch.no_grad()
def generation_rate(recipe, shape: int, batch: int, bf16: bool, channels_last: bool = True, repeats: int = 3) -> float:
    from dataclasses import replace

    enc = ConditionEncoder(recipe.data.categories)
    net = Generator3D(replace(recipe.model_config(enc.dim), shape=(shape,) * 3, **MODEL_SET)).eval().to(DEVICE[0])
    net.channels_last = channels_last
    z = torch.randn(batch, net.config.z_dim, device=DEVICE[0])
    c = torch.from_numpy(enc.encode(enc.all_conditions()[:1] * batch)).to(DEVICE[0]) if enc.dim else None
    labels = torch.randint(0, 4, (batch, shape, shape, shape), generator=torch.Generator().manual_seed(0))
    maps = label_maps(labels, labels >= 0).to(DEVICE[0]) if net.takes_labels else None

    def forward():
        with torch.autocast(torch.device(DEVICE[0]).type, dtype=torch.bfloat16, enabled=bf16):
            net(z, c, maps=maps)

    return batch / median_seconds(forward, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", type=int, nargs="*", default=[32, 64])
    parser.add_argument("--gen-shapes", type=int, nargs="*", default=[32, 64, 128])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--recipe", default="quick")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default=None, help="override the recipe's autocast")
    parser.add_argument(
        "--train-layout", choices=["first", "last"], default=None, help="override the recipe's channels_last setting for training"
    )
    parser.add_argument("--layouts", choices=["last", "both"], default="last", help="generation memory layouts")
    parser.add_argument(
        "--peak-channels",
        type=int,
        nargs="*",
        default=[],
        metavar="C",
        help="also print the bf16 channels-last Conv3d rate at these widths (C in, C out, 32^3, "
        "batch 4): the ceiling of a model whose layers are that narrow",
    )
    parser.add_argument(
        "--train-set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override [train] fields for the training figures (TOML values, e.g. steps=20 or terms.label_consistency.weight=1)",
    )
    parser.add_argument(
        "--model-set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override [model] fields for the training figures (e.g. d_spectral_norm=true)",
    )
    args = parser.parse_args()
    AMP[0], LAYOUT[0], DEVICE[0] = args.amp, args.train_layout, args.device
    apply_overrides(args.train_set, args.model_set)
    recipe = load_recipe(args.recipe)
    print(f"machine: {machine()}")
    print(
        f"recipe: {args.recipe} (model {recipe.model}, batch {recipe.train.batch}, loss {recipe.train.loss}, "
        f"training autocast {args.amp or recipe.train.amp}, channels_last "
        f"{recipe.train.channels_last if args.train_layout is None else args.train_layout == 'last'})"
        + (f", [train] overrides {TRAIN_SET}" if TRAIN_SET else "")
        + (f", [model] overrides {MODEL_SET}" if MODEL_SET else "")
    )
    peaks = reference_peaks()
    side, batch = peak_shape()
    print(peaks_line(peaks))
    if on_gpu():
        print(f"bf16 matrix product 8192^3: {matmul_peak():.0f} GFLOP/s")
    reference = reference_conv(recipe)
    if reference not in peaks:
        peaks[reference] = conv_peak(*reference)
    peak, peak_name = peaks[reference], conv_name(*reference)
    print(f"training shares below are of the {peak_name} Conv3d: {peak:.0f} GFLOP/s")
    for channels in args.peak_channels:
        narrow = conv_peak(bf16=True, channels_last=True, channels=channels)
        print(
            f"Conv3d at {channels} ch (3x3x3, {side}^3, batch {batch}), bf16 channels_last_3d: {narrow:.0f} GFLOP/s "
            f"= {100 * narrow / peak:.0f}% of the peak"
        )
    for shape in sorted(args.shapes):
        flops, conv_share = step_flops(recipe, shape)
        if on_gpu():
            torch.cuda.reset_peak_memory_stats()
        rate = train_rate(recipe, shape, args.steps)
        seconds = recipe.train.batch / rate
        achieved = flops / seconds / 1e9
        if on_gpu():
            memory = f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
        else:
            memory = f"peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
        print(
            f"train {shape}^3 batch {recipe.train.batch}: {rate:.2f} volumes/s ({seconds:.2f} s/step), "
            f"{flops / 1e9:.0f} GFLOP/step ({100 * conv_share:.0f}% of them in convolutions), {achieved:.0f} GFLOP/s = "
            f"{100 * achieved / peak:.0f}% of the {peak_name} peak; {memory}"
        )
    layouts = (True, False) if args.layouts == "both" else (True,)
    for shape in args.gen_shapes:
        for batch in (1, 8):
            for bf16 in (False, True) if fast_bf16() else (False,):
                for last in layouts:
                    rate = generation_rate(recipe, shape, batch, bf16, last)
                    print(
                        f"generate {shape}^3 batch {batch} {'bf16' if bf16 else 'fp32'} "
                        f"{'channels_last_3d' if last else 'channels-first'}: {rate:.2f} volumes/s "
                        f"({1000 / rate:.0f} ms/volume)"
                    )


if __name__ == "__main__":
    main()
