"""One job: train a segmentation net for one arm and seed, keep the best by validation Dice, score the test split."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from augment3d.io.atomic import atomic_write_text
from augment3d.data.preprocess import PreparedCase
from augment3d.metrics.regions import REGIONS, dice

from .config import BenchConfig
from .data import PlacedDataset, arm_dataset, voxel_spacing
from .metrics import LESION_RULES, score_case
from .model import autocast, build_model, pad_to, predict, seg_loss
from .plateau import plateau_index

__all__ = [
    "POLY_POWER",
    "RESULT",
    "learning_rate",
    "result_path",
    "run_job",
    "score_cases",
    "train_step",
    "uniform_average",
    "weight_average",
]

RESULT = "result.json"

#: nnU-Net's polynomial decay exponent
POLY_POWER = 0.9


def learning_rate(config: BenchConfig, step: int, anneal_from: int | None = None) -> float:
    """The rate of optimiser step ``step`` (1-based): ``lr`` throughout, or decayed polynomially to 0
    after the last of ``steps``; from step ``anneal_from`` + 1 on, the rate there falls linearly to 0
    over ``anneal_steps`` (the last step at 1/``anneal_steps`` of it)."""

    def base(k: int) -> float:
        return config.lr if config.lr_schedule == "constant" else config.lr * (1 - (k - 1) / config.steps) ** POLY_POWER

    if anneal_from is None or step <= anneal_from:
        return base(step)
    return base(anneal_from) * (anneal_from + config.anneal_steps - step + 1) / config.anneal_steps


def weight_average(model: torch.nn.Module, decay: float):
    """An exponential moving average of ``model``'s weights and buffers (``update_parameters`` after every step), or None at 0."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def uniform_average(model: torch.nn.Module):
    """The uniform average of ``model``'s weights and buffers over the steps it is updated after (stochastic
    weight averaging; the recipes' GroupNorm nets need no statistics pass afterwards)."""
    from torch.optim.swa_utils import AveragedModel

    return AveragedModel(model, use_buffers=True)


def _end_step(config: BenchConfig, anneal_from: int | None) -> int | None:
    """The job's last step where it is known already: at the cap with ``patience = 0``, else once the anneal began."""
    if not config.patience:
        return config.steps + config.anneal_steps
    return None if anneal_from is None else anneal_from + config.anneal_steps


def _plateaued(config: BenchConfig, curve: list[dict]) -> bool:
    """Whether the job's validation curve so far has reached its plateau (``patience`` > 0, past ``min_steps``)."""
    if not config.patience or curve[-1]["step"] < config.min_steps:
        return False
    return plateau_index([c["val_dice"] for c in curve], config.patience, config.plateau_window, config.min_delta) is not None


def result_path(bench_dir: Path, arm: str, seed: int) -> Path:
    return Path(bench_dir) / "arms" / arm / f"seed{seed}" / RESULT


def _batches(dataset, config: BenchConfig, seed: int):
    """Endless training batches: whole subjects, or patches through a tio.Queue when ``patch`` is set."""
    import torchio as tio

    g = torch.Generator().manual_seed(seed)
    if config.patch:
        sampler = tio.LabelSampler(config.patch, label_name="seg", label_probabilities={0: 1, 1: 1, 2: 1, 3: 1})
        source = tio.Queue(
            dataset,
            config.queue_length,
            config.samples_per_volume,
            sampler,
            num_workers=config.workers,
            shuffle_subjects=True,
            shuffle_patches=True,
        )
        loader = tio.SubjectsLoader(source, batch_size=config.batch, num_workers=0)
    else:
        loader = tio.SubjectsLoader(
            dataset,
            batch_size=config.batch,
            shuffle=True,
            drop_last=len(dataset) > config.batch,
            num_workers=config.workers,
            generator=g,
        )
    while True:
        yield from loader


def _stack(batch) -> tuple[torch.Tensor, torch.Tensor]:
    import torchio as tio

    from augment3d.brats import MODALITIES

    x = torch.cat([batch[m][tio.DATA].float() for m in MODALITIES], 1)
    return x, batch["seg"][tio.DATA][:, 0].long()


def train_step(model, optimizer, x: torch.Tensor, y: torch.Tensor, device: str, amp: str) -> float:
    """One optimiser step on a batch: the network under ``amp``'s autocast, the loss in fp32."""
    with autocast(device, amp):
        logits = model(x)
    loss = seg_loss(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def _validation_dice(model, cases: Sequence[PreparedCase], device: str, patch: int, amp: str) -> float:
    scores = []
    for case in cases:
        pred = predict(model, case.images, device, patch, amp)
        scores += [dice(pred, case.label, r) for r in REGIONS]
    return float(np.mean(scores))


def score_cases(model, cases: Sequence[PreparedCase], device: str, patch: int, amp: str = "none") -> list[dict]:
    """Per test case: its conditions and Dice / HD95 (mm) / lesion-wise scores per region."""
    rows = []
    for case in cases:
        pred = predict(model, case.images, device, patch, amp)
        rows.append(
            {"subject_id": case.subject_id, **case.conditions, "scores": score_case(pred, case.label, voxel_spacing(case.affine))}
        )
    return rows


def run_job(
    bench_dir: Path,
    arm: str,
    seed: int,
    config: BenchConfig,
    train: Sequence[PreparedCase],
    val: Sequence[PreparedCase],
    test: Sequence[PreparedCase],
    generator: str | None,
    device: str = "cpu",
    progress: Callable[[int, int, dict], None] | None = None,
) -> dict:
    """Train, validate, test one (arm, seed); writes ``arms/<arm>/seed<seed>/result.json`` atomically."""
    from augment3d.precision import auto_amp

    torch.manual_seed(seed)
    amp = auto_amp(config.amp, device)
    model = build_model(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    average = weight_average(model, config.ema_decay)
    judged = model if average is None else average.module  # the weights validated, kept and tested
    folder = result_path(bench_dir, arm, seed).parent
    folder.mkdir(parents=True, exist_ok=True)
    dataset = arm_dataset(arm, config, train, generator, seed, folder)
    validation = list(val) or list(train)  # with no validation cases the training cases choose (said in the report)
    curve, best_dice, best_step, best_state, window = [], -1.0, 0, None, None
    t0, losses = time.perf_counter(), []
    batches = _batches(dataset, config, seed)
    stop, anneal_from, step = "cap" if config.patience else "budget", None, 0
    while anneal_from is None or step < anneal_from + config.anneal_steps:
        step += 1
        model.train()
        x, y = _stack(next(batches))
        x, _ = pad_to(x.to(device))
        y = pad_to(y.to(device)[:, None].float(), value=0)[0][:, 0].long()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step, anneal_from)
        losses.append(train_step(model, optimizer, x, y, device, amp))
        if average is not None:
            average.update_parameters(model)
        end = _end_step(config, anneal_from)
        if config.average_steps and end is not None and step > end - config.average_steps:
            window = window or uniform_average(model)
            window.update_parameters(model)
        last = anneal_from is not None and step == anneal_from + config.anneal_steps
        final = last or (not config.anneal_steps and step == config.steps)
        if step % config.val_every == 0 or step == config.steps or last:
            net = window.module if window is not None and final else judged
            dice = _validation_dice(net, validation, device, config.patch, amp)
            curve.append({"step": step, "train_loss": float(np.mean(losses)), "val_dice": dice})
            losses = []
            if dice > best_dice and (final or not (config.anneal_steps or config.average_steps)):
                best_dice, best_step, best_state = dice, step, copy.deepcopy(net.state_dict())
            if progress is not None:
                progress(step, config.steps + config.anneal_steps, curve[-1])
        if anneal_from is None:
            plateaued = bool(curve) and curve[-1]["step"] == step and _plateaued(config, curve)
            if plateaued or step == config.steps:  # the learning phase ends: on its plateau, or at the cap
                stop, anneal_from = ("plateau" if plateaued else stop), step
    if best_state is None:  # every job validates at least once, at its last step
        raise RuntimeError(f"{arm} seed {seed}: no validation was recorded")
    judged.load_state_dict(best_state)
    result = {
        "arm": arm,
        "seed": seed,
        "steps": config.steps,
        "lr_schedule": config.lr_schedule,
        "stop": {"reason": stop, "step": anneal_from, "anneal_steps": config.anneal_steps, "trained_steps": step},
        "ema_decay": config.ema_decay,
        "average_steps": config.average_steps,
        "best_step": best_step,
        "best_val_dice": best_dice,
        "validation": "val split" if val else "training cases (no validation split)",
        "seconds": time.perf_counter() - t0,
        "threads": torch.get_num_threads(),
        "train_cases": len(train),
        "amp": amp,
        "curve": curve,
        "cases": score_cases(judged, test, device, config.patch, amp),
        "regions": list(REGIONS),
        "lesion_rules": LESION_RULES,
        **({dataset.kind: dataset.counts} if isinstance(dataset, PlacedDataset) else {}),
    }
    path = result_path(bench_dir, arm, seed)
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    return result
