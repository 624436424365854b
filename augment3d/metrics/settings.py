"""Every metric setting in one place, so a number always means the same thing."""

from __future__ import annotations

__all__ = [
    "DATA_RANGE",
    "SSIM_SIGMA",
    "SSIM_KERNEL",
    "MSSSIM_KERNEL",
    "MSSSIM_BETAS",
    "KID_SUBSETS",
    "KID_SUBSET_SIZE",
    "PRDC_K",
    "MEMORISATION_PERCENTILE",
    "SSIM_CROSS_CHECK_TOLERANCE",
]

#: images are scaled to [-1, 1]
DATA_RANGE = 2.0
#: SSIM: Gaussian window, sigma 1.5 voxels, 11 voxels wide (as skimage's truncate=3.5 gives)
SSIM_SIGMA = 1.5
SSIM_KERNEL = 11
#: MS-SSIM for diversity: 3 scales (so 32^3 volumes work), Gaussian 5-voxel window; the first
#: three of Wang et al.'s weights, renormalised
MSSSIM_KERNEL = 5
MSSSIM_BETAS = (0.0448 / 0.6305, 0.2856 / 0.6305, 0.3001 / 0.6305)
#: KID: unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets
KID_SUBSETS = 100
KID_SUBSET_SIZE = 50
#: precision / recall / density / coverage: k nearest neighbours
PRDC_K = 5
#: memorisation threshold: this percentile of held-out-real vs train similarity
MEMORISATION_PERCENTILE = 99.0
#: largest |torchmetrics - skimage| SSIM difference accepted by the cross-check test
SSIM_CROSS_CHECK_TOLERANCE = 0.02
