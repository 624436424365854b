"""``augment3d evaluate`` for an inpainting run: how well it renders into held-out crops of real subjects.

On one crop per held-out subject (``tumour_crops``, centred near its tumour, seeded), two tasks:

* ``healthy``: a ball of radius 5 voxels in brain tissue at least 3 voxels from the tumour is
  voided and rendered again (the BraTS inpainting challenge's task), scored by the challenge's
  masked SSIM, PSNR and MSE (:mod:`augment3d.metrics.inpainting`) for the generator and for the
  trivial fill (each modality's mean over the crop's brain outside the region: the floor), with
  the paired difference per crop and its 95% bootstrap interval over crops;
* ``lesion``: the subject's tumour (grown by 2 voxels) is voided and rendered from its label map;
  a small segmenter trained on the real training crops (``segmenter_steps``, 400 by default: at
  150 steps it had not learned the tumour core on the phantom's crops) judges whether the rendered
  lesion shows what the map says: its Dice on the rendered crops against its Dice on the real ones
  (the reference; a ratio near 1 or above: as readable as real lesions).

Written to OUT: ``metrics.json`` (``kind = "inpainting"``), ``report.md`` and ``inpainting.png``
(real crop, the crop with the region voided, the rendering, for a few subjects).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..io.output_folders import claim_output, staged_output
from .inpainting import inpainting_scores

__all__ = ["healthy_ball", "mean_fill", "paired_difference", "evaluate_inpainting"]

SCHEMA = 1
SCORES = ("ssim", "psnr", "mse")


def healthy_ball(label: np.ndarray, images: np.ndarray, rng: np.random.Generator, radius: int = 5) -> np.ndarray:
    """A ball of ``radius`` voxels in brain tissue, at least 3 voxels from the tumour (the crop's
    centre if none fits), as float32 0/1."""
    from scipy import ndimage

    side = label.shape[0]
    brain = (images > -1 + 1e-3).any(0)
    far = ndimage.distance_transform_edt(label == 0) > radius + 3
    inside = ndimage.binary_erosion(brain, iterations=radius)
    box = np.zeros_like(brain)
    box[radius : side - radius, radius : side - radius, radius : side - radius] = True
    candidates = np.argwhere(far & inside & box)
    centre = candidates[rng.integers(len(candidates))] if len(candidates) else np.array([side // 2] * 3)
    grid = np.indices(label.shape)
    return (((grid - centre[:, None, None, None]) ** 2).sum(0) <= radius**2).astype(np.float32)


def mean_fill(images: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The trivial inpainting: each modality's mean over the brain outside ``region``, inside it."""
    brain = (images > -1 + 1e-3).any(0) & (region == 0)
    means = [float(m[brain].mean()) if brain.any() else 0.0 for m in images]
    return np.stack([np.where(region > 0, v, m) for v, m in zip(means, images)]).astype(np.float32)


def paired_difference(gap, seed: int = 0) -> dict:
    """Mean of per-case differences, its 95% percentile-bootstrap interval over cases (5000
    resamples, seeded) and how many cases were positive."""
    values = np.asarray(gap, dtype=np.float64)
    boot = np.random.default_rng(seed).choice(values, (5000, len(values))).mean(1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"difference": float(values.mean()), "ci95": [float(low), float(high)], "better_in": int((values > 0).sum())}


def evaluate_inpainting(
    run: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n: int = 32,
    psi: float = 1.0,
    seed: int = 0,
    skip_bad: bool = False,
    force: bool = False,
    cache_dir=None,
    segmenter_steps: int = 400,
    segmenter_width: int = 16,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Score the inpainting run ``run`` on up to ``n`` held-out subjects of ``data`` (see the
    module); write ``out`` (staged: complete or not at all) and return the metrics."""
    import torch

    from ..data.cohort import prepare_cohort
    from ..data.crops import tumour_crops
    from ..models.spatial_conditioning import tumour_regions
    from ..synthesis.sampling import check_conditions_match, load_generator
    from .consistency import label_consistency, train_segmenter
    from .evaluate import split_for_evaluation

    say = progress or (lambda message: None)
    run = Path(run)
    gen = load_generator(run)
    claim_output(out, "evaluation", force=force, inputs=[run, data])
    check_conditions_match(gen, data)
    say("preparing real data")
    cohort = prepare_cohort(data, gen.preprocess, list(gen.conditions), gen.conditions, skip_bad=skip_bad, cache_dir=cache_dir)
    train, held, note = split_for_evaluation(run, cohort.cases, seed)
    side = gen.shape[0]
    crops = tumour_crops(held[:n], side, per_case=1, seed=seed + 123)
    rng = np.random.default_rng(seed)
    say(f"rendering into {len(crops)} held-out crops")
    rows: dict[str, dict[str, list]] = {"gan": {k: [] for k in SCORES}, "fill": {k: [] for k in SCORES}}
    lesion_real: list[np.ndarray] = []
    lesion_gan: list[np.ndarray] = []
    lesion_labels: list[np.ndarray] = []
    shown: list[tuple[str, np.ndarray, np.ndarray]] = []
    for i, crop in enumerate(crops):
        condition = crop.conditions if gen.conditions else None
        region = healthy_ball(crop.label, crop.images, rng)
        rendered = gen.inpaint(crop.images[None], crop.label[None], region[None], condition, [seed + i], psi)[0]
        for method, output in (("gan", rendered), ("fill", mean_fill(crop.images, region))):
            scores = inpainting_scores(output, crop.images, region)
            for k in SCORES:
                rows[method][k].append(float(scores[k]))
        if crop.label.any():
            lesion = tumour_regions(torch.from_numpy(crop.label[None].astype(np.int64)), torch.tensor([2]))[0].numpy()
            again = gen.inpaint(crop.images[None], crop.label[None], lesion[None], condition, [seed + i], psi)[0]
            lesion_real.append(crop.images)
            lesion_gan.append(again)
            lesion_labels.append(crop.label)
            if len(shown) < 6:  # two subjects
                voided = np.where(lesion[None] > 0, 0.0, crop.images).astype(np.float32)
                shown += [(f"{crop.subject_id} real", crop.images, crop.label), ("voided", voided, crop.label)]
                shown.append(("inpainted", again, crop.label))
    if not rows["gan"]["ssim"]:
        raise ValueError("no held-out subject to score")
    healthy = {
        method: {k: {"mean": float(np.mean(v)), "sd": float(np.std(v))} for k, v in scores.items()}
        for method, scores in rows.items()
    }
    gaps = {
        k: paired_difference([(g - f) if k != "mse" else (f - g) for g, f in zip(rows["gan"][k], rows["fill"][k])], seed)
        for k in SCORES
    }
    consistency = None
    if lesion_labels:
        say(f"label consistency: a judge trained on {len(train)} training subjects' crops")
        judge_crops = tumour_crops(train, side, per_case=2, seed=seed + 7)
        judge = train_segmenter(
            np.stack([c.images for c in judge_crops]),
            np.stack([c.label for c in judge_crops]),
            steps=segmenter_steps,
            seed=seed,
            width=segmenter_width,
        )
        labels = np.stack(lesion_labels)
        real = label_consistency(judge, np.stack(lesion_real), labels)
        rendered = label_consistency(judge, np.stack(lesion_gan), labels)
        real_mean, gan_mean = float(np.mean(list(real.values()))), float(np.mean(list(rendered.values())))
        consistency = {
            "cases": len(labels),
            "real": real,
            "inpainted": rendered,
            "ratio": gan_mean / real_mean if real_mean > 0 else None,
        }
    metrics = {
        "schema": SCHEMA,
        "kind": "inpainting",
        "run": str(run),
        "cases": len(crops),
        "crop": side,
        "note": note,
        "healthy": healthy,
        "healthy_gan_minus_fill": gaps,
        "lesion_label_consistency": consistency,
    }
    with staged_output(Path(out), "evaluation", force=force, inputs=[run, data]) as work:
        (work / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
        (work / "report.md").write_text(_report(metrics), encoding="utf-8")
        if shown:
            from ..viz import save_montage

            save_montage(shown, work / "inpainting.png")
    say(f"wrote {out}")
    return metrics


def _report(m: dict) -> str:
    h, gaps = m["healthy"], m["healthy_gan_minus_fill"]
    lines = [
        "# Inpainting evaluation",
        "",
        f"Run `{m['run']}`, {m['cases']} held-out crops of {m['crop']}^3." + (f" Note: {m['note']}." if m["note"] else ""),
        "",
        "## Healthy tissue (the BraTS inpainting task: masked SSIM, PSNR, MSE)",
        "",
        "| method | SSIM | PSNR (dB) | MSE |",
        "|---|---|---|---|",
    ]
    for method, title in (("gan", "generator"), ("fill", "trivial fill (floor)")):
        s = h[method]
        lines.append(
            f"| {title} | {s['ssim']['mean']:.4f} +- {s['ssim']['sd']:.4f} | {s['psnr']['mean']:.2f} +- {s['psnr']['sd']:.2f} "
            f"| {s['mse']['mean']:.5f} +- {s['mse']['sd']:.5f} |"
        )
    lines += ["", "Generator better than the fill, paired per crop (MSE: fill minus generator), 95% bootstrap CI over crops:", ""]
    for k, g in gaps.items():
        lines.append(
            f"- {k.upper()}: {g['difference']:+.4f} [{g['ci95'][0]:+.4f}, {g['ci95'][1]:+.4f}], better in {g['better_in']} of {m['cases']}"
        )
    c = m["lesion_label_consistency"]
    if c is not None:
        real, gan = c["real"], c["inpainted"]
        lines += [
            "",
            "## Rendered lesions: label consistency",
            "",
            f"A segmenter trained on the training crops, on {c['cases']} held-out crops whose tumour was voided and rendered "
            "from its label map, against the same crops real (Dice per region).",
            "",
            "| | " + " | ".join(real) + " |",
            "|---|" + "---|" * len(real),
            "| real | " + " | ".join(f"{v:.3f}" for v in real.values()) + " |",
            "| inpainted | " + " | ".join(f"{v:.3f}" for v in gan.values()) + " |",
            "",
            "Ratio (inpainted / real, mean over regions): " + ("n/a" if c["ratio"] is None else f"{c['ratio']:.2f}"),
        ]
    lines += ["", "![real, voided, inpainted](inpainting.png)", ""]
    return "\n".join(lines)
