"""Inpainting quality of a run against an L1-only U-Net and a trivial fill, on held-out crops.

    python scripts/inpaint_eval.py RUN COHORT SPLITS OUT [--unet-seconds S] [--unet-width W]

RUN is an inpainting run (``augment3d train COHORT --recipe phantom_inpaint``, trained on the
``train`` ids of SPLITS, a bench's ``splits.json``); the ``test`` ids are scored. Per test case,
one crop around its tumour (seeded) and two regions to render: ``lesion`` (the tumour grown by two
voxels: the real lesion rendered again from its map) and ``healthy`` (a ball of radius 5 in brain
tissue at least 3 voxels from the tumour, as the BraTS inpainting task asks). Methods:

* ``gan``: the run's generator (seed = the case's index, the case's own condition);
* ``unet``: a two-level U-Net (``TinySegmenter`` with 9 input channels, the generator's input)
  trained with L1 inside the region on the run's training crops and region draws, for as many
  seconds as the run's training took (``--unet-seconds`` to set them);
* ``fill``: each modality's mean over the crop's brain outside the region (the floor).

Scores: the challenge's masked SSIM, PSNR, MSE (``augment3d.metrics.inpainting``), mean and SD
over cases, per task; written to OUT/inpaint_eval.json and printed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from augment3d.config.recipe import load_recipe
from augment3d.data.crops import tumour_crops
from augment3d.io.run_files import LOG, read_log
from augment3d.metrics.inpaint_evaluate import healthy_ball, mean_fill, paired_difference
from augment3d.metrics.inpainting import inpainting_scores
from augment3d.models.segmenter import TinySegmenter
from augment3d.models.spatial_conditioning import inpaint_maps, label_maps, tumour_regions
from augment3d.synthesis.sampling import load_generator
from augment3d.training.loop import RegionDraw


def train_unet(crops, width: int, seconds: float, ball_share: float, seed: int = 0) -> tuple[TinySegmenter, int]:
    torch.manual_seed(seed)
    net = TinySegmenter(9, 4, width)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    images = torch.from_numpy(np.stack([c.images for c in crops]))
    labels = torch.from_numpy(np.stack([c.label for c in crops]).astype(np.int64))
    rng = torch.Generator().manual_seed(seed)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        idx = torch.randint(0, len(crops), (4,), generator=rng)
        regions = RegionDraw.draw(len(idx), labels.shape[1:], ball_share, rng).regions(labels[idx])
        x = inpaint_maps(label_maps(labels[idx], (images[idx] > -1 + 1e-3).any(1)), images[idx], regions)
        out = torch.tanh(net(x))
        loss = ((out - images[idx]).abs() * regions[:, None]).sum() / (regions.sum() * 4).clamp_min(1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    return net.eval(), steps


def unet_fill(net, images: np.ndarray, label: np.ndarray, region: np.ndarray) -> np.ndarray:
    x_img = torch.from_numpy(images[None])
    lab = torch.from_numpy(label[None].astype(np.int64))
    reg = torch.from_numpy(region[None])
    with torch.no_grad():
        out = torch.tanh(net(inpaint_maps(label_maps(lab, (x_img > -1 + 1e-3).any(1)), x_img, reg)))[0].numpy()
    brain = (images > -1 + 1e-3).any(0) | (label > 0)
    rendered = np.where(brain, np.clip(out, -1 + 1e-3, 1), -1.0)
    return np.where(region > 0, rendered, images).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("cohort", type=Path)
    parser.add_argument("splits", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--unet-seconds", type=float, default=None)
    parser.add_argument("--unet-width", type=int, default=12)
    args = parser.parse_args()
    recipe = load_recipe(args.run / "recipe.toml")
    splits = json.loads(args.splits.read_text())
    cohort = recipe.data.prepare(args.cohort)
    by_id = {c.subject_id: c for c in cohort.cases}
    gen = load_generator(args.run)
    side = gen.shape[0]
    test = tumour_crops([by_id[i] for i in splits["test"]], side, per_case=1, seed=123)
    train = tumour_crops([by_id[i] for i in splits["train"]], side, recipe.train.crops_per_case, recipe.train.seed)
    log = read_log(args.run / LOG)
    seconds = args.unet_seconds if args.unet_seconds is not None else float(log[-1]["seconds"])  # the log's clock is cumulative
    g_params = sum(p.numel() for p in gen.network.parameters())
    net, steps = train_unet(train, args.unet_width, seconds, recipe.train.ball_regions)
    u_params = sum(p.numel() for p in net.parameters())
    print(
        f"GAN: {g_params} generator parameters; U-Net width {args.unet_width}: {u_params} parameters, {steps} steps in {seconds:.0f} s"
    )
    rng = np.random.default_rng(7)
    rows: dict[str, dict[str, list]] = {}
    for i, crop in enumerate(test):
        lesion = tumour_regions(torch.from_numpy(crop.label[None].astype(np.int64)), torch.tensor([2]))[0].numpy()
        tasks = {"lesion": lesion, "healthy": healthy_ball(crop.label, crop.images, rng)}
        for task, region in tasks.items():
            outputs = {
                "gan": gen.inpaint(crop.images[None], crop.label[None], region[None], condition=crop.conditions, seeds=[i])[0],
                "unet": unet_fill(net, crop.images, crop.label, region),
                "fill": mean_fill(crop.images, region),
            }
            for method, output in outputs.items():
                scores = inpainting_scores(output, crop.images, region)
                rows.setdefault(task, {}).setdefault(method, []).append({k: scores[k] for k in ("ssim", "psnr", "mse")})
    summary = {
        task: {
            method: {k: [float(np.mean([r[k] for r in v])), float(np.std([r[k] for r in v]))] for k in ("ssim", "psnr", "mse")}
            for method, v in methods.items()
        }
        for task, methods in rows.items()
    }
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"cases": len(test), "unet_seconds": seconds, "unet_steps": steps, "unet_params": u_params, "gan_params": g_params}
    (args.out / "inpaint_eval.json").write_text(json.dumps({**record, "summary": summary, "rows": rows}, indent=1) + "\n")
    for task, methods in summary.items():
        for method, figures in methods.items():
            shown = ", ".join(f"{k} {m:.4f} +- {s:.4f}" for k, (m, s) in figures.items())
            print(f"{task:8s} {method:5s} {shown}")
        for k in ("ssim", "psnr"):  # paired per case: the GAN against the U-Net, 95% bootstrap CI over cases
            gap = paired_difference([g[k] - u[k] for g, u in zip(rows[task]["gan"], rows[task]["unet"])])
            low, high = gap["ci95"]
            print(
                f"{task:8s} gan - unet {k}: {gap['difference']:+.4f} [{low:+.4f}, {high:+.4f}], "
                f"gan better in {gap['better_in']}/{len(rows[task]['gan'])}"
            )


if __name__ == "__main__":
    main()
