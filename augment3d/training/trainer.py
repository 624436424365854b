"""The GAN training loop: losses, lazy R1, ADA-style augmentation, EMA, checkpoints, NaN guard.

All random draws (batches, latents, noise, augmentation) come from one CPU ``torch.Generator``
seeded from the recipe and saved in the training state, so a resumed run continues exactly.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import bundle_exists
from ..data.conditions import ConditionEncoder
from ..errors import Augment3DError
from ..models import Discriminator3D, Generator3D, ModelConfig
from ..sampling import save_generator
from .augment import DiffAugment3D
from .losses import LOSSES, d_loss, g_loss, r1_penalty
from .state import TRAIN_STATE, load_train_state, save_train_state

__all__ = ["TrainConfig", "TrainingDiverged", "train_gan", "TrainingData"]


class TrainingDiverged(Augment3DError):
    """A loss or weight became NaN/Inf; nothing was saved after the last good checkpoint."""


@dataclass(frozen=True)
class TrainConfig:
    """The ``[train]`` section of a recipe (defaults: the proposal's values)."""

    steps: int = 1000
    batch: int = 4
    g_lr: float = 4e-4
    d_lr: float = 1e-4
    beta1: float = 0.0
    beta2: float = 0.99
    loss: str = "lsgan"
    r1_gamma: float = 1.0
    r1_interval: int = 16
    ema_images: float = 2000.0
    augment: bool = True
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_images: float = 5000.0
    amp: str = "none"
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"amp must be none, bf16 or fp16, got {self.amp!r}")
        if self.steps < 1 or self.batch < 1 or self.checkpoint_every < 1:
            raise ValueError("steps, batch and checkpoint_every must be positive")


@dataclass
class TrainingData:
    """Prepared tensors: images (N, 4, X, Y, Z) in [-1, 1], labels (N, X, Y, Z) int64, conditions (N, C)."""

    images: torch.Tensor
    labels: torch.Tensor
    conditions: torch.Tensor

    @classmethod
    def from_cases(cls, cases, encoder: ConditionEncoder) -> TrainingData:
        images = torch.from_numpy(np.stack([c.images for c in cases]))
        labels = torch.from_numpy(np.stack([c.label for c in cases]).astype(np.int64))
        conds = torch.from_numpy(encoder.encode([c.conditions for c in cases]))
        return cls(images, labels, conds)


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    with torch.no_grad():
        for p_ema, p in zip(ema.parameters(), model.parameters()):
            p_ema.lerp_(p, 1.0 - beta)
        for b_ema, b in zip(ema.buffers(), model.buffers()):
            b_ema.copy_(b)


def _all_finite(*modules) -> bool:
    return all(bool(torch.isfinite(p).all()) for m in modules for p in m.parameters())


def train_gan(
    run_dir: str | os.PathLike,
    data: TrainingData,
    model_config: ModelConfig,
    config: TrainConfig,
    encoder: ConditionEncoder,
    preprocess: dict,
    *,
    resume: bool = False,
    device: str = "cpu",
    progress: Callable[[int, int, dict], None] | None = None,
    on_checkpoint: Callable[[int, Generator3D], None] | None = None,
) -> dict:
    """Train (or resume) a conditional 3D StyleGAN; returns the last logged metrics."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # initial weights
    G, D = Generator3D(model_config).to(device), Discriminator3D(model_config).to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    augment = DiffAugment3D().to(device)
    betas = (config.beta1, config.beta2)
    r1_ratio = config.r1_interval / (config.r1_interval + 1)
    opt_g = torch.optim.Adam(G.parameters(), lr=config.g_lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=config.d_lr * r1_ratio, betas=(betas[0] ** r1_ratio, betas[1] ** r1_ratio))
    modules = {"G": G, "D": D, "G_ema": G_ema, "augment": augment}
    optimizers = {"G": opt_g, "D": opt_d}
    start, ada_sum, ada_n = 0, 0.0, 0
    if resume and bundle_exists(run_dir, TRAIN_STATE):
        meta = load_train_state(run_dir, modules=modules, optimizers=optimizers, rng=rng)
        start, ada_sum, ada_n = meta["step"], meta.get("ada_sum", 0.0), meta.get("ada_n", 0)
    log_path = run_dir / "log.jsonl"
    if start == 0 and log_path.exists():
        log_path.unlink()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
    dev_type = torch.device(device).type
    n = data.images.shape[0]
    classes = model_config.label_classes
    ema_beta = 0.5 ** (config.batch / max(config.ema_images, 1e-8))
    last: dict = {}
    t0 = time.perf_counter()

    def autocast():
        return torch.autocast(dev_type, dtype=dtype, enabled=dtype is not None)

    def batch_of(idx):
        images = data.images[idx].to(device)
        onehot = F.one_hot(data.labels[idx], classes).permute(0, 4, 1, 2, 3).float().to(device)
        return images, onehot, data.conditions[idx].to(device)

    def fake_batch(c):
        z = torch.randn(c.shape[0], model_config.z_dim, generator=rng).to(device)
        images, logits = G(z, c, generator=rng)
        return images, logits.float().softmax(1)

    for step in range(start + 1, config.steps + 1):
        # discriminator
        real_img, real_lab, c = batch_of(torch.randint(0, n, (config.batch,), generator=rng))
        with torch.no_grad(), autocast():
            fake_img, fake_lab = fake_batch(c)
        do_r1 = config.r1_gamma > 0 and step % config.r1_interval == 0
        real_img_a, real_lab_a = augment(real_img, real_lab, rng)
        fake_img_a, fake_lab_a = augment(fake_img.float(), fake_lab, rng)
        if do_r1:
            real_img_a = real_img_a.detach().requires_grad_(True)
            real_lab_a = real_lab_a.detach().requires_grad_(True)
        with autocast():
            real_scores = D(real_img_a, real_lab_a, c).float()
            fake_scores = D(fake_img_a, fake_lab_a, c).float()
        loss_d = d_loss(config.loss, real_scores, fake_scores)
        r1 = torch.zeros(())
        if do_r1:
            r1 = r1_penalty(real_scores, [real_img_a, real_lab_a])
            loss_d = loss_d + 0.5 * config.r1_gamma * r1 * config.r1_interval
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        ada_sum += float(torch.sign(real_scores.detach() - (0.5 if config.loss == "lsgan" else 0.0)).sum())
        ada_n += real_scores.numel()

        # generator
        _, _, c = batch_of(torch.randint(0, n, (config.batch,), generator=rng))
        with autocast():
            fake_img, fake_lab = fake_batch(c)
        fake_img_a, fake_lab_a = augment(fake_img.float(), fake_lab, rng)
        with autocast():
            loss_g = g_loss(config.loss, D(fake_img_a, fake_lab_a, c).float())
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        _ema_update(G_ema, G, ema_beta)

        ld, lg = float(loss_d.detach()), float(loss_g.detach())
        if not (math.isfinite(ld) and math.isfinite(lg)):
            raise TrainingDiverged(
                run_dir, f"non-finite loss at step {step} (D {ld}, G {lg}); stopped without "
                f"saving, the last checkpoint is intact; lower the learning rates or enable R1, then --resume"
            )
        if config.augment and step % config.ada_interval == 0 and ada_n:
            r_t = ada_sum / ada_n
            adjust = math.copysign(1.0, r_t - config.ada_target) * config.batch * config.ada_interval / config.ada_images
            augment.p.copy_((augment.p + adjust).clamp(0.0, 1.0))
            last["ada_rt"] = r_t
            ada_sum, ada_n = 0.0, 0

        last.update(step=step, d_loss=ld, g_loss=lg, r1=float(r1.detach()), ada_p=float(augment.p),
                    seconds=round(time.perf_counter() - t0, 3))
        if step % config.log_every == 0 or step == config.steps:
            with log_path.open("a") as handle:
                handle.write(json.dumps(last) + "\n")
        if progress is not None:
            progress(step, config.steps, last)
        if step % config.checkpoint_every == 0 or step == config.steps:
            if not _all_finite(G, D, G_ema):
                raise TrainingDiverged(run_dir, f"non-finite weights at step {step}; not saved, the last checkpoint is intact")
            save_generator(run_dir, G_ema, encoder, preprocess, step)
            save_train_state(run_dir, step=step, modules=modules, optimizers=optimizers, rng=rng,
                             extra={"ada_sum": ada_sum, "ada_n": ada_n, "train": asdict(config),
                                    "model": model_config.to_dict()})
            if on_checkpoint is not None:
                on_checkpoint(step, G_ema)
    return last
