"""Memorisation audit: is any synthetic subject a near copy of a training subject?

For each synthetic subject: the highest SSIM and Pearson correlation to any training subject.
The threshold is the 99th percentile of the same statistic for held-out real subjects against
the training subjects: a synthetic subject closer than real strangers ever are is flagged.
"""

from __future__ import annotations

import numpy as np

from .settings import MEMORISATION_PERCENTILE
from .similarity import pairwise, ssim

__all__ = ["correlation", "memorisation_audit"]


def correlation(a, b) -> float:
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def memorisation_audit(synthetic, train, held_out, syn_ssim=None, held_ssim=None) -> dict:
    """Returns per-subject maxima, thresholds, the flagged share and the closest pairs.

    ``syn_ssim`` (synthetic x train) and ``held_ssim`` (held-out x train) may be passed when
    already computed.
    """
    syn_ssim = pairwise(synthetic, train, ssim) if syn_ssim is None else syn_ssim
    syn_corr = pairwise(synthetic, train, correlation)
    ref_ssim = (pairwise(held_out, train, ssim) if held_ssim is None else held_ssim).max(axis=1)
    ref_corr = pairwise(held_out, train, correlation).max(axis=1)
    t_ssim = float(np.percentile(ref_ssim, MEMORISATION_PERCENTILE))
    t_corr = float(np.percentile(ref_corr, MEMORISATION_PERCENTILE))
    best_ssim, best_idx = syn_ssim.max(axis=1), syn_ssim.argmax(axis=1)
    best_corr = syn_corr.max(axis=1)
    flagged = (best_ssim > t_ssim) | (best_corr > t_corr)
    order = np.argsort(-best_ssim)
    return {
        "threshold_ssim": t_ssim,
        "threshold_correlation": t_corr,
        "held_out_max_ssim": ref_ssim.tolist(),
        "synthetic_max_ssim": best_ssim.tolist(),
        "synthetic_max_correlation": best_corr.tolist(),
        "share_flagged": float(flagged.mean()),
        "n_flagged": int(flagged.sum()),
        "closest_pairs": [(int(i), int(best_idx[i]), float(best_ssim[i])) for i in order[:3]],
    }
