"""augment3d.nnunet's transforms' cost per sample in nnU-Net v2's loader, against nnU-Net's own augmentation.

Usage:
    python benchmarks/nnunet_cost.py [--side 128] [--samples 10] [--runs 5]

One sample as nnU-Net's data loader hands it to the training transforms: four z-scored channels
(0 outside a spherical brain), a segmentation with -1 outside the brain, on a --side^3 crop with a
--side^3 patch at 1 mm. One thread, as in nnU-Net's worker processes (the loader limits them to
one). Each of --runs runs times, per sample over --samples calls, `TumourPasteTransform(prob=1)`,
`SyntheticRestyleTransform("phantom", prob=1)` (the bundled generator) and nnU-Net's default
training transforms (`nnUNetTrainer.get_training_transforms`: rotation, scaling, noise, blur,
brightness, contrast, low resolution, gamma, mirroring), prints them and the ratios; then the
median and range of the ratios.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from paste_cost import donor
from ratios import per_call, ratio_runs

from augment3d import TumourBank
from augment3d.nnunet import SyntheticRestyleTransform, TumourPasteTransform


def sample(side: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, side)] * 3, indexing="ij"))
    brain = (grid**2).sum(0) < 0.7
    images = np.stack([np.where(brain, rng.normal(0, 1, brain.shape) + 0.2 * k, 0) for k in range(4)]).astype(np.float32)
    seg = np.where(brain, 0, -1).astype(np.int16)[None]
    return torch.from_numpy(images), torch.from_numpy(seg)


def per_sample(transform, image: torch.Tensor, seg: torch.Tensor, n: int) -> float:
    """Wall seconds per sample (each call on fresh copies, as the loader hands them over)."""
    return per_call(lambda: transform(image=image.clone(), segmentation=seg.clone()), n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"1 thread (a worker's); {args.side}^3 sample and patch, {args.samples} samples a run"
    )
    image, seg = sample(args.side)
    patch = (args.side,) * 3
    theirs_pipeline = nnUNetTrainer.get_training_transforms(
        patch, (-30 / 360 * 2 * math.pi, 30 / 360 * 2 * math.pi), None, (0, 1, 2), False
    )
    np.random.seed(0)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        TumourBank.from_subjects([donor(args.side, c) for c in (-0.3, -0.1, 0.1, 0.3)]).save(folder)
        paste = TumourPasteTransform(folder, prob=1.0, patch_size=patch, seed=0)
        restyle = SyntheticRestyleTransform("phantom", prob=1.0, condition={"site": "SSA"}, seed=0)
        ratio_runs(
            args.runs,
            "nnU-Net's augmentation",
            lambda: per_sample(theirs_pipeline, image, seg, args.samples),
            {
                "TumourPasteTransform": lambda: per_sample(paste, image, seg, args.samples),
                "SyntheticRestyleTransform": lambda: per_sample(restyle, image, seg, args.samples),
            },
        )
        print(f"(pasted {paste.applied}, no room {paste.no_room})")


if __name__ == "__main__":
    main()
