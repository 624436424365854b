"""Merge whatever jobs finished into ``report.json``, ``report.md`` and PNGs; the Markdown opens with the answer."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from augment3d.io.atomic import atomic_write_bytes, atomic_write_text
from augment3d.errors import DataError
from augment3d.metrics.regions import REGIONS
from augment3d.io.run_files import GENERATOR

from .config import bench_config
from .plateau import PLATEAU_GAIN, last_quarter_gain
from .stats import MEAN, Comparison, arm_summary, paired_comparison
from .metrics import LESION_RULES
from .train import RESULT

__all__ = ["load_results", "build_report", "write_report", "arm_flags", "png_bytes", "finite_json", "MIN_CASES", "REPORT_SCHEMA"]

#: the version of report.json's layout (a cohort's and the pooled one); 0: written before it was recorded
REPORT_SCHEMA = 1

METRICS = ("dice", "hd95", "lesion_dice", "lesion_hd95")
SCORED = (*REGIONS, MEAN)


#: arm pairs compared head to head when both ran (the generators against copy-paste, with the same donors
#: and as many added tumours)
HEAD_TO_HEAD = (
    ("real+synthetic", "real+paste"),
    ("real+classic+synthetic", "real+classic+paste"),
    ("real+inpaint", "real+paste"),
    ("real+classic+inpaint", "real+classic+paste"),
)


def load_results(folder: Path) -> dict[str, list[dict]]:
    """arm -> finished results (one per seed); damaged result files are reported, not merged. The
    lesion-wise scores of a job scored under other rules than today's (``LESION_RULES``) are NaN
    (shown as "-"), so that they are never compared with today's; the job keeps its other scores."""
    out: dict[str, list[dict]] = {}
    for path in sorted(Path(folder).glob(f"arms/*/seed*/{RESULT}")):
        try:
            result = json.loads(path.read_text())
            out.setdefault(result["arm"], []).append(result)
            if result.get("lesion_rules") != LESION_RULES:
                for row in result["cases"]:
                    for scores in row["scores"].values():
                        scores.update(lesion_dice=float("nan"), lesion_hd95=float("nan"))
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            raise DataError(path, f"damaged job result ({exc}); delete it to re-run that job") from None
    return out


def _older_lesion_rules(results: dict[str, list[dict]]) -> list[str]:
    return [f"{a} seed {r['seed']}" for a, rs in results.items() for r in rs if r.get("lesion_rules") != LESION_RULES]


def _sites(results: dict[str, list[dict]]) -> list[str | None]:
    found = sorted({row.get("site") for rs in results.values() for r in rs for row in r["cases"] if row.get("site")})
    return [None, *found]


def _name(site) -> str:
    return "all" if site is None else site


def _site_grades(results: dict[str, list[dict]]) -> list[tuple[str, str]]:
    """The (site, grade) pairs of the test cases, when they come in more than one grade."""
    found = sorted(
        {
            (row["site"], row["grade"])
            for rs in results.values()
            for r in rs
            for row in r["cases"]
            if row.get("site") and row.get("grade")
        }
    )
    return found if len({grade for _, grade in found}) > 1 else []


def build_report(folder: Path, results: dict[str, list[dict]] | None = None) -> dict:
    """The merged report of a bench folder (``results`` from :func:`load_results`, read when not given)."""
    from augment3d.config.recipe import load_recipe

    folder = Path(folder)
    recipe = load_recipe(folder / "recipe.toml")
    name = (
        json.loads((folder / "bench.json").read_text()).get("recipe", recipe.name)
        if (folder / "bench.json").is_file()
        else recipe.name
    )
    config = bench_config(recipe)
    results = load_results(folder) if results is None else results
    if "real" not in results:
        raise DataError(folder, "no finished 'real' job yet: nothing to compare against")
    arms = [a for a in config.arms if a in results]
    sites = _sites(results)
    summary = {
        _name(s): {a: {r: {m: arm_summary(results[a], m, r, s, config.bootstrap) for m in METRICS} for r in SCORED} for a in arms}
        for s in sites
    }
    comparisons = {
        _name(s): {
            a: {
                r: {m: paired_comparison(results[a], results["real"], m, r, s, config.bootstrap) for m in ("dice", "lesion_dice")}
                for r in SCORED
            }
            for a in arms
            if a != "real"
        }
        for s in sites
    }
    # where a gain or cost comes from: a grade without enhancing tumour scores ET 1 or 0 per case
    by_grade = {
        f"{site} {grade}": {
            a: {
                r: paired_comparison(results[a], results["real"], "dice", r, {"site": site, "grade": grade}, config.bootstrap)
                for r in SCORED
            }
            for a in arms
            if a != "real"
        }
        for site, grade in _site_grades(results)
    }
    # the generators against the cheap alternative, paired per case: synthetic or inpaint vs paste with the same donors and ratio
    head_to_head = {
        _name(s): {
            f"{a} vs {b}": paired_comparison(results[a], results[b], "dice", MEAN, s, config.bootstrap)
            for a, b in HEAD_TO_HEAD
            if a in results and b in results
        }
        for s in sites
    }
    gan = _gan_metrics(folder)
    report = {
        "schema": REPORT_SCHEMA,
        "recipe": name,
        "finished": {a: sorted(r["seed"] for r in results[a]) for a in arms},
        "missing": [
            f"{a} seed {s}" for a in config.arms for s in config.seeds if s not in {r["seed"] for r in results.get(a, [])}
        ],
        "headline_site": config.headline_site,
        "summary": summary,
        "vs_real": comparisons,
        "vs_real_by_grade": by_grade,
        "head_to_head": {site: pairs for site, pairs in head_to_head.items() if pairs},
        "gan": gan,
        "seconds": {a: [round(r["seconds"], 1) for r in results[a]] for a in arms},
        "generator_mode": _generator_mode(folder),
        "synthetic": config.synthetic,
        "real_plateau": plateau(results["real"]),
        "flags": arm_flags({a: results[a] for a in arms}),
        "validation": sorted({r.get("validation", "") for rs in results.values() for r in rs}),
        "lesion_rules_older": _older_lesion_rules(results),
    }
    report["answer"] = _answer(report, config)
    return report


def _synthetic_kind(mode: str, synthetic: str) -> str:
    """What the synthetic arms train on, in words, by generator mode and ``[bench] synthetic``."""
    if mode != "labels":
        return "joint generation (images and labels from noise)"
    if synthetic == "cohort":
        return (
            "labels to images, a fixed synthetic cohort (the GAN's training label maps deformed by each seed, "
            "images rendered from them; labels exact)"
        )
    return "labels to images (real label maps restyled, labels exact)"


def _generator_mode(folder: Path) -> str | None:
    """``labels`` or ``joint``: how the synthetic arms' generator makes subjects (None without one)."""
    bench = json.loads((folder / "bench.json").read_text()) if (folder / "bench.json").is_file() else {}
    run = Path(bench["generator"]) if bench.get("generator") else folder / "gan"
    try:
        model = json.loads((run / f"{GENERATOR}.json").read_text())["model"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return model.get("mode", "joint")


def _job_plateau(result: dict) -> tuple[bool, str]:
    """Whether one job was trained to its plateau, and how that was judged, in words."""
    stop = result.get("stop") or {}
    if stop.get("reason") == "plateau":
        return True, f"stopped on its plateau at step {stop['step']}"
    if stop.get("reason") == "cap":
        return False, f"hit the cap of {result['steps']} steps before its plateau"
    gain = last_quarter_gain(result["curve"], result["steps"])
    if gain is None:
        return False, "too few validations to judge"
    return gain < PLATEAU_GAIN, f"validation Dice gained {gain:+.3f} in the last quarter"


def plateau(results: list[dict]) -> dict:
    """Per seed of an arm: whether it was trained to a plateau (a gain over an undertrained baseline
    is no gain). A job run with a patience rule says so itself (stopped on its plateau, or hit the
    cap); a fixed-budget job counts when its best validation Dice of the last quarter of training
    beats the best before it by less than :data:`PLATEAU_GAIN`."""
    judged = {str(r["seed"]): _job_plateau(r) for r in results}
    gains = {str(r["seed"]): last_quarter_gain(r["curve"], r["steps"]) for r in results}
    return {
        "gain_last_quarter": gains,
        "per_seed": {s: how for s, (_, how) in judged.items()},
        "reached": bool(judged) and all(ok for ok, _ in judged.values()),
    }


def arm_flags(results: dict[str, list[dict]]) -> list[str]:
    """One line per job that was not trained to its plateau (hit the cap, or still rising)."""
    return [
        f"{arm} seed {r['seed']}: {how}"
        for arm, rs in results.items()
        for r in sorted(rs, key=lambda r: r["seed"])
        for ok, how in [_job_plateau(r)]
        if not ok
    ]


def _gan_metrics(folder: Path) -> dict | None:
    """The GAN figures the bench report shows, read from ``gan_eval/metrics.json`` (any schema) through
    :class:`augment3d.metrics.results.Evaluation`; a family an older evaluation lacks is left out."""
    from augment3d.metrics.results import Evaluation

    path = folder / "gan_eval" / "metrics.json"
    if not path.is_file():
        return None
    m = Evaluation.read(path)
    lc = m.label_consistency
    pick = {
        "fid_synthetic_vs_train": m.fid.synthetic_vs_train,
        "fid_floor_held_out_vs_train": m.fid.floor_held_out_vs_train,
        "ssim_to_nearest_held_out": m.ssim_to_nearest_held_out.mean,
        "mse_to_nearest_held_out": m.mse_to_nearest_held_out.mean,
        "memorised_share": m.memorisation["share_flagged"],
        "label_consistency_dice_synthetic": lc.synthetic,
        "label_consistency_dice_real": lc.reference_held_out_real,
        "share_with_tumour_synthetic": m.share_with_tumour.synthetic,
        "share_with_tumour_real": m.share_with_tumour.real,
        "ssim_reference_held_out_to_train": m.reference_ssim.mean,
    }
    for column, fidelity in m.condition_fidelity.items():
        if fidelity.synthetic_accuracy is None:  # one category among the real subjects: no classifier
            continue
        pick[f"condition_accuracy_{column}"] = {
            "synthetic": fidelity.synthetic_accuracy,
            "real": fidelity.real_accuracy_cross_validated,
        }
        pick[f"generated_recognised_{column}"] = fidelity.synthetic_accuracy_by_category
        if fidelity.synthetic_n_by_category is not None:
            pick[f"generated_n_{column}"] = fidelity.synthetic_n_by_category
        if fidelity.real_accuracy_cross_validated_by_category is not None:
            pick[f"real_recognised_{column}"] = fidelity.real_accuracy_cross_validated_by_category
    for column, restyle in m.restyle_fidelity.items():
        pick[f"restyled_recognised_{column}"] = restyle.by_target_category
        if restyle.perfect_restyle_by_target_category is not None:
            pick[f"perfect_restyle_recognised_{column}"] = restyle.perfect_restyle_by_target_category
    if lc.ratio_to_real is not None:
        pick["label_consistency_wt_ratio_to_real"] = lc.ratio_to_real
    if m.tumour_at_head_edge is not None:
        pick["tumour_at_head_edge"] = {"synthetic": m.tumour_at_head_edge.synthetic, "real": m.tumour_at_head_edge.real}
    if m.diversity.synthetic is not None:
        pick["ms_ssim_synthetic"], pick["ms_ssim_real"] = m.diversity.synthetic, m.diversity.real_train
    return pick


MIN_CASES = 5  # fewer paired test cases than this get no verdict, whatever the interval says


def _verdict(comparison: Comparison) -> str:
    """From the CI over test cases and, where there are 2+ seeds, the one over seeds and cases:
    an effect counts only when both intervals exclude 0."""
    (low, high), cases = comparison.ci95, comparison.cases
    wider = comparison.ci95_seeds_and_cases
    if cases < MIN_CASES:
        return f"too few test cases for a verdict (fewer than {MIN_CASES})"
    if low <= 0 <= high:
        return "no clear effect (the 95% CI includes 0)"
    if wider is not None and wider[0] <= 0 <= wider[1]:
        return (
            f"{'helped' if low > 0 else 'hurt'} on these seeds, but not beyond the training seeds' own variation "
            "(the CI over seeds and cases includes 0)"
        )
    return "helped" if low > 0 else "hurt"


def _seed_columns(comparison: Comparison) -> tuple[str, str] | None:
    """The per-seed differences and the CI over seeds and cases as text; None with fewer than 2 seeds."""
    wider = comparison.ci95_seeds_and_cases
    if wider is None:
        return None
    return (", ".join(f"{v:+.3f}" for v in comparison.per_seed.values()), f"[{wider[0]:+.3f}, {wider[1]:+.3f}]")


def _seed_spread(comparison: Comparison) -> str:
    """' (over seeds and cases [lo, hi]; per seed a, b, c)' where there are 2+ seeds, else ''."""
    columns = _seed_columns(comparison)
    return "" if columns is None else f" (over seeds and cases {columns[1]}; per seed {columns[0]})"


def _answer(report: dict, config) -> str:
    site = config.headline_site if config.headline_site in report["vs_real"] else "all"
    lines = []
    for arm in ("real+synthetic", "real+classic+synthetic", "real+inpaint", "real+classic+inpaint"):
        c = report["vs_real"][site].get(arm)
        if c is None:
            continue
        d = c[MEAN]["dice"]
        p = "n/a" if d.wilcoxon_p is None else f"{d.wilcoxon_p:.3g}"
        lines.append(
            f"{arm} vs real on the {site} test cases (n={d.cases}, {len(report['finished'][arm])} seed(s)): "
            f"mean Dice (WT/TC/ET) {d.difference:+.3f}, 95% CI [{d.ci95[0]:+.3f}, {d.ci95[1]:+.3f}]"
            f"{_seed_spread(d)}, Wilcoxon p={p}: {_verdict(d)}."
        )
    if not lines:
        return "No synthetic arm has finished yet."
    return " ".join(lines)


def _diagnosis(gan: dict) -> list[str]:
    """Plain-language flags from the GAN metrics, so a reader sees why synthetic data did or did not help."""
    lines = []
    syn, real = gan["share_with_tumour_synthetic"], gan["share_with_tumour_real"]
    if syn < 0.5 * real:
        lines.append(
            f"only {syn:.0%} of synthetic subjects carry a tumour label (real held-out: {real:.0%}): "
            "replacing real subjects with them teaches the segmenter that tumours are rare or absent"
        )
    floor = gan["fid_floor_held_out_vs_train"]
    ratio = gan["fid_synthetic_vs_train"] / max(floor, 1e-12)
    lines.append(
        f"FID {gan['fid_synthetic_vs_train']:.3g} is {ratio:.0f}x the real-vs-real floor ({floor:.3g})"
        + ("; the images are far from the real distribution" if ratio > 5 else "")
    )
    ssim, reference = gan["ssim_to_nearest_held_out"], gan["ssim_reference_held_out_to_train"]
    lines.append(
        f"SSIM to the nearest held-out case {ssim:.2f} against {reference:.2f} between real cases"
        + ("; anatomy is not reproduced" if ssim < 0.8 * reference else "")
    )
    for key, value in gan.items():
        if key.startswith("condition_accuracy_") and value["real"] and value["synthetic"] < 0.75 * value["real"]:
            lines.append(
                f"a classifier trained on real data recognises the {key.removeprefix('condition_accuracy_')} of "
                f"{value['synthetic']:.0%} of synthetic subjects (real: {value['real']:.0%}): the conditioning "
                "does not show in the images"
            )
        if key.startswith("generated_recognised_"):
            column = key.removeprefix("generated_recognised_")
            real, counts = gan.get(f"real_recognised_{column}", {}), gan.get(f"generated_n_{column}", {})
            for category, share in value.items():
                if real.get(category) and share < 0.75 * real[category]:
                    n = f", n={counts[category]}" if category in counts else ""
                    lines.append(
                        f"generated {category} subjects read as {category} {share:.0%} of the time{n} "
                        f"(real {category}: {real[category]:.0%})"
                    )
    for category, perfect in gan.get("perfect_restyle_recognised_site", {}).items():
        restyled = gan.get("restyled_recognised_site", {}).get(category)
        if restyled is not None and restyled < 0.75 * perfect:
            lines.append(
                f"training subjects restyled into {category} read as {category} {restyled:.0%} of the time, a "
                f"perfect restyle {perfect:.0%}: the restyled subjects do not yet look like {category}"
            )
    edge = gan.get("tumour_at_head_edge")
    if edge and edge["synthetic"] is not None and edge["real"] is not None and edge["synthetic"] > max(2 * edge["real"], 0.15):
        lines.append(
            f"{edge['synthetic']:.0%} of the synthetic tumour voxels lie at the head's edge (real: {edge['real']:.0%}): "
            "labels along the skull teach the segmenter tumour where there is none"
        )
    if gan["memorised_share"] > 0:
        lines.append(f"{gan['memorised_share']:.0%} of synthetic subjects are flagged as near-copies of training cases")
    return lines


def _signed_ci(d: Comparison) -> str:
    """``+0.012 [-0.003, +0.027]``, or "-" where there is no figure (e.g. scores left out)."""
    if d.difference is None or np.isnan(d.difference):
        return "-"
    return f"{d.difference:+.3f} [{d.ci95[0]:+.3f}, {d.ci95[1]:+.3f}]"


def _fmt(x, digits: int = 3) -> str:
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def _markdown(report: dict) -> str:
    out = [
        f"# segbench report ({report['recipe']})",
        "",
        f"**Did synthetic data help?** {report['answer']}",
        "",
        "One cohort: these intervals count the training seeds and the test cases, not how another cohort "
        "(other subjects, another split, another GAN) would answer; `[bench] cohorts` replicates the bench "
        "over phantom cohorts (docs/BENCH.md).",
        "",
    ]
    mode = report.get("generator_mode")
    if mode:
        out += [f"Synthetic subjects: {_synthetic_kind(mode, report.get('synthetic', 'augmenter'))}.", ""]
    flat = report.get("real_plateau")
    if flat:
        how = flat.get("per_seed") or {
            s: f"validation Dice gained {_fmt(g)} in the last quarter" for s, g in flat["gain_last_quarter"].items()
        }
        out += [
            f"The `real` arm {'reached' if flat['reached'] else 'did NOT reach'} its plateau ("
            + "; ".join(f"seed {s}: {h}" for s, h in how.items())
            + f"; a fixed budget counts as a plateau when "
            f"the last quarter gains less than {PLATEAU_GAIN}).",
            "",
        ]
    if report.get("flags"):
        out += ["Jobs not trained to their plateau: " + "; ".join(report["flags"]) + ".", ""]
    if report["missing"]:
        out += [f"Jobs not finished yet (merge again with `augment3d bench-report`): {', '.join(report['missing'])}.", ""]
    out += [
        "## Test Dice per arm",
        "",
        "Mean over test cases (each case averaged over seeds), bootstrap 95% CI in brackets; "
        "HD95 and lesion-wise HD95 in mm (a miss scores 374).",
        "",
    ]
    older = report.get("lesion_rules_older") or []
    if older:
        out += [
            f"Lesion-wise scores of {len(older)} job(s) were made under rules older than the BraTS-2023 scorer's "
            f'({", ".join(older[:4])}{", ..." if len(older) > 4 else ""}): left out ("-"), and so is every '
            "lesion-wise comparison with them; rerun those jobs to have them.",
            "",
        ]
    out += [
        "| site | arm | WT | TC | ET | mean Dice | lesion-wise Dice | HD95 | lesion-wise HD95 | seeds (mean +- std) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for site, arms in report["summary"].items():
        for arm, regions in arms.items():
            cells = [
                f"{_fmt(regions[r]['dice'].mean)} [{_fmt(regions[r]['dice'].ci95[0], 2)}, {_fmt(regions[r]['dice'].ci95[1], 2)}]"
                for r in SCORED
            ]
            m = regions[MEAN]
            out.append(
                f"| {site} (n={m['dice'].cases}) | {arm} | {' | '.join(cells)} | {_fmt(m['lesion_dice'].mean)} | "
                f"{_fmt(m['hd95'].mean, 1)} | {_fmt(m['lesion_hd95'].mean, 1)} | "
                f"{_fmt(m['dice'].seed_mean)} +- {_fmt(m['dice'].seed_std)} ({m['dice'].seeds}) |"
            )
    out += [
        "",
        "## Paired differences against `real`",
        "",
        "Per test case, arm minus `real` (averaged over the seeds both finished); bootstrap 95% CI over test "
        "cases, two-sided Wilcoxon signed-rank p (n/a: fewer than 2 cases or all differences 0). The mean "
        "difference per training seed and a 95% CI that resamples seeds, then cases, show how much of it the "
        "seeds' own variation could make.",
        "",
        "| site | arm | WT | TC | ET | mean Dice [95% CI] | Wilcoxon p | per seed | 95% CI over seeds and cases "
        "| lesion-wise mean Dice [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for site, arms in report["vs_real"].items():
        for arm, regions in arms.items():
            d, lw = regions[MEAN]["dice"], regions[MEAN]["lesion_dice"]
            p = "n/a" if d.wilcoxon_p is None else f"{d.wilcoxon_p:.3g}"
            per_region = " | ".join(f"{regions[r]['dice'].difference:+.3f}" for r in REGIONS)
            per_seed, wider = _seed_columns(d) or ("-", "-")
            out.append(
                f"| {site} (n={d.cases}) | {arm} | {per_region} | {d.difference:+.3f} "
                f"[{d.ci95[0]:+.3f}, {d.ci95[1]:+.3f}] | {p} | {per_seed} | {wider} | {_signed_ci(lw)} |"
            )
    if report.get("head_to_head"):
        out += [
            "",
            "### The generators against copy-paste",
            "",
            "Per test case, the synthetic (or inpaint) arm minus the paste arm with the same donors and as many "
            "added subjects (mean Dice; CIs as above).",
            "",
            "| site | comparison | difference [95% CI over cases] | Wilcoxon p | per seed | 95% CI over seeds and cases |",
            "|---|---|---|---|---|---|",
        ]
        for site, pairs in report["head_to_head"].items():
            for pair, d in pairs.items():
                p = "n/a" if d.wilcoxon_p is None else f"{d.wilcoxon_p:.3g}"
                per_seed, wider = _seed_columns(d) or ("-", "-")
                out.append(
                    f"| {site} (n={d.cases}) | {pair} | {d.difference:+.3f} [{d.ci95[0]:+.3f}, "
                    f"{d.ci95[1]:+.3f}] | {p} | {per_seed} | {wider} |"
                )
    if report.get("vs_real_by_grade"):
        out += [
            "",
            "### By site and grade",
            "",
            "The same differences (Dice) within each site and grade. A case without enhancing tumour (most "
            "LGG) scores ET 1 when the net predicts none and 0 when it predicts any, so an arm that makes "
            "the net call ET more readily pays there in whole points.",
            "",
            "| site, grade | arm | WT | TC | ET | mean Dice [95% CI] |",
            "|---|---|---|---|---|---|",
        ]
        for group, arms in report["vs_real_by_grade"].items():
            for arm, regions in arms.items():
                d = regions[MEAN]
                per_region = " | ".join(f"{regions[r].difference:+.3f}" for r in REGIONS)
                out.append(
                    f"| {group} (n={d.cases}) | {arm} | {per_region} | {d.difference:+.3f} [{d.ci95[0]:+.3f}, {d.ci95[1]:+.3f}] |"
                )
    gan = report["gan"]
    if gan:
        out += ["", "## The generator behind the synthetic arms (`gan_eval/report.md`)", "", "| metric | value |", "|---|---|"]
        out += [
            f"| {k.replace('_', ' ')} | {', '.join(f'{r} {_fmt(x)}' for r, x in v.items()) if isinstance(v, dict) else _fmt(v)} |"
            for k, v in gan.items()
        ]
        out += ["", "What these say about the synthetic subjects:", ""] + [f"- {line}" for line in _diagnosis(gan)]
    out += ["", "## Figures", "", "![Dice per arm](dice_by_arm.png)", "", "![Validation Dice](learning_curves.png)", ""]
    if gan:
        out += ["![Synthetic subjects](synthetic_samples.png)", ""]
    out += [
        f"Validation chose the best weights on: {', '.join(report['validation'])}. "
        f"Seconds per job: {json.dumps(report['seconds'])}.",
        "",
    ]
    return "\n".join(out)


def png_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _plots(folder: Path, report: dict, results: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    sites = list(report["summary"])
    fig, axes = plt.subplots(1, len(sites), figsize=(4.5 * len(sites), 3.4), squeeze=False, sharey=True)
    for ax, site in zip(axes[0], sites):
        arms = list(report["summary"][site])
        width = 0.8 / len(arms)
        for k, arm in enumerate(arms):
            s = report["summary"][site][arm]
            means = np.array([s[r]["dice"].mean for r in SCORED])
            ci = np.array([s[r]["dice"].ci95 for r in SCORED]).T
            ax.bar(np.arange(len(SCORED)) + k * width, means, width, yerr=np.abs(ci - means), capsize=2, label=arm)
        n = report["summary"][site]["real"][MEAN]["dice"].cases
        ax.set_xticks(np.arange(len(SCORED)) + 0.4 - width / 2, SCORED)
        ax.set_title(f"{site} test cases (n={n})")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("Dice (95% CI)")
    axes[0][-1].legend(fontsize=7)
    atomic_write_bytes(folder / "dice_by_arm.png", png_bytes(fig))

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for k, arm in enumerate(report["summary"]["all"]):
        for j, r in enumerate(results[arm]):
            ax.plot(
                [c["step"] for c in r["curve"]], [c["val_dice"] for c in r["curve"]], color=f"C{k}", label=arm if j == 0 else None
            )
    ax.set_xlabel("step")
    ax.set_ylabel("validation Dice (WT/TC/ET mean)")
    ax.legend(fontsize=7)
    atomic_write_bytes(folder / "learning_curves.png", png_bytes(fig))


def finite_json(value):
    """The report as strict JSON: its typed figures (``segbench.stats``) as objects, NaN (an empty site or
    arm) as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: finite_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def write_report(folder: str | Path) -> dict:
    """Merge finished jobs in a bench folder; writes report.json, report.md and the PNGs."""
    folder = Path(folder)
    if not (folder / "bench.json").is_file() or not (folder / "recipe.toml").is_file():
        raise DataError(
            folder, "is not a bench folder (no bench.json and recipe.toml); make one with augment3d bench --out FOLDER"
        )
    results = load_results(folder)
    report = build_report(folder, results)
    _plots(folder, report, results)
    atomic_write_text(folder / "report.json", json.dumps(finite_json(report), indent=1) + "\n")
    atomic_write_text(folder / "report.md", _markdown(report))
    return report
