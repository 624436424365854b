"""The report of a bench over several phantom cohorts: per cohort, pooled, and a forest plot on top.

Per cohort, each arm's paired difference against ``real`` with its CI over test cases and its CI
over seeds and cases (as in a one-cohort report); pooled, the mean of the cohorts' differences
with a 95% CI that resamples cohorts, then seeds, then cases
(:func:`segbench.stats.bootstrap_ci_hierarchical`). An effect is called only when the pooled
interval excludes 0.
"""

from __future__ import annotations

import json
from pathlib import Path

from augment3d.io.atomic import atomic_write_bytes, atomic_write_text
from augment3d.errors import DataError

from .cohorts import cohort_folder, folder_cohorts
from .config import bench_config
from .report import HEAD_TO_HEAD, MIN_CASES, REPORT_SCHEMA, arm_flags, finite_json, load_results, png_bytes, write_report
from .stats import MEAN, PooledComparison, arm_summary, paired_comparison, pooled_comparison

__all__ = ["build_pooled_report", "write_pooled_report"]


def _sites(results: dict[str, dict[str, list[dict]]], headline: str) -> list[str | None]:
    """The headline site first, then the other sites, then all test cases together."""
    found = sorted(
        {
            row["site"]
            for by_arm in results.values()
            for rs in by_arm.values()
            for r in rs
            for row in r["cases"]
            if row.get("site")
        },
        key=lambda s: (s != headline, s),
    )
    return [*found, None]


def _name(site) -> str:
    return "all" if site is None else site


def _verdict(pooled: PooledComparison, cohorts: int) -> str:
    ci = pooled.ci95_cohorts_seeds_and_cases
    if ci is None or min(pooled.cases, default=0) < MIN_CASES:
        return "too few cohorts, seeds or test cases for a pooled verdict"
    if ci[0] <= 0 <= ci[1]:
        verdict = "no clear effect over cohorts, seeds and test cases (the pooled 95% CI includes 0)"
    else:
        verdict = "helped" if ci[0] > 0 else "hurt"
    if cohorts < 5:
        verdict += f"; with {cohorts} cohort(s) the interval over cohorts is rough"
    return verdict


def build_pooled_report(folder: str | Path) -> dict:
    """Merge the finished jobs of every cohort of a pooled bench folder."""
    from augment3d.config.recipe import load_recipe

    folder = Path(folder)
    cohorts = folder_cohorts(folder)
    if not cohorts:
        raise DataError(folder, "is not a bench over several cohorts (its bench.json lists none)")
    recipe = load_recipe(folder / "recipe.toml")
    config = bench_config(recipe)
    recipe_name = json.loads((folder / "bench.json").read_text(encoding="utf-8")).get("recipe", recipe.name)
    results, missing = {}, []
    for c in cohorts:
        found = load_results(cohort_folder(folder, c)) if (cohort_folder(folder, c) / "arms").is_dir() else {}
        missing += [
            f"cohort {c} {a} seed {s}"
            for a in config.arms
            for s in config.seeds
            if s not in {r["seed"] for r in found.get(a, [])}
        ]
        if "real" in found:
            results[str(c)] = found
    if not results:
        raise DataError(folder, "no cohort has a finished 'real' job yet: nothing to compare against")
    arms = [a for a in config.arms if a != "real" and any(a in by_arm for by_arm in results.values())]
    per_cohort, pooled, real, head_to_head = {}, {}, {}, {}
    for site in _sites(results, config.headline_site):
        name = _name(site)
        per_cohort[name] = {
            a: {
                c: paired_comparison(by_arm[a], by_arm["real"], "dice", MEAN, site, config.bootstrap)
                for c, by_arm in results.items()
                if a in by_arm
            }
            for a in arms
        }
        pooled[name] = {
            a: pooled_comparison(
                {c: (by_arm[a], by_arm["real"]) for c, by_arm in results.items() if a in by_arm},
                "dice",
                MEAN,
                site,
                config.bootstrap,
            )
            for a in arms
        }
        real[name] = {c: arm_summary(by_arm["real"], "dice", MEAN, site, config.bootstrap) for c, by_arm in results.items()}
        # the generators against copy-paste with the same donors and ratio, paired per case, pooled the same way
        head_to_head[name] = {
            f"{a} vs {b}": pooled_comparison(
                {c: (by_arm[a], by_arm[b]) for c, by_arm in results.items() if a in by_arm and b in by_arm},
                "dice",
                MEAN,
                site,
                config.bootstrap,
            )
            for a, b in HEAD_TO_HEAD
            if any(a in by_arm and b in by_arm for by_arm in results.values())
        }
    report = {
        "schema": REPORT_SCHEMA,
        "recipe": recipe_name,
        "cohorts": cohorts,
        "cohorts_with_results": list(results),
        "finished": {c: {a: sorted(r["seed"] for r in rs) for a, rs in by_arm.items()} for c, by_arm in results.items()},
        "missing": missing,
        "headline_site": config.headline_site,
        "pooled": pooled,
        "per_cohort": per_cohort,
        "real": real,
        "head_to_head": {site: pairs for site, pairs in head_to_head.items() if pairs},
        "flags": {c: arm_flags(by_arm) for c, by_arm in results.items()},
    }
    report["answer"] = _answer(report)
    return report


def _answer(report: dict) -> str:
    site = report["headline_site"] if report["headline_site"] in report["pooled"] else "all"
    lines = []
    for arm, p in report["pooled"][site].items():
        ci = p.ci95_cohorts_seeds_and_cases
        interval = "no interval" if ci is None else f"95% CI over cohorts, seeds and cases [{ci[0]:+.3f}, {ci[1]:+.3f}]"
        per = ", ".join(f"cohort {c} {d:+.3f}" for c, d in p.per_cohort.items())
        lines.append(
            f"{arm} vs real on the {site} test cases, pooled over {p.cohorts} cohort(s) "
            f"({per}): mean Dice {p.difference:+.3f}, {interval}: {_verdict(p, p.cohorts)}."
        )
    return " ".join(lines) if lines else "No arm besides real has finished yet."


def _markdown(report: dict) -> str:
    out = [
        f"# segbench report ({report['recipe']}, {len(report['cohorts'])} phantom cohorts)",
        "",
        f"**Did it help?** {report['answer']}",
        "",
        "![Forest plot](forest.png)",
        "",
        "Each cohort is the whole protocol with its own phantom cohort, split, GAN and segmentation seeds "
        "(cohort C: `[phantom] seed`, `[bench] split_seed` and `[train] seed` = C). Per cohort: the paired "
        "difference against `real` (each test case averaged over seeds), its 95% CI over test cases and its "
        "95% CI over seeds and cases. Pooled: the mean of the cohorts' differences, its 95% CI resampling "
        "cohorts, then seeds, then cases.",
        "",
    ]
    if report["missing"]:
        out += [f"Jobs not finished yet: {', '.join(report['missing'])}.", ""]
    for name in report["pooled"]:
        out += [
            f"## {name} test cases",
            "",
            "| cohort | arm | cases | difference | 95% CI over cases | per seed | 95% CI over seeds and cases |",
            "|---|---|---|---|---|---|---|",
        ]
        for arm, by_cohort in report["per_cohort"][name].items():
            for c, d in by_cohort.items():
                wider = d.ci95_seeds_and_cases
                out.append(
                    f"| {c} | {arm} | {d.cases} | {d.difference:+.3f} | [{d.ci95[0]:+.3f}, {d.ci95[1]:+.3f}] "
                    f"| {', '.join(f'{v:+.3f}' for v in d.per_seed.values())} | "
                    + ("-" if wider is None else f"[{wider[0]:+.3f}, {wider[1]:+.3f}]")
                    + " |"
                )
            p = report["pooled"][name][arm]
            ci = p.ci95_cohorts_seeds_and_cases
            out.append(
                f"| **pooled** | {arm} | {sum(p.cases)} | **{p.difference:+.3f}** | | | "
                + ("-" if ci is None else f"**[{ci[0]:+.3f}, {ci[1]:+.3f}]** (over cohorts too)")
                + " |"
            )
        out += [
            "",
            "`real`'s mean Dice per cohort (mean over cases, and its spread over seeds):",
            "",
            "| cohort | mean Dice [95% CI over cases] | over seeds: mean +- SD (seeds) |",
            "|---|---|---|",
        ]
        for c, s in report["real"][name].items():
            out.append(
                f"| {c} | {s.mean:.3f} [{s.ci95[0]:.3f}, {s.ci95[1]:.3f}] | {s.seed_mean:.3f} +- {s.seed_std:.3f} ({s.seeds}) |"
            )
        out.append("")
    if report.get("head_to_head"):
        out += [
            "## The generators against copy-paste",
            "",
            "Paired per test case, the same way as against `real`: positive means the first arm scored higher.",
            "",
            "| site | pair | per cohort | pooled difference | 95% CI over cohorts, seeds and cases |",
            "|---|---|---|---|---|",
        ]
        for name, pairs in report["head_to_head"].items():
            for pair, p in pairs.items():
                ci = p.ci95_cohorts_seeds_and_cases
                per = ", ".join(f"{c}: {d:+.3f}" for c, d in p.per_cohort.items())
                out.append(
                    f"| {name} | {pair} | {per} | {p.difference:+.3f} | "
                    + ("-" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]")
                    + " |"
                )
        out.append("")
    out += ["## Training: plateaus and caps", ""]
    for c, flags in report["flags"].items():
        out += [f"- cohort {c}: {line}" for line in flags] or [f"- cohort {c}: every job trained to its plateau"]
    out += [
        "",
        "![Validation Dice per cohort](learning_curves.png)",
        "",
        "Each cohort's own report: "
        + ", ".join(f"[cohort {c}](cohort-{c}/report.md)" for c in report["cohorts_with_results"])
        + ".",
        "",
    ]
    return "\n".join(out)


def _interval(ax, value: float, ci, row: float, marker: str, color: str, **style) -> None:
    """A point with its 95% interval (a point alone where there is none)."""
    if ci is None or value is None:
        ax.plot(value, row, marker, color=color, **{k: v for k, v in style.items() if k in ("label", "markersize")})
        return
    ax.errorbar(value, row, xerr=[[value - ci[0]], [ci[1] - value]], fmt=marker, color=color, **{"capsize": 3, **style})


def _forest(report: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    site = report["headline_site"] if report["headline_site"] in report["pooled"] else "all"
    arms = list(report["pooled"][site])
    cohorts = report["cohorts_with_results"]
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.45 * (len(cohorts) + 1) * max(1, len(arms))))
    labels: list[str] = []
    ticks: list[float] = []
    for k, arm in enumerate(arms):
        offset = (k - (len(arms) - 1) / 2) * 0.25
        for row, c in enumerate(cohorts):
            d = report["per_cohort"][site][arm].get(c)
            if d is not None:
                _interval(ax, d.difference, d.ci95_seeds_and_cases or d.ci95, row + offset, "s", f"C{k}")
        p = report["pooled"][site][arm]
        _interval(
            ax,
            p.difference,
            p.ci95_cohorts_seeds_and_cases,
            len(cohorts) + 0.3 + offset,
            "D",
            f"C{k}",
            label=arm,
            markersize=8,
            capsize=4,
            elinewidth=2.5,
        )
    for row, c in enumerate(cohorts):
        labels.append(f"cohort {c}")
        ticks.append(row)
    labels.append("pooled")
    ticks.append(len(cohorts) + 0.3)
    ax.axvline(0, color="0.3", linewidth=1)
    ax.set_yticks(ticks, labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"mean Dice difference vs real, {site} test cases (95% CI)")
    ax.set_title("per cohort: CI over seeds and cases; pooled: over cohorts, seeds and cases", fontsize=8)
    if ax.get_legend_handles_labels()[0]:  # no arm has a pooled interval yet (too few cohorts with results): no legend
        ax.legend(fontsize=7, loc="best")
    return png_bytes(fig)


def _curves(folder: Path, report: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cohorts = report["cohorts_with_results"]
    fig, axes = plt.subplots(1, len(cohorts), figsize=(4.2 * len(cohorts), 3.2), squeeze=False, sharey=True)
    for ax, c in zip(axes[0], cohorts):
        results = load_results(cohort_folder(folder, int(c)))
        for k, (arm, rs) in enumerate(results.items()):
            for j, r in enumerate(rs):
                ax.plot(
                    [p["step"] for p in r["curve"]],
                    [p["val_dice"] for p in r["curve"]],
                    color=f"C{k}",
                    label=arm if j == 0 else None,
                    linewidth=1,
                )
        ax.set_title(f"cohort {c}")
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("validation Dice")
    axes[0][-1].legend(fontsize=7)
    return png_bytes(fig)


def write_pooled_report(folder: str | Path) -> dict:
    """Each cohort's own report (where its ``real`` jobs finished), then the pooled report.json,
    report.md, forest.png and learning_curves.png."""
    folder = Path(folder)
    for c in folder_cohorts(folder) or []:
        sub = cohort_folder(folder, c)
        if (sub / "arms" / "real").is_dir() and any((sub / "arms" / "real").glob("seed*/result.json")):
            write_report(sub)
    report = build_pooled_report(folder)
    atomic_write_bytes(folder / "forest.png", _forest(report))
    atomic_write_bytes(folder / "learning_curves.png", _curves(folder, report))
    atomic_write_text(folder / "report.json", json.dumps(finite_json(report), indent=1) + "\n")
    atomic_write_text(folder / "report.md", _markdown(report))
    return report
