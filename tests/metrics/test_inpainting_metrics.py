"""The inpainting metrics follow the BraTS 2023 inpainting challenge's rules, checked against its package."""

from __future__ import annotations

import numpy as np
import pytest

from augment3d.metrics.inpainting import challenge_metrics, inpainting_scores


def _volume(seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = (rng.random((20, 24, 18)) * 300).astype(np.float32)
    truth[:3] = 0  # background
    mask = np.zeros(truth.shape, bool)
    mask[6:14, 8:16, 5:12] = True
    prediction = truth + rng.normal(0, 30, truth.shape).astype(np.float32)
    return prediction, truth, truth * ~mask, mask


def test_the_figures_equal_the_official_package_s_on_the_same_arrays():
    torch = pytest.importorskip("torch")
    official = pytest.importorskip("inpainting.challenge_metrics_2023")
    for seed in (0, 1):
        prediction, truth, voided, mask = _volume(seed)
        ours = challenge_metrics(prediction, truth, voided, mask)
        theirs = official.generate_metrics(
            *(torch.from_numpy(a)[None] for a in (prediction, truth, voided)), torch.from_numpy(mask)[None]
        )
        assert ours["ssim"] == pytest.approx(theirs["ssim"], abs=1e-6)
        assert ours["mse"] == pytest.approx(theirs["mse"], rel=1e-5)
        assert ours["psnr"] == pytest.approx(theirs["psnr_01"], abs=1e-4)


def test_only_the_region_counts_and_a_perfect_fill_scores_perfectly():
    prediction, truth, voided, mask = _volume()
    perfect = challenge_metrics(np.where(mask, truth, 0.0), truth, voided, mask)  # outside the region: anything
    assert perfect["ssim"] == pytest.approx(1.0) and perfect["mse"] == 0.0 and perfect["psnr"] == float("inf")
    worse = challenge_metrics(np.where(mask, truth * 0.5, truth), truth, voided, mask)
    assert worse["ssim"] < 1.0 and worse["mse"] > 0 and np.isfinite(worse["psnr"])
    with pytest.raises(ValueError, match="region is empty"):
        challenge_metrics(prediction, truth, voided, np.zeros_like(mask))


def test_augment3d_images_are_scored_per_modality_on_the_scanner_s_scale():
    rng = np.random.default_rng(2)
    truth = rng.uniform(-0.5, 1.0, (4, 16, 16, 16)).astype(np.float32)
    truth[:, :2] = -1.0  # background
    region = np.zeros((16, 16, 16), bool)
    region[5:11, 5:11, 5:11] = True
    close = inpainting_scores(truth + 0.01, truth, region)
    far = inpainting_scores(np.where(region, 0.0, truth), truth, region)  # the region filled with grey
    assert len(close["per_modality"]) == 4
    assert close["ssim"] > far["ssim"] and close["psnr"] > far["psnr"] and close["mse"] < far["mse"]
