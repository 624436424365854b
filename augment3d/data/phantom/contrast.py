"""Tissue contrast per site and modality, and the scanner effects of each site.

``HIC`` stands for a well-resourced site (high SNR, 1 mm, mild bias field). ``SSA`` stands for
an under-represented site on older, lower-field scanners: more noise, thick slices, a stronger
bias field, and tissue contrast that differs *non-monotonically* from HIC (FLAIR grey/white
order flipped with poorer CSF suppression, T2 oedema brighter than CSF, T1 grey/white contrast
compressed with oedema moving above grey matter, weaker enhancement). No monotone intensity
map (gamma, bias, noise) turns one site's images into the other's.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TISSUES", "SITE_CONTRAST", "SITE_SCANNER", "tissue_table"]

TISSUES = ("csf", "gm", "wm", "oedema", "necrosis", "enhancing", "nonenhancing")

# rows: modality; values per tissue in TISSUES order, relative to white matter ~0.8 on T1
SITE_CONTRAST: dict[str, dict[str, tuple[float, ...]]] = {
    "HIC": {
        "t1n": (0.25, 0.55, 0.80, 0.48, 0.30, 0.55, 0.45),
        "t1c": (0.25, 0.57, 0.80, 0.50, 0.28, 1.00, 0.50),
        "t2w": (1.00, 0.62, 0.45, 0.85, 0.95, 0.65, 0.80),
        "t2f": (0.10, 0.62, 0.48, 0.95, 0.55, 0.75, 0.85),
    },
    "SSA": {
        "t1n": (0.35, 0.62, 0.70, 0.66, 0.36, 0.58, 0.52),
        "t1c": (0.35, 0.63, 0.70, 0.66, 0.33, 0.85, 0.55),
        "t2w": (0.80, 0.60, 0.50, 0.95, 0.85, 0.66, 0.78),
        "t2f": (0.25, 0.55, 0.58, 0.90, 0.50, 0.70, 0.80),
    },
}

# scanner effects: noise sigma (relative), bias-field strength (log-amplitude),
# in-plane blur (mm, FWHM) and slice thickness (mm, FWHM of the through-plane blur)
SITE_SCANNER: dict[str, dict[str, tuple[float, float]]] = {
    "HIC": {"noise": (0.010, 0.020), "bias": (0.03, 0.08), "fwhm": (0.8, 1.2), "slice": (1.0, 1.5)},
    "SSA": {"noise": (0.025, 0.040), "bias": (0.12, 0.22), "fwhm": (1.5, 2.5), "slice": (3.0, 5.0)},
}


def tissue_table(site: str, rng: np.random.Generator, jitter: float = 0.03) -> dict[str, np.ndarray]:
    """Per-subject intensities: the site's table times a small random factor per entry."""
    table = {}
    for modality, values in SITE_CONTRAST[site].items():
        base = np.asarray(values, dtype=np.float64)
        table[modality] = base * (1.0 + jitter * rng.standard_normal(base.shape))
    return table
