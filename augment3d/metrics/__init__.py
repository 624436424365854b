"""GAN metrics: SSIM/MSE/PSNR, FID/KID on 3D features, diversity, PRDC, memorisation, consistency."""

from .diversity import mean_pairwise_ms_ssim, ms_ssim, prdc
from .frechet import frechet_distance, kernel_distance
from .memorisation import correlation, memorisation_audit
from .regions import REGIONS, dice
from .similarity import mse, psnr, ssim

__all__ = [
    "REGIONS",
    "correlation",
    "dice",
    "frechet_distance",
    "kernel_distance",
    "mean_pairwise_ms_ssim",
    "memorisation_audit",
    "ms_ssim",
    "mse",
    "prdc",
    "psnr",
    "ssim",
]
