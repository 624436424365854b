"""The ``augment3d`` command line (Typer). Heavy imports live inside the commands."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer

# options several commands share, declared once
SkipBad = Annotated[bool, typer.Option(help="Skip bad cases and list them instead of stopping.")]
Device = Annotated[str, typer.Option(help="cpu or cuda.")]
ReplaceOut = Annotated[
    bool, typer.Option(help="Replace OUT if it exists (only a folder augment3d wrote, once the new one is complete).")
]

app = typer.Typer(
    name="augment3d",
    help="Synthetic 3D brain-tumour MRI for segmentation: phantom cohorts, validation, GAN training, benchmarks.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts are plain: "[bench]" stays "[bench]"
)

EXIT_BAD_DATA = 1  # validate found bad cases
EXIT_USAGE = 2  # a user error: bad path, damaged file, bad recipe


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print one readable line to stderr and exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


class Terminated(BaseException):
    """SIGTERM, raised where the program is, so that partial outputs are cleaned up on the way out."""


def _terminate(signum, frame):
    raise Terminated()


def _os_error(exc: OSError) -> str:
    """One line for a failed read or write: the path, what the system said, what to do."""
    import errno

    where = exc.filename if exc.filename is not None else "augment3d"
    hint = {
        errno.ENOSPC: "; free some space and run again (train: with --resume)",
        errno.EDQUOT: "; free some space and run again (train: with --resume)",
        errno.EROFS: "; write to another folder",
        errno.EACCES: "; check the permissions",
        errno.EPERM: "; check the permissions",
    }.get(exc.errno or 0, "")
    return f"{where}: {exc.strerror or exc}{hint}"


def user_errors(fn):
    """Turn errors users can cause into one line on stderr and exit code 2 (no traceback);
    Ctrl-C exits 130 and SIGTERM 143, after the command has removed its partial outputs."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from augment3d.errors import Augment3DError

        try:
            return fn(*args, **kwargs)
        except Augment3DError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(_os_error(exc))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except Terminated:
            typer.echo("terminated", err=True)
            raise typer.Exit(143) from None

    return wrapper


def _report_cohort(cohort) -> None:
    """The cases skipped (--skip-bad) and the warnings of a prepared cohort, one line each."""
    for skipped in cohort.skipped:
        typer.echo(f"skipped {skipped.case.subject_id}: {skipped.error}", err=True)
    for warning in cohort.warnings:
        typer.echo(f"warning: {warning}", err=True)


def _progress():
    """A progress bar with an ETA on a terminal; steady plain lines in pipes and cluster logs."""
    from augment3d.cli.progress import Progress

    return Progress()


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


@app.command()
@user_errors
def phantom(
    out: Annotated[Path, typer.Argument(help="Cohort folder to create (BraTS-2023 layout).")],
    cases: Annotated[int, typer.Option(min=1, max=10000, help="Number of subjects.")] = 24,
    seed: Annotated[int, typer.Option(min=0, help="Seed; same seed, same bytes.")] = 0,
    spacing: Annotated[float, typer.Option(min=0.5, max=8.0, help="Voxel size in mm.")] = 2.0,
    ssa_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of subjects from the under-represented SSA site.")
    ] = 0.25,
    healthy_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of each site's subjects without a tumour (empty label map, grade 'none'): recipients for TumourPaste.",
        ),
    ] = 0.0,
    preview: Annotated[bool, typer.Option(help="Also save preview.png (3 planes x 4 modalities, label outlines).")] = False,
    force: Annotated[bool, typer.Option(help="Replace OUT if it exists (only once the new cohort is complete).")] = False,
) -> None:
    """Build a phantom cohort from the MNI152 template (HIC and SSA sites, HGG and LGG tumours)."""
    from augment3d.data.phantom import PhantomConfig, make_phantom_cohort

    config = PhantomConfig(cases=cases, seed=seed, spacing=spacing, ssa_fraction=ssa_fraction, healthy_fraction=healthy_fraction)
    with _progress() as bar:
        task = bar.add_task("phantom", total=cases)
        folder = make_phantom_cohort(
            out,
            config,
            force=force,
            preview=preview,
            progress=lambda i, n, sid: bar.update(task, completed=i, description=sid),
        )
        bar.update(task, completed=cases, description="phantom")
    typer.echo(f"wrote {cases} cases to {folder}" + (f" (preview: {folder / 'preview.png'})" if preview else ""))


def _recipe_columns(recipe: Optional[str], root: Path):
    """Conditioning columns and allowed categories: from the recipe, else all metadata columns."""
    from augment3d.config.recipe import load_recipe
    from augment3d.data import read_metadata

    if recipe is not None:
        r = load_recipe(recipe)
        return list(r.data.conditions), dict(r.data.categories)
    metadata = read_metadata(root) if root.is_dir() else None
    if metadata is None:
        return [], {}
    return [c for c in metadata.columns if c != "subject_id"], {}


@app.command()
@user_errors
def validate(
    data: Annotated[Path, typer.Argument(help="Cohort folder in BraTS layout.")],
    recipe: Annotated[Optional[str], typer.Option(help="Recipe whose conditioning columns and categories to check.")] = None,
) -> None:
    """Check every case (files, gzip integrity, voxels, geometry, labels, metadata); exit 1 if any is bad."""
    from rich.table import Table

    from augment3d.data import validate_cohort

    columns, categories = _recipe_columns(recipe, data)
    with _progress() as bar:
        task = bar.add_task("validate", total=None)
        reports = validate_cohort(
            data,
            columns,
            categories,
            progress=lambda i, n, case: bar.update(task, total=n, completed=i, description=case.subject_id),
        )
        bar.update(task, completed=len(reports), description="validate")
    table = Table(title=f"{data} ({len(reports)} cases)")
    table.add_column("case", overflow="fold")
    for name in ("naming", "shape", "spacing (mm)", *columns):
        table.add_column(name, overflow="fold")
    table.add_column("status", overflow="fold")
    for report in reports:
        shape = "x".join(map(str, report.shape)) if report.shape else "-"
        zooms = "x".join(f"{z:g}" for z in report.zooms) if report.zooms else "-"
        status = "[green]ok[/green]" if report.ok else "[red]" + "; ".join(str(p) for p in report.problems) + "[/red]"
        conds = [report.conditions.get(c, "-") for c in columns]
        table.add_row(report.case.subject_id, report.case.scheme.name, shape, zooms, *conds, status)
    _console().print(table)
    for report in reports:
        for warning in report.warnings:
            typer.echo(f"warning: case {report.case.subject_id}: {warning}", err=True)
    bad = [r for r in reports if not r.ok]
    if bad:
        for report in bad:
            for problem in report.problems:
                typer.echo(f"bad case {report.case.subject_id}: {problem}", err=True)
        fail(f"{len(bad)} of {len(reports)} cases are bad", EXIT_BAD_DATA)
    typer.echo(f"all {len(reports)} cases are valid")


@app.command()
@user_errors
def prepare(
    data: Annotated[Path, typer.Argument(help="Cohort folder in BraTS layout.")],
    recipe: Annotated[str, typer.Option(help="Recipe name or .toml path (sets grid and conditions).")] = "quick",
    cache: Annotated[
        Optional[Path], typer.Option(help="Cache folder (default $AUGMENT3D_CACHE or ~/.cache/augment3d/prepared).")
    ] = None,
    skip_bad: SkipBad = False,
    use_cache: Annotated[bool, typer.Option("--use-cache/--no-cache", help="Reuse prepared cases.")] = True,
    preview: Annotated[Optional[Path], typer.Option(help="Save a montage PNG of the first prepared cases here.")] = None,
) -> None:
    """Preprocess a cohort onto the recipe's grid (crop, pad, resample, scale to [-1, 1]) and cache it."""
    from augment3d.config.recipe import load_recipe

    r = load_recipe(recipe)
    with _progress() as bar:
        task = bar.add_task("prepare", total=None)
        cohort = r.data.prepare(
            data,
            skip_bad=skip_bad,
            cache_dir=cache,
            use_cache=use_cache,
            progress=lambda i, n, case: bar.update(task, total=n, completed=i, description=case.subject_id),
        )
        bar.update(task, completed=len(cohort.cases) + len(cohort.skipped), description="prepare")
    _report_cohort(cohort)
    shape = "x".join(map(str, r.data.preprocess().shape))
    typer.echo(f"prepared {len(cohort.cases)} cases at {shape} ({cohort.cache_hits} from cache), skipped {len(cohort.skipped)}")
    if preview is not None:
        from augment3d.viz import save_montage

        items = [(f"{c.subject_id} {' '.join(c.conditions.values())}", c.images, c.label) for c in cohort.cases[:3]]
        save_montage(items, preview)
        typer.echo(f"preview: {preview}")


@app.command()
@user_errors
def info(path: Annotated[Path, typer.Argument(help="A cohort folder or a training run folder.")]) -> None:
    """Summarise a cohort (cases per site and grade, shapes, voxel sizes) or a training run."""
    from collections import Counter

    from augment3d.io.run_files import is_run_folder

    if is_run_folder(path):
        _run_info(path)
        return

    from augment3d.data import MODALITIES, discover_cases, read_metadata
    from augment3d.data.nifti import read_header
    from augment3d.errors import DataError

    cases = discover_cases(path)
    metadata = read_metadata(path)
    schemes = Counter(c.scheme.name for c in cases)
    shapes: Counter = Counter()
    zooms: Counter = Counter()
    unreadable: list = []
    for case in cases:
        p = case.paths.get(MODALITIES[0])
        try:
            header = read_header(p if p is not None else case.expected_path(MODALITIES[0]))
        except DataError as exc:
            unreadable.append(str(exc))
            continue
        shapes["x".join(map(str, header.get_data_shape()[:3]))] += 1
        zooms["x".join(f"{z:g}" for z in header.get_zooms()[:3])] += 1
    typer.echo(f"{path}: a cohort of {len(cases)} cases ({', '.join(f'{n} {k}' for k, n in schemes.items())} naming)")
    typer.echo(f"  shapes: {dict(shapes)}")
    typer.echo(f"  voxel sizes (mm): {dict(zooms)}")
    if metadata is None:
        typer.echo("  no metadata.csv")
    else:
        from augment3d.data.metadata import same_id

        ids = {same_id(c.subject_id) for c in cases}
        for column in (c for c in metadata.columns if c != "subject_id"):
            counts = Counter(row.get(column) or "(empty)" for sid, row in metadata.rows.items() if sid in ids)
            typer.echo(f"  {column}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        missing = sorted(ids - set(metadata.rows))
        if missing:
            typer.echo(f"  {len(missing)} cases have no metadata row: {', '.join(missing[:5])}")
    for line in unreadable:
        typer.echo(f"  unreadable: {line}")


@app.command()
@user_errors
def train(
    data: Annotated[Path, typer.Argument(help="Cohort folder in BraTS layout (train on all of it).")],
    out: Annotated[Path, typer.Option(help="Run folder to create (or continue with --resume).")],
    recipe: Annotated[str, typer.Option(help="Recipe name or .toml path.")] = "quick",
    resume: Annotated[
        bool, typer.Option(help="Continue the run in OUT exactly where its last checkpoint left off (same recipe).")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            help="Replace an existing run folder in OUT (only a run folder augment3d wrote; the old run is deleted once the new one has its first checkpoint)."
        ),
    ] = False,
    allow_change: Annotated[
        Optional[list[str]],
        typer.Option(help="With --resume: a recipe value that may differ from the run's, e.g. train.steps (repeatable)."),
    ] = None,
    skip_bad: SkipBad = False,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Override the recipe's number of steps.")] = None,
    device: Device = "cpu",
) -> None:
    """Train the conditional 3D StyleGAN on a cohort (checkpoints, JSONL log, montages in OUT)."""
    from augment3d.config.recipe import load_recipe
    from augment3d.training.run import train_run

    r = load_recipe(recipe)
    total = steps or r.train.steps
    with _progress() as bar:
        task = bar.add_task("train", total=total)

        def report(step, n, metrics):
            bar.update(task, completed=step, description=f"train D {metrics['d_loss']:.3f} G {metrics['g_loss']:.3f}")

        folder, cohort, last = train_run(
            data,
            r,
            out,
            resume=resume,
            force=force,
            skip_bad=skip_bad,
            steps=steps,
            device=device,
            progress=report,
            allow_changes=allow_change or (),
        )
    if resume and not last:  # nothing left to train (a cut-short final save was completed)
        from augment3d.io.checkpoint import recorded_step

        done = recorded_step(folder, "train_state")
        typer.echo(
            f"{folder} is finished at step {done} of {total}; to train it longer, resume with "
            f"--steps N (N above {done}), e.g. --resume --steps {2 * done}"
        )
        return
    _report_cohort(cohort)
    if last:
        typer.echo(
            f"step {last['step']}: D loss {last['d_loss']:.4f}, G loss {last['g_loss']:.4f}, augment p {last['ada_p']:.3f}"
        )
    typer.echo(
        f"run folder: {folder} (generator.safetensors, log.jsonl, curves.png, samples_latest.png: real vs generated per condition)"
    )


@app.command()
@user_errors
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder (augment3d train), or a bundled generator's name: phantom.")],
    data: Annotated[Path, typer.Argument(help="Real cohort folder (the run's training data and, ideally, held-out cases).")],
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, report.md and PNGs.")],
    n: Annotated[int, typer.Option(min=4, help="Number of synthetic subjects.")] = 32,
    per_category: Annotated[
        int,
        typer.Option(
            min=0, help="Condition fidelity: generate more subjects of a scarce category (site, grade) until it has this many."
        ),
    ] = 16,
    features: Annotated[
        str, typer.Option(help="fixed (shipped 3D encoder), medicalnet (with --weights) or segmenter.")
    ] = "fixed",
    weights: Annotated[Optional[Path], typer.Option(help="Weights for --features medicalnet (a local file).")] = None,
    psi: Annotated[float, typer.Option(min=0.0, max=2.0, help="Truncation for the synthetic subjects.")] = 1.0,
    seed: Annotated[int, typer.Option(min=0, help="Seed of synthetic subject 0 and of every draw.")] = 0,
    skip_bad: Annotated[bool, typer.Option(help="Skip bad real cases and list them.")] = False,
    force: ReplaceOut = False,
) -> None:
    """GAN metrics with references: FID/KID (with the real-vs-real floor), SSIM/MSE, diversity, PRDC, memorisation, consistency.

    An inpainting run is scored on held-out crops instead: the BraTS inpainting challenge's masked SSIM,
    PSNR and MSE on healthy tissue against a trivial fill, and the label consistency of rendered lesions."""
    from augment3d.io.run_files import generator_mode
    from augment3d.metrics.evaluate import evaluate_run
    from augment3d.pretrained import run_folder

    if features not in ("fixed", "medicalnet", "segmenter"):
        fail(f"--features must be fixed, medicalnet or segmenter, got {features!r}")
    if generator_mode(run_folder(run)) == "inpaint":
        from augment3d.metrics.inpaint_evaluate import evaluate_inpainting

        try:
            scores = evaluate_inpainting(
                run_folder(run),
                data,
                out,
                n=n,
                psi=psi,
                seed=seed,
                skip_bad=skip_bad,
                force=force,
                progress=lambda m: typer.echo(m, err=True),
            )
        except ValueError as exc:
            fail(str(exc))
        gan, fill = scores["healthy"]["gan"], scores["healthy"]["fill"]
        ratio = (scores["lesion_label_consistency"] or {}).get("ratio")
        typer.echo(
            f"healthy tissue SSIM {gan['ssim']['mean']:.4f} (trivial fill {fill['ssim']['mean']:.4f}), PSNR "
            f"{gan['psnr']['mean']:.2f} dB ({fill['psnr']['mean']:.2f}); rendered lesions' label consistency "
            + ("n/a" if ratio is None else f"{ratio:.2f}x real")
            + f"; report: {out / 'report.md'}"
        )
        return
    try:
        metrics = evaluate_run(
            run,
            data,
            out,
            n=n,
            features=features,
            weights=weights,
            psi=psi,
            seed=seed,
            skip_bad=skip_bad,
            force=force,
            per_category=per_category,
            progress=lambda m: typer.echo(m, err=True),
        )
    except ValueError as exc:
        fail(str(exc))
    typer.echo(
        f"FID {metrics.fid.synthetic_vs_train:.4g} (floor {metrics.fid.floor_held_out_vs_train:.4g}); report: {out / 'report.md'}"
    )


def _run_info(path: Path) -> None:
    from augment3d.synthesis.sampling import load_generator

    gen = load_generator(path)
    cfg = gen.network.config
    typer.echo(f"run {path}: generator at step {gen.meta['step']} (augment3d {gen.meta.get('augment3d_version')})")
    typer.echo(
        f"  grid {'x'.join(map(str, gen.shape))}, style {cfg.style_mode}, z/w {cfg.z_dim}/{cfg.w_dim}, "
        f"{sum(p.numel() for p in gen.network.parameters()):,} generator parameters"
    )
    typer.echo("  conditions: " + (", ".join(f"{k} {{{', '.join(v)}}}" for k, v in gen.conditions.items()) or "none"))
    from augment3d.io.run_files import LOG, read_log

    rows = read_log(path / LOG)
    if rows:
        last = rows[-1]
        typer.echo(
            f"  last logged step {last['step']}: D {last['d_loss']:.4f}, G {last['g_loss']:.4f}, "
            f"augment p {last['ada_p']:.3f}, {last['seconds']:.0f} s"
        )
        evals = [r for r in rows if "val_swd" in r]
        if evals:
            best = min(evals, key=lambda r: r["val_swd"])
            typer.echo(f"  validation SWD: best {best['val_swd']:.4f} at step {best['step']}, last {evals[-1]['val_swd']:.4f}")


def _parse_conditions(values: list[str], option: str = "--condition") -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            fail(f"{option} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


@app.command()
@user_errors
def sample(
    run: Annotated[
        Path,
        typer.Argument(help="Run folder holding generator.safetensors + generator.json, or a bundled generator's name: phantom."),
    ],
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic cohort to.")],
    n: Annotated[int, typer.Option(min=1, help="Number of subjects.")] = 8,
    condition: Annotated[Optional[list[str]], typer.Option(help="KEY=VALUE, repeatable (e.g. --condition site=SSA).")] = None,
    seed: Annotated[
        int,
        typer.Option(
            min=0,
            max=99_999,
            help="First seed; subjects use seeds SEED .. SEED+N-1 (a seed names a subject; ids carry it in five digits).",
        ),
    ] = 0,
    psi: Annotated[float, typer.Option(min=0.0, max=2.0, help="Truncation towards the condition's mean (1 = none).")] = 1.0,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="brats (BraTS-2023 layout + metadata.csv) or nnunet (nnU-Net v2 raw; OUT named DatasetNNN_Name)."
        ),
    ] = "brats",
    conditions_from: Annotated[
        str,
        typer.Option(
            help="Condition columns not given with --condition: 'cohort' (drawn per seed in the training cohort's proportions) or 'balanced' (every combination in turn)."
        ),
    ] = "cohort",
    preview: Annotated[
        bool, typer.Option(help="Also write preview.png (the first subjects, three planes, label outlines).")
    ] = False,
    nnunet_regions: Annotated[
        bool,
        typer.Option(
            help="With --format nnunet: declare the BraTS regions (WT, TC, ET) with regions_class_order, for nnU-Net's region-based training."
        ),
    ] = False,
    labels_from: Annotated[
        Optional[Path],
        typer.Option(
            help="Labels-to-images runs: render the label maps of this cohort folder (BraTS layout, images give the brain mask) or joint run, instead of the run's own training maps deformed by each seed."
        ),
    ] = None,
    into: Annotated[
        Optional[Path],
        typer.Option(
            help="Inpainting runs: write inpainted copies of this cohort's subjects (BraTS layout): each gets a lesion of one of its cases (--donors-where), rendered by the run; everything else stays the recipient's."
        ),
    ] = None,
    donors_where: Annotated[
        Optional[list[str]],
        typer.Option(
            help="With --into: KEY=VALUE (repeatable): take lesions only from the cases whose metadata.csv row matches."
        ),
    ] = None,
    device: Device = "cpu",
    force: ReplaceOut = False,
) -> None:
    """Generate synthetic subjects (images + labels) from a trained run; a seed names a subject.

    With an inpainting run, --into COHORT writes inpainted copies of a real cohort instead."""
    from augment3d.synthesis.export import FORMATS, check_nnunet_name, export_synthetic
    from augment3d.synthesis.sampling import load_generator
    from augment3d.synthesis.cohort import sample_subjects

    if into is not None or donors_where:
        _sample_into(run, out, into, n, seed, condition, donors_where, psi, fmt, labels_from, device, force)
        return
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if seed + n - 1 > 99_999:
        fail(f"seeds {seed} .. {seed + n - 1} do not fit the five digits of a BraTS-2023 id (up to 99999)")
    if fmt == "nnunet":
        check_nnunet_name(out)
    from augment3d.io.output_folders import claim_output

    from augment3d.pretrained import run_folder

    run = run_folder(run)  # a run folder, or a bundled generator by name
    claim_output(out, "samples", force=force, inputs=[run, labels_from])  # before generating, not after
    gen = load_generator(run, device)
    if conditions_from not in ("cohort", "balanced"):
        fail(f"--conditions-from must be cohort or balanced, got {conditions_from!r}")
    subjects = sample_subjects(gen, n, _parse_conditions(condition or []), seed, psi, labels_from, conditions_from)
    combinations = [tuple(sorted(c.items())) for c in gen.encoder.all_conditions()]
    ids = [combinations.index(tuple(sorted(c.items()))) + 1 if c else 0 for c in subjects.conditions]
    export_synthetic(
        out,
        subjects.images,
        subjects.labels,
        subjects.seeds,
        subjects.conditions,
        gen.affine,
        fmt=fmt,
        psi=psi,
        force=force,
        inputs=[run, labels_from],
        condition_ids=ids,
        regions=nnunet_regions,
        extra_columns={"label_map_from": subjects.sources, "condition_from": subjects.condition_from},
        preview=preview,
    )
    typer.echo(f"wrote {n} synthetic subjects ({fmt}) to {out}")


def _sample_into(run, out, into, n, seed, condition, donors_where, psi, fmt, labels_from, device, force) -> None:
    """``augment3d sample RUN OUT --into COHORT``: inpainted copies of a real cohort."""
    from augment3d.synthesis.inpaint_cohort import inpaint_into_cohort

    if into is None:
        fail("--donors-where chooses the lesions of --into COHORT; give --into")
    if fmt != "brats" or labels_from is not None:
        fail("--into writes inpainted copies of real subjects in the BraTS layout: leave out --format and --labels-from")
    with _progress() as bar:
        task = bar.add_task("inpaint", total=n)
        counts = inpaint_into_cohort(
            run,
            into,
            out,
            n=n,
            seed=seed,
            condition=_parse_conditions(condition or []) or None,
            donors_where=_parse_conditions(donors_where or []) or None,
            psi=psi,
            device=device,
            force=force,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    typer.echo(
        f"wrote {n} inpainted copies of {into}'s subjects to {out}: {counts['inpainted']} with a new lesion "
        f"({counts['moved']} moved to another recipient, {counts['no_room']} without room: written unchanged), "
        f"lesions from {counts['donors']} donors"
    )


def _seed_list(text: str | None, option: str) -> list[int] | None:
    """``0,101,102`` as a list of distinct seeds >= 0 (None when not given); a usage error otherwise."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        fail(f"{option} takes comma-separated whole numbers, e.g. 0,101,102; got {text!r}")
    if not values or len(set(values)) != len(values) or min(values) < 0:
        fail(f"{option} takes distinct seeds >= 0, got {text!r}")
    return values


@app.command()
@user_errors
def bench(
    out: Annotated[Path, typer.Option(help="Bench folder (created, or continued: finished stages and jobs are kept).")],
    recipe: Annotated[
        str, typer.Option(help="Recipe name or .toml path (its [bench] section sets arms, seeds, model).")
    ] = "quick",
    data: Annotated[
        Optional[Path], typer.Option(help="Cohort folder in BraTS layout; default: the recipe's phantom cohort.")
    ] = None,
    generator: Annotated[
        Optional[Path],
        typer.Option(
            help="A trained run folder, or a bundled generator's name (phantom), to use instead of training a GAN on the training split (default: the recipe's [bench] generator, if any)."
        ),
    ] = None,
    arm: Annotated[
        Optional[str], typer.Option(help="Run only this arm (real, real+classic, real+synthetic, real+classic+synthetic).")
    ] = None,
    seed: Annotated[Optional[int], typer.Option(help="Run only this seed (one of the recipe's seeds).")] = None,
    setup_only: Annotated[
        bool, typer.Option(help="Only build the shared stages (cohort, splits, GAN, GAN metrics), e.g. before a job array.")
    ] = False,
    cohorts: Annotated[
        Optional[str],
        typer.Option(
            help="Phantom cohort seeds, e.g. 0,101,102: the whole bench once per cohort, pooled in one report (default: the recipe's [bench] cohorts, else one cohort)."
        ),
    ] = None,
    cohort: Annotated[
        Optional[int],
        typer.Option(help="Run only this cohort of a bench over several cohorts (with --arm/--seed: one job of a job array)."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Replace an existing bench folder in OUT and start over (only a bench folder augment3d wrote).")
    ] = False,
    skip_bad: SkipBad = False,
    device: Device = "cpu",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Run the GAN and the jobs side by side in this many processes, each with cores/N threads (2 on 2 cores; docs/PERFORMANCE.md has the times).",
        ),
    ] = 1,
) -> None:
    """Does synthetic data improve segmentation? Train segmenters with and without it and report per site."""
    from augment3d.config.recipe import load_recipe
    from segbench.bench import run_bench
    from segbench.running import Running

    import time

    r = load_recipe(recipe)
    start = time.monotonic()

    def say(message: str) -> None:
        minutes, seconds = divmod(int(time.monotonic() - start), 60)
        typer.echo(f"[{minutes:02d}:{seconds:02d}] {message}", err=True)

    with _progress() as bar:

        def progress(name: str, total: int):
            task = bar.add_task(name, total=total)

            def update(step, n, metrics):
                shown = (
                    f"D {metrics['d_loss']:.3f} G {metrics['g_loss']:.3f}"
                    if "d_loss" in metrics
                    else f"val Dice {metrics['val_dice']:.3f}"
                )
                bar.update(task, completed=step, description=f"{name} {shown}")

            return update

        setups, report = run_bench(
            r,
            out,
            data=data,
            generator=generator,
            arm=arm,
            seed=seed,
            setup_only=setup_only,
            force=force,
            cohorts=_seed_list(cohorts, "--cohorts"),
            cohort=cohort,
            running=Running(device=device, workers=workers, skip_bad=skip_bad, say=say, progress=progress),
        )
    for setup in setups if isinstance(setups, list) else [setups]:
        _report_cohort(setup)
        if report is None:
            typer.echo(
                f"set up {setup.folder}: {len(setup.train)}/{len(setup.val)}/{len(setup.test)} train/val/test cases"
                + (f", generator {setup.generator}" if setup.generator else "")
            )
    if report is None:
        return
    typer.echo(report["answer"])
    typer.echo(f"report: {out / 'report.md'}")


@app.command("nnunet-dataset")
@user_errors
def nnunet_dataset(
    cohort: Annotated[Path, typer.Argument(help="Cohort folder in BraTS layout (e.g. augment3d phantom OUT).")],
    out: Annotated[Path, typer.Argument(help="nnU-Net raw dataset folder to write, named DatasetNNN_Name, inside $nnUNet_raw.")],
    regions: Annotated[
        bool,
        typer.Option(
            help="Declare the BraTS regions (WT, TC, ET) with regions_class_order, for nnU-Net's region-based training."
        ),
    ] = False,
    subject: Annotated[Optional[list[str]], typer.Option(help="Only this subject id (repeatable); default: every case.")] = None,
    force: ReplaceOut = False,
) -> None:
    """Write a BraTS-layout cohort as an nnU-Net v2 raw dataset (imagesTr, labelsTr, dataset.json)."""
    from augment3d.synthesis.export import export_cohort_nnunet

    export_cohort_nnunet(cohort, out, regions=regions, subjects=subject, force=force)
    typer.echo(f"wrote {out}: nnUNetv2_plan_and_preprocess -d {out.name[7:10]} --verify_dataset_integrity")


def _label_numbers(text: str | None) -> dict[str, int] | None:
    if text is None:
        return None
    pairs = _parse_conditions(text.split(","), "--labels")
    if not all(v.isdigit() for v in pairs.values()):
        fail(f"--labels expects CLASS=VALUE,... with whole numbers (e.g. NETC=2,SNFH=1,ET=3), got {text!r}")
    return {k.upper(): int(v) for k, v in pairs.items()}


@app.command("nnunet-trainers")
@user_errors
def nnunet_trainers(
    folder: Annotated[Path, typer.Argument(help="Folder to write augment3d_trainers.py into; point nnUNet_extTrainer at it.")],
    bank: Annotated[
        Optional[Path], typer.Option(help="Tumour bank folder (augment3d.TumourBank) for nnUNetTrainerTumourPaste.")
    ] = None,
    generator: Annotated[
        str, typer.Option(help="Labels-to-images run folder, or a bundled generator's name, for nnUNetTrainerSynthetic.")
    ] = "phantom",
    condition: Annotated[
        Optional[list[str]],
        typer.Option(
            help="KEY=VALUE, repeatable: the restyle's condition (default site=SSA; columns left out are drawn per sample)."
        ),
    ] = None,
    prob: Annotated[float, typer.Option(min=0.0, max=1.0, help="Chance per training sample.")] = 0.5,
    labels: Annotated[
        Optional[str],
        typer.Option(help="The dataset's label numbers, e.g. NETC=2,SNFH=1,ET=3 (default: read from its dataset.json)."),
    ] = None,
    seed: Annotated[
        Optional[int], typer.Option(min=0, help="Reproducible draws per worker (default: nnU-Net's per-worker numpy seeding).")
    ] = None,
) -> None:
    """Write the nnU-Net v2 trainer folder: -tr nnUNetTrainerTumourPaste or -tr nnUNetTrainerSynthetic."""
    from augment3d.nnunet.stub import TRAINERS, write_trainer_folder

    path = write_trainer_folder(
        folder,
        bank=bank,
        generator=generator,
        condition=_parse_conditions(condition) if condition else None,
        prob=prob,
        labels=_label_numbers(labels),
        seed=seed,
    )
    typer.echo(
        f"wrote {path}\n  export nnUNet_extTrainer={folder.resolve()}\n"
        f"  nnUNetv2_train DATASET 3d_fullres FOLD -tr {TRAINERS[0]}   (or -tr {TRAINERS[1]})"
    )


@app.command("bench-report")
@user_errors
def bench_report(folder: Annotated[Path, typer.Argument(help="A bench folder (augment3d bench --out).")]) -> None:
    """Merge whatever bench jobs have finished into report.json, report.md and the PNGs."""
    from segbench.cohorts import folder_cohorts
    from segbench.pooled_report import write_pooled_report
    from segbench.report import write_report

    report = write_pooled_report(folder) if folder_cohorts(folder) else write_report(folder)
    typer.echo(report["answer"])
    if report["missing"]:
        typer.echo(f"not finished yet: {', '.join(report['missing'])}")
    typer.echo(f"report: {folder / 'report.md'}")


def main() -> None:
    """Console-script entry point."""
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    app()


if __name__ == "__main__":
    main()
