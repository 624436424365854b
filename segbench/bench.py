"""``augment3d bench``: cohort, splits, GAN on the training split, segmentation arms x seeds, report.

A bench folder holds every stage's output; a stage that finished is never redone, so an
interrupted bench continues where it stopped (finished jobs kept, the GAN resumed from its last
checkpoint), and independent ``--arm/--seed`` jobs can run on other machines over the same folder::

    OUT/bench.json              recipe, data and generator this folder belongs to
    OUT/recipe.toml             the recipe as run
    OUT/cohort/                 the phantom cohort (when no --data was given)
    OUT/splits.json             train / val / test subject ids
    OUT/gan/                    the GAN run, trained on the training split (unless --generator)
    OUT/gan_eval/               ``augment3d evaluate`` of that generator
    OUT/synthetic_samples.png   synthetic subjects of the conditions the arms generate
    OUT/inpaint_recipe.toml     the inpaint arms' recipe as run (``[bench] inpaint_recipe``, this [train] seed)
    OUT/inpaint_gan/            the inpainting GAN of the inpaint arms, trained on the training split
    OUT/inpainted_samples.png   recipients, the same lesion pasted and inpainted into them
    OUT/arms/<arm>/seed<S>/result.json
    OUT/report.json, report.md, dice_by_arm.png, learning_curves.png
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

from augment3d.io.atomic import atomic_write_text
from augment3d.config.recipe import Recipe, train_table
from augment3d.brats import MODALITIES
from augment3d.errors import DataError, RecipeError
from augment3d.io.run_files import SUBJECTS
from augment3d.io.output_folders import check_not_an_input, check_replaceable, folder_lock, mark, set_aside

from .config import BenchConfig, bench_config
from .data import placing_kind
from .running import Running
from .splits import load_splits, make_splits, save_splits
from .train import result_path, run_job

__all__ = [
    "STAGES",
    "arm_stage",
    "BenchSetup",
    "MARKER",
    "bench_identity",
    "check_bench_folder",
    "claim_bench_folder",
    "setup_bench",
    "run_bench",
    "jobs",
]

MARKER = "bench.json"

#: the GANs a bench may train, each a folder of OUT: the labels-to-images GAN of the synthetic arms
#: and the inpainting GAN of the inpaint arms
STAGES = ("gan", "inpaint_gan")


def arm_stage(arm: str) -> str | None:
    """The GAN stage (:data:`STAGES`) an arm's jobs wait for, or None."""
    if "synthetic" in arm.split("+"):
        return "gan"
    return "inpaint_gan" if placing_kind(arm) == "inpaint" else None


@dataclass
class BenchSetup:
    folder: Path
    recipe: Recipe
    config: BenchConfig
    data_dir: Path
    generator: str | None
    train: list
    val: list
    test: list
    skipped: list
    warnings: list
    #: the inpaint arms' inpainting run (None: no inpaint arm, or not trained yet)
    inpainter: str | None = None

    def stage_run(self, arm: str) -> str | None:
        """The run an arm's jobs use: the GAN for the synthetic arms, the inpainting GAN for the inpaint arms."""
        return {"gan": self.generator, "inpaint_gan": self.inpainter}.get(arm_stage(arm) or "")

    def run_job(self, arm: str, seed: int, device: str, progress=None) -> dict:
        """Train and test one (arm, seed) job on this set-up's splits (:func:`segbench.train.run_job`)."""
        run = self.stage_run(arm)
        return run_job(self.folder, arm, seed, self.config, self.train, self.val, self.test, run, device, progress)


def bench_identity(recipe: Recipe, data: Path | None, generator: Path | None) -> dict:
    text = recipe.path.read_text(encoding="utf-8")
    return {
        "recipe": recipe.name,
        "recipe_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "data": str(data.resolve()) if data else "phantom",
        "generator": str(generator.resolve()) if generator else None,
    }


def check_bench_folder(out: Path, identity: dict, force: bool, inputs, recipe_file: Path | None = None) -> bool:
    """True when ``out`` is this bench's folder (to continue); refuse another one, and with
    ``force`` anything but a bench folder of ours (``augment3d.io.output_folders``). A recipe
    (``recipe_file``) that only adds arms, seeds or cohorts continues the folder."""
    marker = out / MARKER
    check_not_an_input(out, inputs)
    if out.exists() and not out.is_dir():
        raise DataError(out, "exists and is not a folder")
    if force:
        check_replaceable(out, "bench", inputs)
        return False
    if not out.exists():
        return False
    if marker.is_file():
        try:
            found = json.loads(marker.read_text())
        except ValueError:
            raise DataError(marker, "damaged bench marker; use --force to start over") from None
        changed = [k for k in sorted(set(identity) | set(found)) if found.get(k) != identity.get(k)]
        if changed and not _only_grew(out, found, identity, changed, recipe_file):
            raise DataError(out, f"is a bench with a different {', '.join(changed)}; use another --out or --force to start over")
        return True
    if any(out.iterdir()):
        raise DataError(out, "exists and is not a bench folder; choose another --out or pass --force")
    return False


GROWABLE = ("arms", "seeds")  # [bench] lists a bench may grow: the new jobs run, the finished ones are kept
#: [bench] keys only the inpaint arms read: a folder that ran none may gain them with its first inpaint arm
ARM_KEYS = tuple(f.name for f in fields(BenchConfig) if f.name.startswith("inpaint_"))


def _grown(old, new) -> bool:
    return isinstance(old, list) and isinstance(new, list) and set(old) <= set(new)


def _only_grew(out: Path, found: dict, identity: dict, changed: list[str], recipe_file: Path | None) -> bool:
    """True when the recipe (``OUT/recipe.toml`` against the one given) differs only by more
    ``[bench]`` arms or seeds (and a pooled bench only by more cohorts), the settings of inpaint arms
    added to a folder that ran none, or the form of the loss-term keys (flat or ``[train.terms]``):
    the finished stages and jobs stay valid, so the bench continues with the new ones instead of
    refusing the folder."""
    import tomllib

    if any(k not in ("recipe_sha256", "cohorts") for k in changed):
        return False
    if "cohorts" in changed and not _grown(found.get("cohorts"), identity.get("cohorts")):
        return False
    if "recipe_sha256" not in changed:
        return True
    if recipe_file is None:
        return False
    try:
        before = tomllib.loads((out / "recipe.toml").read_text(encoding="utf-8"))
        after = tomllib.loads(Path(recipe_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    b, a = before.get("bench", {}), after.get("bench", {})
    if not all(_grown(b.get(k, []), a.get(k, [])) for k in GROWABLE):
        return False
    # the settings of the inpaint arms may come with them, when the folder ran none
    unread = ARM_KEYS if not any(placing_kind(arm) == "inpaint" for arm in b.get("arms", [])) else ()

    def strip(raw: dict) -> dict:
        bench = {k: v for k, v in raw.get("bench", {}).items() if k not in GROWABLE and k not in unread}
        try:  # the flat term keys of older recipes and their [train.terms] tables are the same recipe
            train = train_table(raw.get("train", {}), out / "recipe.toml")
        except RecipeError:
            train = raw.get("train", {})
        return {**raw, "bench": bench, "train": train}

    return strip(before) == strip(after)


def claim_bench_folder(out: Path, identity: dict, ours: bool, recipe_file: Path | None = None) -> None:
    """Make ``out`` this bench's folder: a new one is marked; one of ours whose recipe grew
    (:func:`_only_grew`) gets the new recipe and marker."""
    if ours:
        if json.loads((out / MARKER).read_text()) != identity:
            if recipe_file is not None:
                atomic_write_text(out / "recipe.toml", Path(recipe_file).read_text(encoding="utf-8"))
            atomic_write_text(out / MARKER, json.dumps(identity, indent=1) + "\n")
        return
    if out.exists():
        shutil.rmtree(set_aside(out))  # checked replaceable before any work (check_bench_folder)
    out.mkdir(parents=True)
    mark(out, "bench")
    atomic_write_text(out / MARKER, json.dumps(identity, indent=1) + "\n")


def jobs(config: BenchConfig, arm: str | None = None, seed: int | None = None) -> list[tuple[str, int]]:
    """The (arm, seed) jobs of a recipe, optionally narrowed to one arm and/or seed."""
    if arm is not None and arm not in config.arms:
        raise DataError(None, f"--arm {arm!r} is not one of this recipe's arms: {', '.join(config.arms)}")
    if seed is not None and seed not in config.seeds:
        raise DataError(None, f"--seed {seed} is not one of this recipe's seeds: {', '.join(map(str, config.seeds))}")
    return [(a, s) for a in config.arms for s in config.seeds if (arm is None or a == arm) and (seed is None or s == seed)]


def _cohort(out: Path, recipe: Recipe, data: Path | None, say) -> Path:
    if data is not None:
        return data
    from augment3d.data.phantom import make_phantom_cohort

    folder = out / "cohort"
    if not (folder / "phantom.json").is_file():
        say(f"building the phantom cohort ({recipe.phantom.cases} cases, {recipe.phantom.ssa_fraction:.0%} SSA)")
        make_phantom_cohort(folder, recipe.phantom, force=folder.exists())
    return folder


def _splits(out: Path, config: BenchConfig, cases) -> dict[str, list[str]]:
    path = out / "splits.json"
    ids = {c.subject_id for c in cases}
    if path.is_file():
        splits = load_splits(path)
        missing = sorted(set().union(*splits.values()) - ids)
        if missing:
            raise DataError(path, f"lists cases that are not usable here: {', '.join(missing[:5])}; use --force to start over")
        return splits
    splits = make_splits(
        {c.subject_id: c.conditions for c in cases},
        seed=config.split_seed,
        val=config.val_fraction,
        test=config.test_fraction,
        test_per_site=config.test_per_site,
        train_per_site=config.train_per_site,
    )
    if not splits["train"] or not splits["test"]:
        raise DataError(out, f"{len(cases)} usable cases are too few to split into train and test")
    save_splits(path, splits, config.split_seed)
    return splits


def _train_stage(
    out: Path, folder: str, what: str, recipe: Recipe, steps: int, data_dir: Path, train_ids, running: Running
) -> Path:
    """Train (or resume) one GAN stage's run ``OUT/folder`` with ``recipe`` on the training split."""
    from augment3d.io.checkpoint import bundle_exists
    from augment3d.training.run import train_run
    from augment3d.training.state import TRAIN_STATE

    run = out / folder
    resume = bundle_exists(run, TRAIN_STATE)
    running.say(f"{what} on the {len(train_ids)} training cases: {steps} steps" + (" (resuming)" if resume else ""))
    train_run(
        data_dir,
        recipe,
        run,
        resume=resume,
        force=not resume,
        steps=steps,
        skip_bad=running.skip_bad,
        device=running.device,
        cache_dir=running.cache_dir,
        subjects=train_ids,
        progress=running.progress(what, steps) if running.progress else None,
    )
    return run


def _gan(out: Path, recipe: Recipe, config: BenchConfig, data_dir: Path, train_ids, running: Running) -> Path:
    return _train_stage(out, "gan", "GAN", recipe, config.gan_steps or recipe.train.steps, data_dir, train_ids, running)


def _check_generator_held_out(generator: Path, splits: dict[str, list[str]]) -> None:
    """A ``--generator`` run must not have trained on the bench's validation or test cases (its
    ``subjects.json``): synthetic subjects drawn from them would leak the answers into training."""
    record = generator / SUBJECTS
    if not record.is_file():
        return  # a generator without its training list (e.g. copied on its own): nothing to compare
    try:
        trained = set(json.loads(record.read_text(encoding="utf-8")).get("train", []))
    except (OSError, ValueError, AttributeError, TypeError):
        raise DataError(record, "is not a readable list of training subjects") from None
    seen = sorted(trained & (set(splits.get("test", [])) | set(splits.get("val", []))))
    if seen:
        raise DataError(
            generator,
            f"trained on {len(seen)} of this bench's validation/test cases "
            f"({', '.join(seen[:3])}{', ...' if len(seen) > 3 else ''}); train it on the bench's "
            "training split (splits.json; or leave out --generator and the bench trains one)",
        )


def _check_same_phantom(generator: Path, recipe: Recipe, data: Path | None) -> None:
    """A bundled generator trained on a phantom cohort serves a phantom bench only on that cohort:
    phantom subjects of any cohort share their ids, so the held-out check by id cannot tell them apart."""
    from augment3d.pretrained import provenance

    trained_on = (provenance(generator) or {}).get("phantom")
    if data is not None or trained_on is None:
        return
    from dataclasses import asdict

    from augment3d.data.phantom import PhantomConfig

    theirs = asdict(PhantomConfig()) | trained_on  # a setting it does not record was at its default
    ours = asdict(recipe.phantom)
    if any(ours[k] != theirs.get(k) for k in ours):
        differ = ", ".join(f"{k} {ours[k]} (generator: {theirs.get(k)})" for k in ours if ours[k] != theirs.get(k))
        raise DataError(
            generator,
            f"was trained on another phantom cohort than this bench's ([phantom] {differ}); its "
            "training subjects could be this bench's test cases: leave out the generator and the bench "
            "trains one on its own split",
        )


def _gan_eval(out: Path, generator: str, data_dir: Path, config: BenchConfig, running: Running) -> None:
    from augment3d.metrics.evaluate import evaluate_run

    if (out / "gan_eval" / "metrics.json").is_file():
        return
    running.say(f"GAN metrics on {config.gan_eval_n} synthetic subjects")
    evaluate_run(
        generator,
        data_dir,
        out / "gan_eval",
        n=config.gan_eval_n,
        psi=config.psi,
        skip_bad=running.skip_bad,
        force=True,
        cache_dir=running.cache_dir,
        segmenter_steps=config.judge_steps,
    )


def _synthetic_montage(out: Path, generator: str, config: BenchConfig) -> None:
    from augment3d.synthesis.sampling import load_generator
    from augment3d.viz import save_montage

    path = out / "synthetic_samples.png"
    if path.is_file():
        return
    gen = load_generator(generator)
    options: list = (gen.encoder.matching(config.synthetic_condition, source=generator) if gen.conditions else []) or [None]
    items = []
    for condition in options[:4]:
        images, labels = gen.generate(condition=condition, seeds=[0], psi=config.psi)
        items.append((f"seed 0 {' '.join((condition or {}).values())}".strip(), images[0], labels[0]))
    save_montage(items, path)


def inpaint_source(recipe: Recipe, config: BenchConfig) -> Recipe:
    """The inpaint arms' recipe (``[bench] inpaint_recipe``: a file relative to ``recipe``'s folder, a
    path, or a bundled recipe's name), checked to train an inpainting generator. Raises RecipeError."""
    from augment3d.config.recipe import load_recipe

    beside = recipe.path.parent / config.inpaint_recipe
    source = load_recipe(beside if beside.suffix == ".toml" and beside.is_file() else config.inpaint_recipe)
    if source.model.get("mode") != "inpaint":
        raise RecipeError(
            recipe.path,
            f'[bench] inpaint_recipe = {config.inpaint_recipe!r} does not train an inpainting generator ([model] mode = "inpaint")',
        )
    return source


def _inpaint_gan(out: Path, recipe: Recipe, config: BenchConfig, data_dir: Path, train_ids, running: Running) -> Path:
    """Train (or resume) the inpaint arms' GAN on the training split: ``[bench] inpaint_recipe`` with
    this recipe's ``[train] seed`` (so a cohort's seed names it too), written to ``OUT/inpaint_recipe.toml``."""
    import tomllib

    from augment3d.config.recipe import load_recipe, recipe_toml

    source = inpaint_source(recipe, config)
    raw = tomllib.loads(source.path.read_text(encoding="utf-8"))
    raw.setdefault("train", {})["seed"] = recipe.train.seed
    raw.pop("bench", None)
    text = f"# {source.name} with [train] seed = {recipe.train.seed} (written by augment3d bench)\n" + recipe_toml(raw)
    path = out / "inpaint_recipe.toml"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    inpaint_recipe = replace(load_recipe(path), name=source.name)
    steps = inpaint_recipe.train.steps
    return _train_stage(out, "inpaint_gan", "inpainting GAN", inpaint_recipe, steps, data_dir, train_ids, running)


def _inpaint_montage(out: Path, inpainter: str, config: BenchConfig, train: list) -> None:
    from augment3d.viz import save_montage

    from .data import placing_examples

    path = out / "inpainted_samples.png"
    if path.is_file():
        return
    items = []
    for recipient, pasted, inpainted, lesion in placing_examples(config, train, out / "inpaint_examples", inpainter, n=2):
        name = recipient["subject_id"]
        for title, subject in ((f"{name}", recipient), ("pasted", pasted), ("inpainted", inpainted)):
            items.append((title, {k: subject[k].numpy()[0] for k in MODALITIES}, lesion))
    if items:
        save_montage(items, path)
    shutil.rmtree(out / "inpaint_examples", ignore_errors=True)


def setup_bench(
    recipe: Recipe,
    out: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    generator: str | os.PathLike | None = None,
    force: bool = False,
    running: Running = Running(),
    held: contextlib.ExitStack | None = None,
    stages: Collection[str] = STAGES,
) -> BenchSetup:
    """Every shared stage: folder, cohort, preparation, splits, the GANs the arms need (the GAN + its
    metrics and montage; the inpainting GAN + its montage).

    Only the GAN stages named in ``stages`` run (jobs that do not generate need not wait for them);
    for one left out, ``setup.generator`` (``setup.inpainter``) is the given generator, or the bench's
    run if one was trained, else None.
    The folder's lock is held shared (bench jobs may run side by side; ``--force`` from another
    process is refused meanwhile) until ``held`` closes, or until the setup ends without it.
    """

    from augment3d.pretrained import run_folder

    out = Path(out)
    data = Path(data) if data is not None else None
    generator = run_folder(generator) if generator is not None else None  # a folder, or a bundled generator's name
    config = bench_config(recipe)
    if any(arm_stage(a) == "inpaint_gan" for a in config.arms):
        inpaint_source(recipe, config)  # a missing or wrong inpainting recipe is refused before OUT is touched
    if data is not None and not data.is_dir():
        raise DataError(data, "cohort folder does not exist")
    if generator is not None:
        from augment3d.synthesis.sampling import check_conditions_match, load_generator

        gen = load_generator(generator)  # refuses anything that is not an intact generator
        _check_same_phantom(generator, recipe, data)  # before OUT is touched
        if data is not None:
            check_conditions_match(gen, data)
        if gen.conditions:
            gen.encoder.check_partial(config.synthetic_condition, source=f"{recipe.path} [bench] synthetic_condition")
    identity = bench_identity(recipe, data, generator)
    ours = check_bench_folder(out, identity, force, [data, generator], recipe.path)

    def prepare(folder: Path):
        running.say(f"preparing {folder} on the {'x'.join(map(str, recipe.data.preprocess().shape))} grid")
        return recipe.data.prepare(folder, skip_bad=running.skip_bad, cache_dir=running.cache_dir)

    cohort = prepare(data) if data is not None else None  # bad data is refused before OUT is touched
    claim_bench_folder(out, identity, ours, recipe.path)
    with contextlib.ExitStack() as own:
        (held or own).enter_context(folder_lock(out, shared=True))
        return _shared_stages(out, recipe, config, data, generator, cohort, prepare, running, stages)


def _shared_stages(
    out: Path,
    recipe: Recipe,
    config: BenchConfig,
    data,
    generator,
    cohort,
    prepare,
    running: Running,
    stages: Collection[str] = STAGES,
) -> BenchSetup:
    from augment3d.io.checkpoint import bundle_exists
    from augment3d.io.run_files import GENERATOR

    if not (out / "recipe.toml").is_file():
        atomic_write_text(out / "recipe.toml", recipe.path.read_text(encoding="utf-8"))
    data_dir = _cohort(out, recipe, data, running.say)
    cohort = cohort or prepare(data_dir)
    splits = _splits(out, config, cohort.cases)
    by_id = {c.subject_id: c for c in cohort.cases}
    parts = {k: [by_id[i] for i in v] for k, v in splits.items()}
    gen_path = None
    if generator is not None:
        _check_generator_held_out(generator, splits)
    needed = {arm_stage(a) for a in config.arms}
    if "gan" in needed:
        if generator is not None:
            gen_path = str(generator)
        elif "gan" in stages:
            gen_path = str(_gan(out, recipe, config, data_dir, splits["train"], running))
        elif bundle_exists(out / "gan", GENERATOR):
            gen_path = str(out / "gan")
        if "gan" in stages and gen_path is not None:
            _gan_eval(out, gen_path, data_dir, config, running)
            _synthetic_montage(out, gen_path, config)
    inpainter = None
    if "inpaint_gan" in needed:
        if "inpaint_gan" in stages:
            inpainter = str(_inpaint_gan(out, recipe, config, data_dir, splits["train"], running))
            _inpaint_montage(out, inpainter, config, parts["train"])
        elif bundle_exists(out / "inpaint_gan", GENERATOR):
            inpainter = str(out / "inpaint_gan")
    return BenchSetup(
        out,
        recipe,
        config,
        data_dir,
        gen_path,
        parts["train"],
        parts["val"],
        parts["test"],
        cohort.skipped,
        cohort.warnings,
        inpainter,
    )


def run_bench(
    recipe: Recipe,
    out: str | os.PathLike,
    *,
    data=None,
    generator=None,
    arm: str | None = None,
    seed: int | None = None,
    setup_only: bool = False,
    force: bool = False,
    cohorts: Sequence[int] | None = None,
    cohort: int | None = None,
    running: Running = Running(),
):
    """Set up, run the selected jobs that have not finished, and write the report.

    ``running`` says how (:class:`segbench.running.Running`): with ``workers`` > 1 the jobs (and
    the GAN) run side by side in that many processes (:mod:`segbench.parallel`); the GAN is
    trained only when a selected job generates.

    Returns (setup, report), or with several phantom cohorts (``cohorts``, default the recipe's
    ``[bench] cohorts``; :mod:`segbench.cohorts`) (a setup per cohort run, the pooled report).
    ``report`` is None with ``setup_only``.
    """
    from .report import write_report

    if not recipe.bench:
        raise DataError(recipe.path, "the recipe has no [bench] section")
    config = bench_config(recipe)
    if cohorts is not None and (data is not None or generator is not None):
        raise DataError(
            None,
            "--cohorts builds phantom cohorts: it cannot be combined with --data or --generator (your own data is one cohort)",
        )
    if cohorts is None and data is None and generator is None:
        cohorts = config.cohorts or None
    if generator is None and config.generator and not cohorts and data is None:
        generator = config.generator  # the recipe's generator serves the recipe's own phantom cohort; --data trains one
    if cohorts:
        from .cohorts import run_cohorts

        return run_cohorts(
            recipe,
            out,
            cohorts,
            cohort=cohort,
            arm=arm,
            seed=seed,
            setup_only=setup_only,
            force=force,
            running=running,
        )
    if cohort is not None:
        raise DataError(
            None,
            "--cohort picks one cohort of a bench over several phantom cohorts "
            "([bench] cohorts or --cohorts); this bench has one",
        )
    selected = jobs(config, arm, seed)
    side_by_side = running.side_by_side and not setup_only
    with contextlib.ExitStack() as held:
        setup = setup_bench(
            recipe,
            out,
            data=data,
            generator=generator,
            force=force,
            running=running,
            held=held,
            stages=() if side_by_side else STAGES if setup_only else {s for a, _ in selected if (s := arm_stage(a))},
        )
        if setup_only:
            return setup, None
        if side_by_side:
            from .parallel import run_side_by_side

            run_side_by_side([setup], selected, running, data=data, generator=generator)
        else:
            _run_jobs(setup, selected, running)
        return setup, write_report(setup.folder)


def _run_jobs(setup: BenchSetup, selected, running: Running) -> None:
    say, progress = running.say, running.progress
    for a, s in selected:
        if result_path(setup.folder, a, s).is_file():
            say(f"{a} seed {s}: finished earlier, kept")
            continue
        say(f"{a} seed {s}: training on {len(setup.train)} cases")
        result = setup.run_job(a, s, running.device, progress(f"{a} s{s}", setup.config.steps) if progress else None)
        say(f"{a} seed {s}: best validation Dice {result['best_val_dice']:.3f} at step {result['best_step']}")
