"""``augment3d train``: a cohort folder and a recipe in, a run folder out."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_write_text, remove_stale_temporaries
from ..config.recipe import Recipe
from ..data.cohort import PreparedCohort
from ..data.conditions import ConditionEncoder
from ..data.crops import tumour_crops
from ..errors import DataError, RecipeError
from ..models.architecture import JOINT_NOT_TRAINED
from ..io.run_files import LOG, RECIPE, SUBJECTS, read_log
from .distributed import barrier, joined_world
from .run_folder import plan_run, writing_run
from .trainer import TrainingData, train_gan

__all__ = ["train_run", "save_samples_montage", "save_loss_curves"]


def _encoder(recipe: Recipe, cohort: PreparedCohort) -> ConditionEncoder:
    columns = list(recipe.data.conditions)
    categories = {c: recipe.data.categories[c] for c in columns if c in recipe.data.categories}
    seen = ConditionEncoder.fit([c.conditions for c in cohort.cases], columns)
    return ConditionEncoder({c: categories.get(c, seen.categories[c]) for c in columns})


def save_samples_montage(generator, encoder: ConditionEncoder, path: Path, step: int, reals=()) -> None:
    """Per condition: one real case of that condition (when there is one) beside one EMA sample
    (seed 0) rendering that real case's own label map (or the first real case's, for a condition
    no real case has)."""
    import torch

    from ..models.spatial_conditioning import inpaint_maps, label_maps, tumour_regions
    from ..viz import save_montage

    items = []
    generator.eval()
    for condition in encoder.all_conditions() or [{}]:
        name = " ".join(condition.values())
        real = next((c for c in reals if all(c.conditions.get(k) == v for k, v in condition.items())), None)
        if real is not None:
            items.append((f"real {name}", real.images, real.label))
        source = real if real is not None else (reals[0] if reals else None)
        if source is None:
            continue
        label = torch.from_numpy(source.label[None].astype(np.int64))
        maps = label_maps(label, torch.from_numpy((source.images > -1 + 1e-3).any(0)[None]))
        if generator.inpaints:  # the crop with its tumour grown by two voxels rendered again
            region = tumour_regions(label, torch.tensor([2]), label.shape[1] / 6)
            maps = inpaint_maps(maps, torch.from_numpy(source.images[None]), region)
        vec = torch.from_numpy(encoder.encode(condition)) if encoder.dim else None
        g = torch.Generator().manual_seed(0)
        z = torch.randn(1, generator.config.z_dim, generator=g)
        with torch.no_grad():
            images, _ = generator(z, vec, maps=maps, generator=g)
        items.append((f"step {step} {name}", images[0].float().clamp(-1, 1).numpy(), source.label))
    save_montage(items, path)


def save_loss_curves(log_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import io

    import matplotlib.pyplot as plt

    from ..io.atomic import atomic_write_bytes

    rows = read_log(log_path)
    if not rows:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))
    steps = [r["step"] for r in rows]
    ax1.plot(steps, [r["d_loss"] for r in rows], label="D")
    ax1.plot(steps, [r["g_loss"] for r in rows], label="G")
    if any("seg_real" in r for r in rows):  # the label-consistency segmenter: on reals, and on G's subjects
        ax1.plot(steps, [r.get("seg_real", np.nan) for r in rows], label="S on real")
        ax1.plot(steps, [np.nan if r.get("seg_fake") is None else r["seg_fake"] for r in rows], label="S on G's")
    ax1.set_xlabel("step")
    ax1.legend()
    ax1.set_title("losses")
    ax2.plot(steps, [r["ada_p"] for r in rows], label="augment p")
    ax2.plot(steps, [r.get("ada_rt", np.nan) for r in rows], ".", label="r_t (D sign on reals)")
    evals = [r for r in rows if "val_swd" in r]
    if evals:
        ax2.plot([r["step"] for r in evals], [r["val_swd"] for r in evals], "o-", label="validation SWD")
    ax2.set_xlabel("step")
    ax2.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(png, buffer.getvalue())


def train_run(
    data_dir: str | os.PathLike,
    recipe: Recipe,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    force: bool = False,
    skip_bad: bool = False,
    steps: int | None = None,
    device: str = "cpu",
    cache_dir=None,
    subjects: Sequence[str] | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    allow_changes: Sequence[str] = (),
) -> tuple[Path, PreparedCohort, dict]:
    """Prepare ``data_dir`` with the recipe and train (or resume) into ``out``.

    ``subjects`` restricts training to those subject ids (e.g. a benchmark's training split); the
    run records them in ``subjects.json`` so ``augment3d evaluate`` holds the others out.
    ``resume``, ``force`` and ``allow_changes``: see :mod:`augment3d.training.run_folder`; every
    check runs before the folder is touched.

    Under ``torchrun`` every process runs this; only rank 0 touches the run folder.
    """
    out = Path(out)
    if recipe.model.get("mode", "labels") == "joint":
        raise RecipeError(recipe.path, f"[model] mode = {recipe.model['mode']!r}: {JOINT_NOT_TRAINED}")
    with joined_world(device) as world:  # left after every rank is done (see distributed.py)
        mode = plan_run(out, recipe, resume=resume, force=force, inputs=[data_dir], allow_changes=allow_changes)
        cohort = _training_cohort(data_dir, recipe, subjects, skip_bad, cache_dir)
        encoder = _encoder(recipe, cohort)
        train_cfg = recipe.train if steps is None else replace(recipe.train, steps=steps)
        model_cfg = recipe.model_config(encoder.dim)
        try:
            train_cfg.micro_batches(world.size)
        except ValueError as exc:
            raise RecipeError(recipe.path, f"[train]: {exc}") from None
        voxel_mm = float(np.median([np.sqrt((c.affine[:3, :3] ** 2).sum(0)).mean() for c in cohort.cases]))
        reals: list = list(cohort.cases)
        if model_cfg.mode == "inpaint":  # crops of the prepared subjects around their tumours
            reals = tumour_crops(cohort.cases, model_cfg.shape[0], train_cfg.crops_per_case, train_cfg.seed)
        data = TrainingData.from_cases(reals, encoder)
        barrier(world)  # every rank has read the data before rank 0 changes anything
        with writing_run(out, mode, world.main) as commit:
            if world.main:
                _write_records(out, recipe, data_dir, cohort)
            barrier(world)

            def at_checkpoint(step: int, generator) -> None:
                commit()
                _at_checkpoint(out, generator, encoder, step, reals)

            last = train_gan(
                out,
                data,
                model_cfg,
                train_cfg,
                encoder,
                recipe.data.preprocess(),
                resume=mode == "resume",
                device=device,
                progress=progress,
                on_checkpoint=at_checkpoint,
                generator_info={"voxel_mm": voxel_mm, "recipe": recipe.name},
            )
            if world.main:
                save_loss_curves(out / LOG, out / "curves.png")
        return out, cohort, last


def _training_cohort(data_dir, recipe: Recipe, subjects: Sequence[str] | None, skip_bad: bool, cache_dir) -> PreparedCohort:
    """The prepared cohort, restricted to ``subjects`` when given (every one must exist)."""
    cohort = recipe.data.prepare(data_dir, skip_bad=skip_bad, cache_dir=cache_dir)
    if subjects is None:
        return cohort
    wanted = set(subjects)
    missing = sorted(wanted - {c.subject_id for c in cohort.cases} - {s.case.subject_id for s in cohort.skipped})
    if missing:
        raise DataError(data_dir, f"no case named {', '.join(missing[:5])} to train on")
    cohort = replace(cohort, cases=[c for c in cohort.cases if c.subject_id in wanted])
    if not cohort.cases:
        raise DataError(data_dir, "none of the requested training subjects is usable")
    return cohort


def _write_records(out: Path, recipe: Recipe, data_dir, cohort: PreparedCohort) -> None:
    """The recipe as run and the subjects trained on (``augment3d evaluate`` holds out the others)."""
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # a killed run's half-written files
    atomic_write_text(out / RECIPE, recipe.path.read_text(encoding="utf-8"))
    atomic_write_text(
        out / SUBJECTS,
        json.dumps(
            {
                "data": str(Path(data_dir).resolve()),
                "train": [c.subject_id for c in cohort.cases],
                "skipped": [s.case.subject_id for s in cohort.skipped],
            },
            indent=1,
        )
        + "\n",
    )


def _at_checkpoint(out: Path, generator, encoder, step: int, reals) -> None:
    """Refresh the pictures a person looks at during a long run."""
    save_samples_montage(generator, encoder, out / "samples_latest.png", step, reals)
    save_loss_curves(out / LOG, out / "curves.png")
