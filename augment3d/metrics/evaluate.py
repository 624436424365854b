"""``augment3d evaluate``: every GAN metric of a run against real data, with N and references."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io.output_folders import claim_output, staged_output
from ..pretrained import run_folder
from ..io.run_files import SUBJECTS
from ..data.cohort import prepare_cohort
from . import settings
from .consistency import (
    accuracy_by_category,
    condition_classifiers,
    condition_fidelity,
    label_consistency,
    top_up_conditions,
    train_segmenter,
)
from .diversity import mean_pairwise_ms_ssim, prdc
from .features import extract, load_extractor
from .frechet import frechet_distance, kernel_distance
from .small_n import bootstrap_interval, distance_verdict
from .label_profile import label_profile, tumour_at_head_edge
from .memorisation import memorisation_audit
from .report import write_report
from .results import ConditionFidelity, Diversity, Distance, Evaluation, LabelConsistency, MeanStd, RestyleFidelity, Shares
from .restyle_reference import perfect_restyle
from .similarity import mse, nearest, pairwise, psnr, ssim

__all__ = ["evaluate_run", "split_for_evaluation"]


def split_for_evaluation(run: Path, cases, seed: int = 0):
    """Training cases (as recorded by the run) and held-out cases; a seeded half split when fewer than two
    cases are held out, or fewer than two were trained on."""
    listed = None
    record = run / SUBJECTS
    if record.is_file():
        listed = set(json.loads(record.read_text()).get("train", []))
    train = [c for c in cases if listed is None or c.subject_id in listed]
    held = [c for c in cases if listed is not None and c.subject_id not in listed]
    note = None
    if len(held) < 2 or len(train) < 2:
        unseen = len(held) >= 2
        order = np.random.default_rng(seed).permutation(len(cases))
        half = len(cases) // 2
        held, train = [cases[i] for i in order[:half]], [cases[i] for i in order[half:]]
        note = (
            "the run trained on every case given (or did not record its training cases): the references "
            "compare two seeded halves of the data, both seen in training"
            if not unseen
            else "the run trained on (almost) none of the cases given: the references compare two seeded "
            "halves of the data, neither seen in training"
        )
    if len(train) < 2 or len(held) < 2:
        raise ValueError("evaluation needs at least 4 real cases")
    return train, held, note


def _distances(f_train, f_syn, f_held, seed: int) -> tuple[Distance, Distance]:
    """FID and KID with their floors, bootstrap 95% intervals of both and a verdict in words."""
    n = min(len(f_syn), len(f_held))
    kid, kid_std = kernel_distance(f_train, f_syn, seed=seed)
    kid_floor, kid_floor_std = kernel_distance(f_train, f_held, seed=seed)
    plain = {
        "FID": Distance(
            frechet_distance(f_train, f_syn),
            frechet_distance(f_train, f_held),
            synthetic_vs_held_out=frechet_distance(f_held, f_syn),
        ),
        "KID": Distance(kid, kid_floor, synthetic_vs_train_std=kid_std, floor_std=kid_floor_std),
    }
    kid_draw = lambda a, b: kernel_distance(a, b, subsets=10, seed=seed)[0]  # noqa: E731  (a bootstrap draw needs few subsets)
    out = []
    for name, distance in (("FID", frechet_distance), ("KID", kid_draw)):
        block = plain[name]
        synthetic_ci = bootstrap_interval(distance, f_train, f_syn, seed=seed)
        floor_ci = bootstrap_interval(distance, f_train, f_held, seed=seed + 1)
        verdict = distance_verdict(name, block.synthetic_vs_train, synthetic_ci, block.floor_held_out_vs_train, floor_ci, n)
        out.append(
            replace(
                block, synthetic_ci95=(synthetic_ci[0], synthetic_ci[1]), floor_ci95=(floor_ci[0], floor_ci[1]), verdict=verdict
            )
        )
    return out[0], out[1]


def _restyle_fidelity(gen, train, extractor, classifiers: dict, seed: int) -> dict[str, RestyleFidelity]:
    """What the augmenter does: every real training subject's own label map rendered into each
    category of each condition column (the other columns kept), and how often the real-trained
    classifier then sees that category (per column and target category)."""
    labels = np.stack([c.label for c in train])
    masks = np.stack([(c.images > -1.0 + 1e-3).any(0) for c in train])
    out = {}
    for column, clf in classifiers.items():
        if clf is None:
            continue
        features, asked = [], []
        for value in gen.conditions[column]:
            targets = [{**c.conditions, column: value} for c in train]
            for key, members in _by_condition(targets).items():
                images, _ = gen.generate(
                    condition=dict(key), seeds=[seed + 100_000 + i for i in members], label_maps=(labels[members], masks[members])
                )
                features.append(extract(extractor, images))
                asked += [targets[i] for i in members]
        result = accuracy_by_category(clf, np.concatenate(features), asked, column)
        out[column] = RestyleFidelity(result["accuracy"], result["by_category"], len(asked))
    return out


def _by_condition(conditions: list[dict]) -> dict[tuple, list[int]]:
    """The indices of ``conditions`` per distinct condition (its sorted items), in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(conditions):
        groups.setdefault(tuple(sorted(c.items())), []).append(i)
    return groups


def _generate(gen, conditions: list[dict], first_seed: int, psi: float) -> tuple[np.ndarray, np.ndarray]:
    """Subject i of ``conditions`` generated with seed ``first_seed + i`` (one batch per condition)."""
    x = y = np.zeros(0)
    for key, members in _by_condition(conditions).items():
        images, labels = gen.generate(condition=dict(key) or None, seeds=[first_seed + i for i in members], psi=psi)
        if not x.size:
            x = np.zeros((len(conditions), *images.shape[1:]), np.float32)
            y = np.zeros((len(conditions), *labels.shape[1:]), np.uint8)
        x[members], y[members] = images, labels
    return x, y


def _stack(cases):
    return np.stack([c.images for c in cases]), np.stack([c.label for c in cases])


def evaluate_run(
    run: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n: int = 32,
    features: str = "fixed",
    weights=None,
    psi: float = 1.0,
    seed: int = 0,
    skip_bad: bool = False,
    force: bool = False,
    cache_dir=None,
    segmenter_steps: int = 150,
    per_category: int = 16,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Every GAN metric of ``run`` (a run folder or a bundled generator's name) against the real cohort
    ``data``, written to ``out`` (``metrics.json``, ``report.md``, PNGs) and returned.

    ``n`` synthetic subjects (seeds ``seed``.., conditions cycling through the training cases'),
    ``features``/``weights`` the feature extractor of FID/KID/PRDC, ``psi`` the truncation,
    ``segmenter_steps`` the label-consistency judge's training, ``per_category`` the synthetic
    subjects per condition category for condition fidelity; ``skip_bad``, ``cache_dir`` as for
    ``prepare_cohort``; ``force`` replaces an earlier evaluation folder; ``progress`` gets each stage.
    """
    from ..synthesis.sampling import check_conditions_match, load_generator

    say = progress or (lambda message: None)
    run = run_folder(run)  # a run folder, or a bundled generator by name
    gen = load_generator(run)
    if gen.inpaints:
        raise DataError(
            run,
            "is an inpainting generator: evaluate_run scores whole synthetic subjects; score an inpainting run "
            "with augment3d.metrics.inpaint_evaluate.evaluate_inpainting (what `augment3d evaluate` runs for it)",
        )
    config = gen.preprocess
    claim_output(out, "evaluation", force=force, inputs=[run, data])  # before the minutes of work, not after
    check_conditions_match(gen, data)
    say("preparing real data")
    cohort = prepare_cohort(data, config, list(gen.conditions), gen.conditions, skip_bad=skip_bad, cache_dir=cache_dir)
    train, held, note = split_for_evaluation(run, cohort.cases, seed)
    train_x, train_y = _stack(train)
    held_x, held_y = _stack(held)

    say(f"generating {n} synthetic subjects")
    conditions = [train[i % len(train)].conditions for i in range(n)]
    syn_x, syn_y = _generate(gen, conditions, seed, psi)

    say("features")
    extractor, extractor_name = load_extractor(features, weights)
    f_train, f_held, f_syn = extract(extractor, train_x), extract(extractor, held_x), extract(extractor, syn_x)
    say("FID and KID with bootstrap intervals")
    fid, kid = _distances(f_train, f_syn, f_held, seed)

    say("similarity to nearest real")
    s_syn = pairwise(syn_x, held_x, ssim)
    s_held_train = pairwise(held_x, train_x, ssim)
    best, idx = nearest(s_syn)
    s_ref, ref_idx = nearest(s_held_train)

    say("diversity and precision/recall")
    if min(gen.shape) > 16:
        div_syn, pairs_syn = mean_pairwise_ms_ssim(syn_x, max_pairs=100, seed=seed)
        div_real, pairs_real = mean_pairwise_ms_ssim(train_x, max_pairs=100, seed=seed)
        diversity = Diversity(div_syn, pairs_syn, div_real, pairs_real)
    else:
        diversity = Diversity(note=f"grid {gen.shape} too small for 3-scale MS-SSIM (needs sides > 16)")

    say("memorisation audit")
    audit = memorisation_audit(syn_x, train_x, held_x, pairwise(syn_x, train_x, ssim), s_held_train)

    say("label-image consistency (training a small segmenter on real data)")
    judge = train_segmenter(train_x, train_y, steps=segmenter_steps, seed=seed)
    reference = label_consistency(judge, held_x, held_y)
    # empty-vs-empty scores Dice 1, so say how many subjects have a tumour at all, and the whole
    # tumour's Dice over only those
    has_tumour = np.array([(y > 0).any() for y in syn_y], dtype=bool)
    with_tumour = label_consistency(judge, syn_x[has_tumour], syn_y[has_tumour])["WT"] if has_tumour.any() else None
    consistency = LabelConsistency(
        label_consistency(judge, syn_x, syn_y),
        reference,
        with_tumour,
        int(has_tumour.sum()),
        None if with_tumour is None or not reference["WT"] else with_tumour / reference["WT"],
    )
    profile = condition = restyle = None
    if gen.conditions:
        profile = {
            "synthetic": label_profile(syn_y, conditions),
            "real_train": label_profile(train_y, [c.conditions for c in train]),
        }
        # the site judge learns from every real subject: six scarce-site training cases alone make
        # a judge that misses a third of real held-out SSA (docs/METRICS.md)
        f_real, real_conditions = np.concatenate([f_train, f_held]), [c.conditions for c in [*train, *held]]
        classifiers = condition_classifiers(f_real, real_conditions)
        # the scarce categories topped up to `per_category` subjects (seeds after the first n)
        extra = top_up_conditions(conditions, [c.conditions for c in train], per_category)
        f_extra = extract(extractor, _generate(gen, extra, seed + n, psi)[0]) if extra else f_syn[:0]
        condition = {
            column: ConditionFidelity(**result)
            for column, result in condition_fidelity(
                f_real, real_conditions, np.concatenate([f_syn, f_extra]), conditions + extra, classifiers, seed
            ).items()
        }
        if gen.takes_labels:
            say("restyling the training maps into every category")
            restyle = _restyle_fidelity(gen, train, extractor, classifiers, seed)
            if "site" in restyle:  # a phantom cohort can show what a perfect restyle scores
                ceiling = perfect_restyle(data, train, config, gen.conditions, extractor, classifiers["site"])
                if ceiling is not None:
                    restyle["site"] = replace(restyle["site"], perfect_restyle_by_target_category=ceiling)
    metrics = Evaluation(
        run=str(run),
        data=str(data),
        generator_step=gen.meta.get("step"),
        psi=psi,
        mode=gen.network.config.mode,
        seed=seed,
        extractor=extractor_name,
        grid=tuple(gen.shape),
        n_synthetic=n,
        n_real_train=len(train),
        n_real_held_out=len(held),
        settings={k: getattr(settings, k) for k in settings.__all__},
        note=note,
        fid=fid,
        kid=kid,
        ssim_to_nearest_held_out=MeanStd.of(best),
        mse_to_nearest_held_out=MeanStd.of([mse(syn_x[i], held_x[j]) for i, j in enumerate(idx)]),
        psnr_to_nearest_held_out=MeanStd.of([psnr(syn_x[i], held_x[j]) for i, j in enumerate(idx)]),
        reference_ssim=MeanStd.of(s_ref),
        reference_mse=MeanStd.of([mse(held_x[i], train_x[j]) for i, j in enumerate(ref_idx)]),
        diversity=diversity,
        prdc=prdc(f_train, f_syn),
        prdc_reference_held_out=prdc(f_train, f_held),
        memorisation={k: v for k, v in audit.items() if k != "held_out_max_ssim"},
        label_consistency=consistency,
        share_with_tumour=Shares(float(has_tumour.mean()), float(np.mean([(y > 0).any() for y in held_y])), "real_held_out"),
        tumour_at_head_edge=Shares(tumour_at_head_edge(syn_x, syn_y), tumour_at_head_edge(train_x, train_y), "real_train"),
        label_profile=profile,
        condition_fidelity=condition or {},
        restyle_fidelity=restyle or {},
    )
    out = Path(out)
    with staged_output(out, "evaluation", force=force, inputs=[run, data]) as work:
        metrics.write(work / "metrics.json")
        write_report(work, metrics, train, held, syn_x, syn_y, conditions, audit)
    say(f"wrote {out}")
    return metrics
