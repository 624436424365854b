"""The evaluation report: report.md and PNGs (real vs synthetic, histograms, memorisation pairs)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_write_bytes, atomic_write_text
from ..brats import LABEL_NAMES, MODALITY_TITLES
from ..viz import save_montage
from .results import Evaluation

__all__ = ["write_report"]


def _histograms(path: Path, real: np.ndarray, synthetic: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(12, 2.8))
    bins = np.linspace(-1, 1, 51)
    for c, (ax, title) in enumerate(zip(axes, MODALITY_TITLES.values())):
        for data, name in ((real, "real"), (synthetic, "synthetic")):
            values = data[:, c][data[:, c] > -0.999]
            ax.hist(values, bins=bins, density=True, histtype="step", label=f"{name} (n={len(data)})")
        ax.set_title(f"{title}, inside the brain")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _row(name: str, value, reference=None, better: str = "") -> str:
    def fmt(v):
        return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    return f"| {name} | {fmt(value)} | {fmt(reference)} | {better} |"


def _profile_table(profile: dict | None) -> list[str]:
    """Tumour size and class shares per condition category, synthetic beside real training."""
    if not profile:
        return []
    lines = [
        "",
        "Tumour labels per condition (synthetic / real training; tumour = % of the grid, shares of the tumour):",
        "",
        "| condition | N | tumour % | NETC share | SNFH share | ET share |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def pair(a, b):
        return " / ".join("-" if v is None else f"{v:.2f}" for v in (a, b))

    for column, categories in profile["synthetic"].items():
        for value, syn in categories.items():
            real = profile["real_train"].get(column, {}).get(value, {})
            lines.append(
                f"| {column}={value} | {syn['n']} / {real.get('n', 0)} | "
                f"{pair(syn['tumour_percent'], real.get('tumour_percent'))} | "
                + " | ".join(pair(syn[f"{k}_share"], real.get(f"{k}_share")) for k in LABEL_NAMES.values())
                + " |"
            )
    return lines


def _fidelity_rows(m: Evaluation) -> list[str]:
    """Condition fidelity per column and category, and (labels mode) the restyled training maps."""
    lines = []
    for column, result in m.condition_fidelity.items():
        if result.synthetic_accuracy is None:
            continue
        lines.append(
            _row(
                f"condition fidelity: {column} accuracy",
                result.synthetic_accuracy,
                result.real_accuracy_cross_validated,
                "higher; reference = real subjects, cross-validated",
            )
        )
        held = result.real_accuracy_cross_validated_by_category or {}
        counts = result.synthetic_n_by_category or {}
        for category, value in result.synthetic_accuracy_by_category.items():
            n = f" (n={counts[category]})" if category in counts else ""
            lines.append(_row(f"  {column}={category} recognised{n}", value, held.get(category), "higher"))
    for column, restyle in m.restyle_fidelity.items():
        fidelity = m.condition_fidelity.get(column)
        held = (fidelity.real_accuracy_cross_validated_by_category if fidelity else None) or {}
        perfect = restyle.perfect_restyle_by_target_category
        note = (
            "higher; reference = a perfect restyle (the phantom re-rendered at that site)"
            if perfect
            else "higher; what the augmenter does"
        )
        for category, value in restyle.by_target_category.items():
            lines.append(
                _row(
                    f"restyled training maps recognised as {column}={category} (n={restyle.n})",
                    value,
                    (perfect or held).get(category),
                    note,
                )
            )
    return lines


def write_report(folder: Path, m: Evaluation, train, held, syn_x, syn_y, conditions, audit) -> None:
    items, seen = [], set()
    for i, condition in enumerate(conditions):
        key = tuple(sorted(condition.items()))
        if key in seen:
            continue
        seen.add(key)
        real = next((c for c in train if c.conditions == condition), None)
        name = " ".join(condition.values())
        if real is not None:
            items.append((f"real {real.subject_id} {name}", real.images, real.label))
        items.append((f"synthetic seed {m.seed + i} {name}", syn_x[i], syn_y[i]))
    save_montage(items, folder / "montage_real_vs_synthetic.png")
    _histograms(folder / "histograms.png", np.stack([c.images for c in train]), syn_x)
    pairs = []
    for s, t, value in audit["closest_pairs"]:
        pairs.append((f"synthetic {s} (SSIM {value:.3f})", syn_x[s], syn_y[s]))
        pairs.append((f"nearest train {train[t].subject_id}", train[t].images, train[t].label))
    save_montage(pairs, folder / "memorisation_pairs.png")

    fid, kid = m.fid, m.kid
    lines = [
        f"# GAN evaluation: {m.run}",
        "",
        f"Generator step {m.generator_step} ({m.mode} mode), grid {'x'.join(map(str, m.grid))}, psi {m.psi}, "
        f"features `{m.extractor}`. N: {m.n_synthetic} synthetic, {m.n_real_train} real training, "
        f"{m.n_real_held_out} real held-out subjects. FID and KID are biased upwards at small N: compare "
        "them with the floor (held-out real vs training real) computed at the same N, not across runs of other N.",
        "",
    ]
    if m.note:
        lines += [f"> Note: {m.note}.", ""]
    verdicts = [d.verdict for d in (kid, fid) if d.verdict]  # KID first: the steadier at the small N of BraTS-Africa
    lines += [f"- {v}" for v in verdicts] + ([""] if fid.verdict else [])
    lines += [
        "| metric | synthetic | reference (real) | better |",
        "| --- | --- | --- | --- |",
        _row("FID vs training real", fid.synthetic_vs_train, fid.floor_held_out_vs_train, "lower, near the floor"),
        _row("KID vs training real", kid.synthetic_vs_train, kid.floor_held_out_vs_train, "lower, near the floor"),
        _row("SSIM to nearest held-out real", m.ssim_to_nearest_held_out.mean, m.reference_ssim.mean, "close to the reference"),
        _row("MSE to nearest held-out real", m.mse_to_nearest_held_out.mean, m.reference_mse.mean, "close to the reference"),
        _row("PSNR to nearest held-out real (dB)", m.psnr_to_nearest_held_out.mean, None, "higher"),
    ]
    if m.diversity.synthetic is not None:
        lines.append(
            _row(
                "mean pairwise MS-SSIM (diversity)",
                m.diversity.synthetic,
                m.diversity.real_train,
                "close to real; higher = less diverse",
            )
        )
    for name in ("precision", "recall", "density", "coverage"):
        lines.append(_row(name.capitalize(), m.prdc[name], m.prdc_reference_held_out[name], "higher, near the reference"))
    mem = m.memorisation
    lines.append(
        _row(
            "share flagged as near-copies",
            mem["share_flagged"],
            None,
            f"0 (threshold SSIM {mem['threshold_ssim']:.3f}, correlation {mem['threshold_correlation']:.3f})",
        )
    )
    lines.append(
        _row(
            "share of subjects with a tumour label",
            m.share_with_tumour.synthetic,
            m.share_with_tumour.real,
            "as real (empty vs empty scores Dice 1 below)",
        )
    )
    if m.tumour_at_head_edge is not None:
        lines.append(
            _row(
                "share of tumour voxels at the head's edge (2 voxels)",
                m.tumour_at_head_edge.synthetic,
                m.tumour_at_head_edge.real,
                "close to real (labels along the skull are wrong)",
            )
        )
    consistency = m.label_consistency
    for region, value in consistency.synthetic.items():
        lines.append(
            _row(
                f"label consistency Dice {region}",
                value,
                consistency.reference_held_out_real[region],
                "higher; reference = the judge on held-out real",
            )
        )
    if consistency.with_tumour_wt is not None:
        lines.append(
            _row(
                f"label consistency Dice WT, the {consistency.with_tumour_n} subjects with a tumour label",
                consistency.with_tumour_wt,
                consistency.reference_held_out_real["WT"],
                "higher; no empty-vs-empty 1s",
            )
        )
    if consistency.ratio_to_real is not None:
        lines.append(
            _row(
                "label consistency WT, synthetic with a tumour / real",
                consistency.ratio_to_real,
                1.0,
                "near 1 (labels-to-images target: >= 0.9)",
            )
        )
    lines += _fidelity_rows(m)
    lines += _profile_table(m.label_profile)
    lines += [
        "",
        "Figures: `montage_real_vs_synthetic.png`, `histograms.png`, `memorisation_pairs.png`. "
        "Every number with its N and settings is in `metrics.json` (schema "
        f"{m.schema}); docs/METRICS.md explains them.",
        "",
    ]
    atomic_write_text(folder / "report.md", "\n".join(lines))
