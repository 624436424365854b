"""augment3d.monai's transforms' cost per sample in a MONAI pipeline, against its own augmentation.

Usage:
    python benchmarks/monai_cost.py [--side 96] [--samples 20] [--runs 5]

One channel-first sample (four modalities stacked in ``image``, a healthy ``label``) on a
--side^3 grid, as MONAI's BraTS tutorial has it after loading. Each of --runs runs times, per
sample over --samples calls in one process, `RandTumourPasted(prob=1)`, `RandSyntheticReplaced(
"phantom", prob=1)` (the bundled generator; generation at one thread, as in a worker) and the
tutorial's training augmentation (region channels, a 96^3 random crop where the grid allows, three
random flips, intensity normalisation, random intensity scale and shift), and prints both and
the ratios; then the median and range of the ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile

import numpy as np
import torch
from monai import transforms as mt
from monai.data import MetaTensor
from paste_cost import donor
from ratios import per_call, ratio_runs

from augment3d import TumourBank
from augment3d.monai import RandSyntheticReplaced, RandTumourPasted
from augment3d.brats import MODALITIES


def sample(side: int) -> dict:
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, side)] * 3, indexing="ij"))
    brain = (grid**2).sum(0) < 0.7
    images = np.stack([brain * (100 + 20 * k + rng.normal(0, 5, brain.shape)) for k in range(4)]).astype(np.float32)
    affine = torch.eye(4, dtype=torch.float64)
    return {
        "image": MetaTensor(torch.from_numpy(images), affine=affine),
        "label": MetaTensor(torch.zeros(1, side, side, side), affine=affine),
        "site": "HIC",
        "grade": "HGG",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=96)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {args.side}^3 sample, {args.samples} samples a run"
    )
    data = sample(args.side)
    crop = min(96, args.side)
    tutorial = mt.Compose(
        [
            mt.ConvertToMultiChannelBasedOnBratsClassesd(keys="label"),
            mt.RandSpatialCropd(keys=["image", "label"], roi_size=[crop] * 3, random_size=False),
            mt.RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
            mt.RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=1),
            mt.RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=2),
            mt.NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
            mt.RandScaleIntensityd(keys="image", factors=0.1, prob=1.0),
            mt.RandShiftIntensityd(keys="image", offsets=0.1, prob=1.0),
        ]
    ).set_random_state(seed=0)
    with tempfile.TemporaryDirectory() as folder:
        TumourBank.from_subjects([donor(args.side, c) for c in (-0.3, -0.1, 0.1, 0.3)]).save(folder)
        paste = RandTumourPasted(folder, prob=1.0, channels=MODALITIES).set_random_state(seed=0)
        synthetic = RandSyntheticReplaced("phantom", prob=1.0, condition={"site": "SSA"}).set_random_state(seed=0)
        ratio_runs(
            args.runs,
            "the tutorial's augmentation",
            lambda: per_call(lambda: tutorial(data), args.samples),
            {
                "RandTumourPasted": lambda: per_call(lambda: paste(data), args.samples),
                "RandSyntheticReplaced": lambda: per_call(lambda: synthetic(data), args.samples),
            },
        )
        print(f"(pasted {paste.pasted}, no room {paste.no_room})")


if __name__ == "__main__":
    main()
