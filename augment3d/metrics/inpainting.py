"""The BraTS 2023 inpainting challenge's metrics ("local synthesis of healthy brain tissue"),
computed by its rules on one modality of one subject.

Rules, as the challenge's own package (``inpainting.challenge_metrics_2023.generate_metrics``)
applies them to a volume of shape (X, Y, Z):

1. the prediction and the truth are kept inside the region (zero outside);
2. both are clipped to the 0.5th and 99.5th percentile of the *voided* image (the truth with
   the region zeroed, the whole volume, background included; the lower bound at least 0) and
   scaled to [0, 1] by them;
3. SSIM: the 2D Gaussian SSIM (window 11, sigma 1.5, K1 0.01, K2 0.03, the data range the
   larger of the two images' ranges, reflected borders) on every slice along the first axis,
   the map averaged over the region's voxels;
4. MSE over the region's voxels, and PSNR with a data range of 1 (``psnr_01``; the scale after
   step 2).

augment3d's images are on [-1, 1] with the background at -1; :func:`inpainting_scores` maps
them to [0, 1] first (background 0, as a scanner's), so the percentile rule sees what it sees
on MRI. A test checks the figures against the official package on the same arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["challenge_metrics", "inpainting_scores"]

_WINDOW, _SIGMA, _K1, _K2 = 11, 1.5, 0.01, 0.03


def _gaussian_window() -> torch.Tensor:
    x = torch.arange(_WINDOW, dtype=torch.float64) - (_WINDOW - 1) / 2
    g = torch.exp(-0.5 * (x / _SIGMA) ** 2)
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def _ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-voxel SSIM of two (X, Y, Z) volumes, 2D over each slice of the first axis."""
    x = torch.from_numpy(np.asarray(a, dtype=np.float64))[:, None]  # slices as a batch: (X, 1, Y, Z)
    y = torch.from_numpy(np.asarray(b, dtype=np.float64))[:, None]
    data_range = max(float(x.max() - x.min()), float(y.max() - y.min()))
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    pad = (_WINDOW - 1) // 2
    stack = torch.cat([x, y, x * x, y * y, x * y])
    stack = F.pad(stack, (pad, pad, pad, pad), mode="reflect")
    means = F.conv2d(stack, _gaussian_window()).split(x.shape[0])
    mu_x, mu_y, xx, yy, xy = means
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim[:, 0].numpy()


def challenge_metrics(prediction: np.ndarray, target: np.ndarray, voided: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The challenge's SSIM, MSE and PSNR (data range 1) of one (X, Y, Z) volume in the scanner's
    intensities (non-negative, background 0), inside ``mask`` (bool); ``voided`` is the image the
    inpainting saw (the truth with the region zeroed). See the module for the rules."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("the region is empty: nothing was inpainted to score")
    low, high = np.percentile(voided, [0.5, 99.5])
    low = max(float(low), 0.0)
    if not high > low:
        raise ValueError("the voided image has no intensity range to normalise by")

    def scaled(volume: np.ndarray) -> np.ndarray:
        return (np.clip(np.where(mask, volume, 0.0), low, high) - low) / (high - low)

    p, t = scaled(np.asarray(prediction, dtype=np.float64)), scaled(np.asarray(target, dtype=np.float64))
    mse = float(np.mean((p[mask] - t[mask]) ** 2))
    return {
        "ssim": float(_ssim_map(p, t)[mask].mean()),
        "mse": mse,
        "psnr": float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf"),
    }


def inpainting_scores(prediction: np.ndarray, target: np.ndarray, region: np.ndarray) -> dict[str, Any]:
    """The challenge's metrics of augment3d images ((4, X, Y, Z) on [-1, 1], background -1) inside
    ``region`` ((X, Y, Z), nonzero inside), per modality and their mean over the modalities:
    ``{"ssim": ..., "mse": ..., "psnr": ..., "per_modality": [{...}, ...]}``."""
    region = np.asarray(region) > 0
    per = []
    for pred, truth in zip(np.asarray(prediction), np.asarray(target)):
        pred01, truth01 = (pred + 1.0) / 2.0, (truth + 1.0) / 2.0  # background 0, as a scanner's
        per.append(challenge_metrics(pred01, truth01, np.where(region, 0.0, truth01), region))
    return {key: float(np.mean([m[key] for m in per])) for key in ("ssim", "mse", "psnr")} | {"per_modality": per}
