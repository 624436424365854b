"""``train_gan``: a training run around :class:`~augment3d.training.loop.TrainingLoop`.

Resume, the JSONL log, checkpoints (the EMA generator for users, the full state for
``--resume``), the NaN guard and early stopping. Under ``torchrun`` every process calls
:func:`train_gan` with the same arguments; only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from ..io.atomic import atomic_write_text
from ..io.checkpoint import bundle_exists, recorded_step
from ..data.conditions import ConditionEncoder
from ..data.preprocess import PreprocessConfig
from ..data.label_bank import LabelBank
from ..errors import Augment3DError
from ..io.run_files import LOG, read_log
from ..models import Generator3D, ModelConfig
from ..io.run_files import save_generator
from .distributed import joined_world
from .loop import TrainingData, TrainingLoop
from .state import TRAIN_STATE, load_train_state, save_train_state
from .train_config import TrainConfig

__all__ = ["TrainConfig", "TrainingData", "TrainingDiverged", "train_gan"]


class TrainingDiverged(Augment3DError):
    """A loss or weight became NaN/Inf; nothing was saved after the last good checkpoint."""


def _all_finite(*modules) -> bool:
    return all(bool(torch.isfinite(p).all()) for m in modules for p in m.parameters())


class _RunFolder:
    """What a run writes (rank 0 only): the JSONL log and checkpoints, after the NaN guard."""

    def __init__(
        self,
        run_dir: Path,
        loop: TrainingLoop,
        world,
        encoder: ConditionEncoder,
        preprocess: PreprocessConfig,
        generator_info: dict | None,
        on_checkpoint,
    ):
        self.dir, self.loop, self.world, self.encoder = run_dir, loop, world, encoder
        self.preprocess, self.generator_info, self.on_checkpoint = preprocess, generator_info, on_checkpoint
        self.log_path = run_dir / LOG

    def open(self, start: int) -> None:
        """A fresh run starts a fresh log; a resumed one drops the steps logged after its
        checkpoint (a killed run logged them, and they are about to be redone)."""
        if not self.world.main:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.log_path.exists():
            return
        if start == 0:
            self.log_path.unlink()
            return
        kept = [row for row in read_log(self.log_path) if row["step"] <= start]
        atomic_write_text(self.log_path, "".join(json.dumps(row) + "\n" for row in kept))

    def catch_up(self, start: int) -> None:
        """A run killed between its training state and its generator at step ``start`` saves that
        generator now, from the restored EMA weights (the ones it would have saved)."""
        loop = self.loop
        due = start if not loop.stopping.every or loop.stopping.best_step == start else None
        if self.world.main and due and recorded_step(self.dir, "generator") != due:
            save_generator(self.dir, loop.G_ema, self.encoder, self.preprocess, due, self.generator_info)

    def log(self, metrics: dict) -> None:
        if self.world.main:
            with self.log_path.open("a") as handle:
                handle.write(json.dumps(metrics) + "\n")

    def checkpoint(self, step: int, with_generator: bool) -> None:
        loop = self.loop
        if not _all_finite(loop.G, loop.D, loop.G_ema):
            raise TrainingDiverged(self.dir, f"non-finite weights at step {step}; not saved, the last checkpoint is intact")
        if not self.world.main:
            return
        # the training state first: a run killed between the two saves can always be resumed
        save_train_state(
            self.dir, step, loop.state(), {"train": asdict(loop.cfg), "model": loop.mc.to_dict(), "amp_used": loop.amp}
        )
        if with_generator:
            save_generator(self.dir, loop.G_ema, self.encoder, self.preprocess, step, self.generator_info)
        if self.on_checkpoint is not None:
            self.on_checkpoint(step, loop.G_ema)


def _condition_counts(data: TrainingData, encoder: ConditionEncoder) -> list[dict]:
    """How many training subjects each condition combination has (what ``sample`` draws from)."""
    if not encoder.dim:
        return []
    counts: dict[tuple, int] = {}
    for condition in encoder.decode(data.conditions.numpy()):
        key = tuple(sorted(condition.items()))
        counts[key] = counts.get(key, 0) + 1
    return [{"condition": dict(key), "count": n} for key, n in sorted(counts.items())]


def _check_finite_losses(run_dir, step: int, metrics: dict) -> None:
    if not (math.isfinite(metrics["d_loss"]) and math.isfinite(metrics["g_loss"])):
        raise TrainingDiverged(
            run_dir,
            f"non-finite loss at step {step} (D {metrics['d_loss']}, G {metrics['g_loss']}); stopped "
            "without saving, the last checkpoint is intact; lower the learning rates or raise r1_gamma, then --resume",
        )


def train_gan(
    run_dir: str | os.PathLike,
    data: TrainingData,
    model_config: ModelConfig,
    config: TrainConfig,
    encoder: ConditionEncoder,
    preprocess: PreprocessConfig | None = None,
    *,
    resume: bool = False,
    device: str = "cpu",
    progress: Callable[[int, int, dict], None] | None = None,
    on_checkpoint: Callable[[int, Generator3D], None] | None = None,
    generator_info: dict | None = None,
) -> dict:
    """Train (or resume) a conditional 3D StyleGAN; returns the last step's metrics.

    ``preprocess`` (default: the default settings on the model's grid) and ``generator_info``
    (e.g. ``voxel_mm``, ``recipe``) are recorded in ``generator.json`` for the users of the run.
    """
    run_dir = Path(run_dir)
    with joined_world(device) as world:  # every rank returns once rank 0 has written the run
        loop = TrainingLoop(data, model_config, config, device, world)
        info = {**(generator_info or {}), "training_conditions": _condition_counts(data, encoder)}
        folder = _RunFolder(
            run_dir, loop, world, encoder, preprocess or PreprocessConfig(shape=model_config.shape), info, on_checkpoint
        )
        start = load_train_state(run_dir, loop.state())["step"] if resume and bundle_exists(run_dir, TRAIN_STATE) else 0
        folder.open(start)
        if world.main:  # the maps ``sample`` draws new subjects from
            LabelBank.from_training_data(data, encoder, data.subject_ids).save(run_dir)
        folder.catch_up(start)
        last: dict = {}
        t0 = time.perf_counter()
        for step in range(start + 1, config.steps + 1):
            last = metrics = loop.step(step)
            _check_finite_losses(run_dir, step, metrics)
            improved = stop = False
            if loop.stopping.due(step):
                metrics["val_swd"] = loop.validation_swd()
                improved, stop = loop.stopping.record(step, metrics["val_swd"])
                metrics["early_stop"] = stop
            metrics["seconds"] = round(time.perf_counter() - t0, 3)
            if step % config.log_every == 0 or step == config.steps or "val_swd" in metrics:
                folder.log(metrics)
            if progress is not None and world.main:
                progress(step, config.steps, metrics)
            if stop or improved or step % config.checkpoint_every == 0 or step == config.steps:
                folder.checkpoint(
                    step, with_generator=improved or not loop.stopping.every or not bundle_exists(run_dir, "generator")
                )
            if stop:
                break
        return last
