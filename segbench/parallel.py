"""``augment3d bench --workers N``: the GANs and jobs of a bench side by side in N processes.

A segmentation job at the phantom's 32^3 keeps two cores only partly busy (two threads ran one
job 1.2x faster than one thread did; two one-thread jobs side by side did twice the work in 1.2x
the time: docs/PERFORMANCE.md). So with N workers every process gets cores / N threads and
the bench's tasks are handed out in this order as workers free up:

1. each cohort's GAN stages (training, metrics and montage) that a selected job waits for: the
   GAN of the synthetic arms, the inpainting GAN of the inpaint arms; the longest tasks;
2. the jobs whose GAN is ready (once their cohort's stage finished);
3. every other job (``real``, ``real+classic``, ``real+paste``), which never waits for a GAN.

Each task runs in a fresh (spawned) process that re-opens the bench folder as a job of a job
array would (``--cohort C --arm A --seed S``), so a finished job is a ``result.json`` like any
other and an interrupted bench continues where it stopped. A job's figures can differ from a
sequential run's in the last digits (fewer threads sum in another order).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from augment3d.errors import DataError

from .bench import STAGES, BenchSetup, arm_stage
from .running import Running
from .train import result_path

__all__ = ["Task", "plan_tasks", "run_side_by_side"]


@dataclass(frozen=True)
class Task:
    """One unit of work for a worker: a cohort's GAN stage (``stage``, ``arm`` None) or one (arm, seed) job."""

    recipe: str  # the recipe file this cohort runs (OUT/cohort-<C>.toml, or the recipe given)
    name: str  # the recipe's name (bench identity)
    folder: str  # the cohort's bench folder
    data: str | None  # --data, when given (bench identity)
    generator: str | None  # --generator, when given (bench identity)
    arm: str | None = None
    seed: int | None = None
    where: str = ""  # "cohort 101 " in a bench over several cohorts
    stage: str | None = None  # a GAN stage's name (segbench.bench.STAGES)

    @property
    def label(self) -> str:
        if self.arm is None:
            return f"{self.where}{'inpainting GAN' if self.stage == 'inpaint_gan' else 'GAN'}"
        return f"{self.where}{self.arm} seed {self.seed}"


def plan_tasks(
    setups: Sequence[BenchSetup], selected: Sequence[tuple[str, int]], data=None, generator=None
) -> tuple[list[Task], dict[tuple[str, str], list[Task]], list[Task]]:
    """(GAN stage tasks, the jobs waiting per (cohort folder, stage), jobs that need no GAN) of the
    jobs not finished yet."""
    gans, waiting, free = [], {}, []
    for setup in setups:
        base = Task(
            str(setup.recipe.path),
            setup.recipe.name,
            str(setup.folder),
            None if data is None else str(data),
            None if generator is None else str(generator),
            where=f"{Path(setup.folder).name.replace('-', ' ')} " if len(setups) > 1 else "",
        )
        todo = [(a, s) for a, s in selected if not result_path(setup.folder, a, s).is_file()]
        for stage in STAGES:
            generating = [replace(base, arm=a, seed=s) for a, s in todo if arm_stage(a) == stage]
            if generating:
                gans.append(replace(base, stage=stage))
                waiting[(base.folder, stage)] = generating
        free += [replace(base, arm=a, seed=s) for a, s in todo if arm_stage(a) is None]
    return gans, waiting, free


def _run_task(task: Task, threads: int, running: Running) -> dict:
    """In a worker process: set up the cohort's folder as a job would, then the task."""
    import torch

    from augment3d.config.recipe import load_recipe

    from .bench import setup_bench

    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        recipe = replace(load_recipe(task.recipe), name=task.name)
        with contextlib.ExitStack() as held:
            setup = setup_bench(
                recipe,
                task.folder,
                data=task.data,
                generator=task.generator,
                running=running,
                held=held,
                stages=(task.stage,) if task.arm is None and task.stage else (),
            )
            if task.arm is None:
                return {"seconds": time.perf_counter() - start}
            assert task.seed is not None  # a job names its seed
            stage = arm_stage(task.arm)
            if stage is not None and setup.stage_run(task.arm) is None:
                raise DataError(Path(task.folder) / stage, f"holds no trained generator for the {task.arm} arm")
            result = setup.run_job(task.arm, task.seed, running.device)
            return {
                "seconds": time.perf_counter() - start,
                "best_val_dice": result["best_val_dice"],
                "best_step": result["best_step"],
            }
    except DataError as error:  # said as is; anything else in one line plus its traceback (exceptions do not all pickle)
        return {"error": str(error)}
    except Exception as error:
        return {"error": "".join(traceback.format_exception_only(error)).strip(), "traceback": traceback.format_exc()}


def run_side_by_side(
    setups: Sequence[BenchSetup],
    selected: Sequence[tuple[str, int]],
    running: Running,
    *,
    data=None,
    generator=None,
) -> None:
    """Run the unfinished ``selected`` jobs of every set-up cohort (and the GANs they need) in
    ``running.workers`` processes. A failed task stops new ones from starting; the running ones finish
    (their results are kept) and the first failure is raised as a :class:`DataError`."""
    import torch

    gans, waiting, free = plan_tasks(setups, selected, data, generator)
    queue = list(gans) + free
    total = sum(map(len, waiting.values())) + len(free)
    if not queue:
        return
    workers, say = running.workers, running.say
    threads = max(1, torch.get_num_threads() // workers)
    say(f"{total} jobs and {len(gans)} GAN stage(s) in {workers} worker processes, {threads} thread(s) each")
    update = running.progress("jobs", total) if running.progress else None
    done = 0
    failures: list[str] = []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        busy: dict[Future, Task] = {}
        while busy or (queue and not failures):
            while queue and not failures and len(busy) < workers:
                task = queue.pop(0)
                say(f"{task.label}: started")
                busy[pool.submit(_run_task, task, threads, running.in_worker())] = task
            finished, _ = wait(busy, return_when=FIRST_COMPLETED)
            for future in finished:
                task = busy.pop(future)
                outcome = future.result()
                if "error" in outcome:
                    failures.append(f"{task.label} failed: {outcome['error']}")
                    say(outcome.get("traceback", failures[-1]).strip())
                    continue
                if task.arm is None:
                    say(f"{task.label} ready ({outcome['seconds']:.0f} s)")
                    ready = waiting.pop((task.folder, task.stage or ""), [])
                    at = sum(t.arm is None for t in queue)  # after any GAN still queued, before the other jobs
                    queue[at:at] = ready
                    continue
                done += 1
                say(
                    f"{task.label}: best validation Dice {outcome['best_val_dice']:.3f} at step {outcome['best_step']} "
                    f"({outcome['seconds']:.0f} s)"
                )
                if update is not None:
                    update(done, total, {"val_dice": outcome["best_val_dice"]})
    if failures:
        raise DataError(
            setups[0].folder if len(setups) == 1 else None,
            f"{len(failures)} bench task(s) failed; the finished jobs are kept, run again to continue. " + failures[0],
        )
