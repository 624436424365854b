"""The GAN training loop: losses, lazy R1, ADA-style augmentation, EMA, checkpoints, NaN guard,
gradient accumulation, multi-process training and early stopping.

All random draws (batches, latents, noise, augmentation) come from one CPU ``torch.Generator``
seeded from the recipe and saved in the training state, so a resumed run continues exactly.
Each step draws the whole global batch; the global batch is cut into ``world size x accumulate``
micro-batches, and each process works on its own, so the result does not depend on how the
work is spread (up to the order of floating-point sums).
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

from ..atomic import atomic_write_text
from ..checkpoint import bundle_exists
from ..data.conditions import ConditionEncoder
from ..errors import Augment3DError
from ..models import Discriminator3D, Generator3D, ModelConfig, TinySegmenter
from ..models.layers import power_iteration
from ..models.segmenter import one_hot, segmentation_loss, tumour_dice_loss
from ..sampling import save_generator
from .augment import DiffAugment3D
from .distributed import World, all_reduce_grads, all_reduce_sum, init_world
from .evaluation import coarse_features, sliced_wasserstein
from .losses import (LOSSES, condition_loss, d_loss, g_loss, lecam_penalty, mode_seeking_loss, r1_penalty,
                     real_pair_ratio, scale_gradient)
from .state import TRAIN_STATE, load_train_state, save_train_state

__all__ = ["TrainConfig", "TrainingDiverged", "train_gan", "TrainingData"]

#: what the label-consistency term's pull on G's labels judges: each class, or the whole tumour
SEG_PULL_ON = ("classes", "tumour")
#: per-step decay of the running score means the LeCam regulariser anchors to (the paper's 0.99)
LECAM_DECAY = 0.99


class TrainingDiverged(Augment3DError):
    """A loss or weight became NaN/Inf; nothing was saved after the last good checkpoint."""


@dataclass(frozen=True)
class TrainConfig:
    """The ``[train]`` section of a recipe (defaults: the proposal's values).

    ``batch`` is the global batch; it is split into ``accumulate`` micro-batches per process.
    ``cond_loss`` > 0 adds an auxiliary condition classifier to D (trained on real subjects) and
    rewards G, with that weight, when D recognises the asked-for condition in its fakes.
    ``eval_every`` > 0 computes the validation metric (sliced Wasserstein distance, lower is
    better) and keeps the best EMA generator; ``patience`` > 0 stops after that many
    evaluations without improvement. ``mode_seeking`` > 0 adds the mode-seeking term with that
    weight to G's loss: each micro-batch's second half gets the first half's conditions and noise,
    and G is penalised when two latents give subjects more alike than two real subjects of one
    condition are (needs micro-batches of at least 2). ``lecam`` > 0 adds the LeCam regulariser
    with that weight to D's loss, against a D that memorises a small cohort (``lecam_penalty``).
    ``seg_consistency`` > 0 trains a small segmenter (``TinySegmenter`` of width ``seg_width``)
    on the real batch of every step and, after the first ``seg_warmup`` steps, adds its segmentation loss
    on G's subjects (judged against G's own labels) with that weight to G's loss: G's images are
    pushed to show a tumour where its labels put one, and its labels to sit where the images
    show one. ``seg_label_pull`` scales the second push (1: full, 0: the labels are S's targets
    without a gradient, left to D, and only the images answer for a disagreement).
    ``seg_pull_on`` says what the second push moves: ``"classes"`` (each class's soft Dice, so a
    small class S misses is pulled away) or ``"tumour"`` (only the whole tumour's soft Dice, with
    that weight: the labels' tumour is moved onto S's, the classes inside it are left to D).
    ``seg_augment`` trains S on the real batch as D sees it (after D's augmentation at ADA's p)
    instead of as loaded, so that S, which otherwise memorises a small cohort, judges G's
    subjects as a segmenter that has seen flipped, moved and re-contrasted tumours.
    ``style_mixing`` is the share of G's subjects (in both phases) made from two latents of the
    same condition, the first for the style inputs before a random cutoff and the second after it
    (StyleGAN's mixing regularisation; StyleGAN2 used 0.9), so neighbouring layers' styles are not
    assumed to belong together and ``SyntheticGenerator.generate(mix_seeds=...)`` mixes cleanly.
    """

    steps: int = 1000
    batch: int = 4
    accumulate: int = 1
    g_lr: float = 4e-4
    d_lr: float = 1e-4
    beta1: float = 0.0
    beta2: float = 0.99
    loss: str = "lsgan"
    r1_gamma: float = 1.0
    r1_interval: int = 16
    cond_loss: float = 0.0
    mode_seeking: float = 0.0
    lecam: float = 0.0
    seg_consistency: float = 0.0
    seg_width: int = 8
    seg_lr: float = 2e-3
    seg_warmup: int = 200
    seg_label_pull: float = 1.0
    seg_pull_on: str = "classes"
    seg_augment: bool = False
    style_mixing: float = 0.0
    ema_images: float = 2000.0
    ema_rampup: float = 0.05
    augment: bool = True
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_images: float = 5000.0
    amp: str = "none"
    channels_last: bool = True  # same values within rounding; faster on CPU at every size measured (docs/PERFORMANCE.md)
    checkpoint_every: int = 100
    log_every: int = 10
    eval_every: int = 0
    eval_samples: int = 16
    patience: int = 0
    seed: int = 0

    def __post_init__(self):
        for name in ("g_lr", "d_lr", "beta1", "beta2", "r1_gamma", "ema_images", "ema_rampup", "ada_target", "ada_images",
                     "cond_loss", "mode_seeking", "lecam", "seg_consistency", "seg_lr", "style_mixing",
                     "seg_label_pull"):
            object.__setattr__(self, name, float(getattr(self, name)))  # TOML may give ints (beta1 = 0)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        for name in ("cond_loss", "mode_seeking", "lecam", "seg_consistency"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is a loss weight and must be >= 0 (0 turns it off), got {getattr(self, name)}")
        if not 0.0 <= self.style_mixing <= 1.0:
            raise ValueError(f"style_mixing is a probability and must be in [0, 1], got {self.style_mixing}")
        if not 0.0 <= self.seg_label_pull <= 1.0:
            raise ValueError(f"seg_label_pull must be in [0, 1] (0: labels left to D, 1: full pull), got {self.seg_label_pull}")
        if self.seg_pull_on not in SEG_PULL_ON:
            raise ValueError(f"seg_pull_on must be one of {SEG_PULL_ON}, got {self.seg_pull_on!r}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"amp must be none, bf16 or fp16, got {self.amp!r}")
        if min(self.steps, self.batch, self.accumulate, self.checkpoint_every, self.log_every) < 1:
            raise ValueError("steps, batch, accumulate, checkpoint_every and log_every must be positive")

    def micro_batches(self, world: int) -> int:
        parts = world * self.accumulate
        if self.batch % parts:
            raise ValueError(f"batch {self.batch} does not split into {world} processes x {self.accumulate} accumulation steps")
        return parts


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


def _paired(x: torch.Tensor) -> torch.Tensor:
    """``x`` with its second half replaced by its first half (an odd last row kept)."""
    half = x.shape[0] // 2
    return torch.cat([x[:half], x[:half], x[2 * half:]])


def _all_finite(*modules) -> bool:
    return all(bool(torch.isfinite(p).all()) for m in modules for p in m.parameters())


class _Loop:
    """One training run's state and its step; kept apart from the checkpoint logic."""

    def __init__(self, data: TrainingData, model_config: ModelConfig, config: TrainConfig, device: str, world: World,
                 groups: list[int] | None = None):
        self.data, self.mc, self.cfg, self.device, self.world = data, model_config, config, device, world
        #: categories per condition column; the condition classifier is used when there is one
        self.groups = list(groups or [])
        self.classify = config.cond_loss > 0 and bool(self.groups)
        self.rng = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)  # initial weights: the same on every rank
        self.G = Generator3D(model_config).to(device)
        self.D = Discriminator3D(model_config, classifier=self.classify).to(device)
        self.G.channels_last = self.D.channels_last = config.channels_last
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        #: the label-consistency segmenter, trained on real subjects only (None when off)
        self.S = (TinySegmenter(model_config.image_channels, model_config.label_classes, config.seg_width).to(device)
                  if config.seg_consistency > 0 else None)
        self.augment = DiffAugment3D().to(device)
        betas = (config.beta1, config.beta2)
        ratio = config.r1_interval / (config.r1_interval + 1)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=config.g_lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.d_lr * ratio, betas=(betas[0] ** ratio, betas[1] ** ratio))
        self.opt_s = None if self.S is None else torch.optim.Adam(self.S.parameters(), lr=config.seg_lr)
        self.parts = config.micro_batches(world.size)
        self.micro = config.batch // self.parts
        if config.mode_seeking > 0 and self.micro < 2:
            raise ValueError(f"mode_seeking needs pairs of samples: batch {config.batch} over {self.parts} micro-batches "
                             f"leaves {self.micro} per micro-batch; use a larger batch or fewer accumulation steps")
        #: the mode-seeking term stops pulling pairs apart once they differ as much as real subjects
        self.ms_cap = math.inf if config.mode_seeking <= 0 else real_pair_ratio(
            lambda i: torch.cat(self._real([i])[:2], 1)[0], data.conditions, torch.Generator().manual_seed(config.seed))
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        self.ada_sum, self.ada_n = 0.0, 0
        #: running means of D's real and fake scores, for the LeCam regulariser (saved with the state)
        self.lecam_real, self.lecam_fake = 0.0, 0.0

    def ema_beta(self, step: int) -> float:
        """EMA decay per step: half-life ``ema_images``, ramped up with the images seen so far."""
        images = self.cfg.ema_images
        if self.cfg.ema_rampup > 0:
            images = min(images, step * self.cfg.batch * self.cfg.ema_rampup)
        return 0.5 ** (self.cfg.batch / max(images, 1e-8))

    @property
    def modules(self):
        extra = {} if self.S is None else {"S": self.S}
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema, "augment": self.augment, **extra}

    @property
    def optimizers(self):
        extra = {} if self.opt_s is None else {"S": self.opt_s}
        return {"G": self.opt_g, "D": self.opt_d, **extra}

    def autocast(self):
        return torch.autocast(torch.device(self.device).type, dtype=self.dtype, enabled=self.dtype is not None)

    def _draw(self):
        """Everything random for one phase, for the whole global batch."""
        b, shape = self.cfg.batch, self.mc.shape
        draw = {
            "idx": torch.randint(0, self.data.images.shape[0], (b,), generator=self.rng),
            "z": torch.randn(b, self.mc.z_dim, generator=self.rng),
            "noise": self.G.make_noise(b, self.rng),
            "aug_fake": self.augment.draw(b, shape, self.rng),
            "aug_real": self.augment.draw(b, shape, self.rng),
        }
        if self.cfg.style_mixing > 0:  # drawn only when on: runs without it keep their random stream
            mixed = torch.rand(b, generator=self.rng) < self.cfg.style_mixing
            cutoff = torch.randint(1, self.G.num_ws, (b,), generator=self.rng)
            draw["z_mix"] = torch.randn(b, self.mc.z_dim, generator=self.rng)
            draw["mix_cutoff"] = torch.where(mixed, cutoff, self.G.num_ws)
        return draw

    def _my_slices(self):
        for a in range(self.cfg.accumulate):
            part = self.world.rank * self.cfg.accumulate + a
            yield part * self.micro, (part + 1) * self.micro

    def _real(self, idx):
        images = self.data.images[idx].to(self.device)
        onehot = one_hot(self.data.labels[idx], self.mc.label_classes).to(self.device)
        return images, onehot, self.data.conditions[idx].to(self.device)

    def _fake(self, draw, lo, hi, c, paired: bool = False):
        """G's subjects for ``draw``'s slice; ``paired`` gives the second half the first half's noise."""
        pair = _paired if paired else (lambda x: x)
        z = draw["z"][lo:hi].to(self.device)
        noise = [pair(n[lo:hi]).to(self.device) for n in draw["noise"]]
        w = self.G.mapping(z, c)
        if "z_mix" in draw:  # the second latent and the cutoff are shared by a pair, as the noise is
            w_mix = self.G.mapping(pair(draw["z_mix"][lo:hi]).to(self.device), c)
            w = self.G.mix_styles(w, w_mix, pair(draw["mix_cutoff"][lo:hi]).to(self.device))
        images, logits = self.G.from_w(w, noise)
        probs = logits.float().softmax(1)
        # straight-through: D sees a hard one-hot map like the real labels (a soft map alone
        # would tell D which input is fake), while G gets the softmax's gradient
        hard = one_hot(probs.max(1).indices, self.mc.label_classes).to(probs.dtype)  # argmax(1), faster on CPU
        return images.float(), hard + probs - probs.detach()

    def _judge(self, images, labels, c, classes: bool = False):
        """D's scores (fp32) and, with ``classes`` and a classifier, its condition loss (else 0)."""
        classes = classes and self.classify
        with self.autocast():
            out = self.D(images, labels, c, classes=classes)
        if not classes:
            return out.float(), torch.zeros((), device=out.device)
        scores, logits = out
        return scores.float(), condition_loss(logits, c, self.groups)

    def _label_consistency(self, images, labels) -> torch.Tensor:
        """S's verdict on G's subjects: its loss on G's images against G's labels (see TrainConfig)."""
        cfg, logits = self.cfg, self.S(images)
        if cfg.seg_pull_on == "classes":
            return segmentation_loss(logits, scale_gradient(labels, cfg.seg_label_pull))
        pull = cfg.seg_label_pull * tumour_dice_loss(logits.detach(), labels) if cfg.seg_label_pull > 0 else 0.0
        return segmentation_loss(logits, labels.detach()) + pull

    def _train_segmenter(self, images, onehot, scale: float) -> float:
        """Accumulate S's gradient on a real micro-batch; its loss, weighted for the step's mean."""
        seg = segmentation_loss(self.S(images.detach()), onehot.detach())
        (seg * scale).backward()
        return float(seg.detach()) * scale

    def step(self, step: int) -> dict:
        cfg, scale = self.cfg, 1.0 / self.parts
        do_r1 = cfg.r1_gamma > 0 and step % cfg.r1_interval == 0
        power_iteration(self.D)  # spectral norm's u, v: once a step, however the batch is split (no-op without)
        # discriminator
        draw = self._draw()
        self.opt_d.zero_grad(set_to_none=True)
        totals = [0.0] * 8  # D loss, R1, sum of signs, count, D's condition loss, mean real and fake score, S's loss
        if self.S is not None:
            self.opt_s.zero_grad(set_to_none=True)
        for lo, hi in self._my_slices():
            real_img, real_lab, c = self._real(draw["idx"][lo:hi])
            if self.S is not None and not cfg.seg_augment:  # on the real subjects as loaded
                totals[7] += self._train_segmenter(real_img, real_lab, scale)
            with torch.no_grad(), self.autocast():
                fake_img, fake_lab = self._fake(draw, lo, hi, c)
            real_img, real_lab = self.augment.apply(real_img, real_lab, DiffAugment3D.slice(draw["aug_real"], lo, hi))
            if self.S is not None and cfg.seg_augment:  # on the real subjects as D sees them
                totals[7] += self._train_segmenter(real_img, real_lab, scale)
            fake_img, fake_lab = self.augment.apply(fake_img, fake_lab, DiffAugment3D.slice(draw["aug_fake"], lo, hi))
            if do_r1:
                real_img, real_lab = real_img.detach().requires_grad_(True), real_lab.detach().requires_grad_(True)
            real_scores, cond = self._judge(real_img, real_lab, c, classes=True)
            fake_scores, _ = self._judge(fake_img, fake_lab, c)
            loss = d_loss(cfg.loss, real_scores, fake_scores)
            total = loss + cfg.cond_loss * cond
            if cfg.lecam > 0:
                total = total + cfg.lecam * lecam_penalty(real_scores, fake_scores, self.lecam_real, self.lecam_fake)
            totals[4] += float(cond.detach()) * scale
            totals[5] += float(real_scores.detach().mean()) * scale
            totals[6] += float(fake_scores.detach().mean()) * scale
            if do_r1:
                r1 = r1_penalty(real_scores, [real_img, real_lab])
                total = total + 0.5 * cfg.r1_gamma * r1 * cfg.r1_interval
                totals[1] += float(r1.detach()) * scale
            (total * scale).backward()
            totals[0] += float(loss.detach()) * scale
            threshold = 0.5 if cfg.loss == "lsgan" else 0.0
            totals[2] += float(torch.sign(real_scores.detach() - threshold).sum())
            totals[3] += real_scores.numel()
        all_reduce_grads(self.D, self.world)
        self.opt_d.step()
        if self.S is not None:
            all_reduce_grads(self.S, self.world)
            self.opt_s.step()

        # generator
        draw = self._draw()
        self.opt_g.zero_grad(set_to_none=True)
        g_total, g_cond, g_ms, g_seg = 0.0, 0.0, 0.0, 0.0
        use_seg = self.S is not None and step > cfg.seg_warmup
        if self.S is not None:
            self.S.requires_grad_(False)  # G's loss passes through S but does not train it
        paired = cfg.mode_seeking > 0  # pairs (i, i + half) share condition and noise, differ in z
        for lo, hi in self._my_slices():
            _, _, c = self._real(draw["idx"][lo:hi])
            c = _paired(c) if paired else c
            with self.autocast():
                fake_img, fake_lab = self._fake(draw, lo, hi, c, paired)
            ms = fake_img.new_zeros(())
            if paired:  # compared as users get them: clamped to [-1, 1], where -1.5 and -2 are the same black
                outputs = torch.cat([fake_img.clamp(-1, 1), fake_lab], 1)
                ms = mode_seeking_loss(outputs, draw["z"][lo:hi].to(self.device), self.ms_cap)
            seg = fake_img.new_zeros(())
            if use_seg:
                seg = self._label_consistency(fake_img, fake_lab)
            fake_img, fake_lab = self.augment.apply(fake_img, fake_lab, DiffAugment3D.slice(draw["aug_fake"], lo, hi))
            scores, cond = self._judge(fake_img, fake_lab, c, classes=True)
            loss = g_loss(cfg.loss, scores)
            ((loss + cfg.cond_loss * cond + cfg.mode_seeking * ms + cfg.seg_consistency * seg) * scale).backward()
            g_seg += float(seg.detach()) * scale
            g_cond += float(cond.detach()) * scale
            g_total += float(loss.detach()) * scale
            g_ms += float(ms.detach()) * scale
        if self.S is not None:
            self.S.requires_grad_(True)
        all_reduce_grads(self.G, self.world)
        self.opt_g.step()
        _ema_update(self.G_ema, self.G, self.ema_beta(step))

        d_val, r1_val, signs, count, d_cond, real_mean, fake_mean, s_val, g_val, g_cond, g_ms, g_seg = all_reduce_sum(
            [*totals, g_total, g_cond, g_ms, g_seg], self.world)
        self.lecam_real += (1.0 - LECAM_DECAY) * (real_mean - self.lecam_real)
        self.lecam_fake += (1.0 - LECAM_DECAY) * (fake_mean - self.lecam_fake)
        self.ada_sum += signs
        self.ada_n += int(count)
        metrics = {"step": step, "d_loss": d_val, "g_loss": g_val, "r1": r1_val if do_r1 else None}
        if self.classify:
            metrics["d_cond"], metrics["g_cond"] = d_cond, g_cond
        if cfg.mode_seeking > 0:
            metrics["mode_seeking"] = g_ms
        if self.S is not None:
            metrics["seg_real"] = s_val
            metrics["seg_fake"] = g_seg if use_seg else None
        if cfg.augment and step % cfg.ada_interval == 0 and self.ada_n:
            r_t = self.ada_sum / self.ada_n
            adjust = math.copysign(1.0, r_t - cfg.ada_target) * cfg.batch * cfg.ada_interval / cfg.ada_images
            self.augment.p.copy_((self.augment.p + adjust).clamp(0.0, 1.0))
            metrics["ada_rt"] = r_t
            self.ada_sum, self.ada_n = 0.0, 0
        metrics["ada_p"] = float(self.augment.p)
        return metrics

    @torch.no_grad()
    def evaluate(self) -> float:
        """Sliced Wasserstein distance between EMA samples (fixed seeds) and the training data."""
        n = min(self.cfg.eval_samples, self.data.images.shape[0] * 4)
        g = torch.Generator().manual_seed(12345)
        idx = torch.randint(0, self.data.images.shape[0], (n,), generator=g)
        z = torch.randn(n, self.mc.z_dim, generator=g)
        noise = self.G_ema.make_noise(n, g)
        c = self.data.conditions[idx].to(self.device)
        images, logits = self.G_ema.from_w(self.G_ema.mapping(z.to(self.device), c), [x.to(self.device) for x in noise])
        fake = coarse_features(images.float().clamp(-1, 1).cpu(), logits.float().softmax(1).cpu())
        real = coarse_features(self.data.images, one_hot(self.data.labels, self.mc.label_classes))
        return sliced_wasserstein(real, fake)


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
    """Train (or resume) a conditional 3D StyleGAN; returns the last step's metrics.

    Under ``torchrun`` every process calls this with the same arguments; only rank 0 writes.
    """
    run_dir = Path(run_dir)
    world = init_world(device)
    loop = _Loop(data, model_config, config, device, world, encoder.sizes)
    start, best, bad_evals = 0, math.inf, 0
    if resume and bundle_exists(run_dir, TRAIN_STATE):
        meta = load_train_state(run_dir, modules=loop.modules, optimizers=loop.optimizers, rng=loop.rng)
        start = meta["step"]
        loop.ada_sum, loop.ada_n = meta.get("ada_sum", 0.0), meta.get("ada_n", 0)
        loop.lecam_real, loop.lecam_fake = meta.get("lecam_real", 0.0), meta.get("lecam_fake", 0.0)
        best, bad_evals = meta.get("best_metric", math.inf), meta.get("bad_evals", 0)
    log_path = run_dir / "log.jsonl"
    if world.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if start == 0 and log_path.exists():
            log_path.unlink()
        elif log_path.exists():  # a killed run logged steps after its last checkpoint: they are redone
            kept = [line for line in log_path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= start]
            atomic_write_text(log_path, "".join(line + "\n" for line in kept))
    evaluating = config.eval_every > 0
    last: dict = {}
    t0 = time.perf_counter()

    def checkpoint(step: int, save_generator_now: bool) -> None:
        if not _all_finite(loop.G, loop.D, loop.G_ema):
            raise TrainingDiverged(run_dir, f"non-finite weights at step {step}; not saved, the last checkpoint is intact")
        if not world.main:
            return
        if save_generator_now:
            save_generator(run_dir, loop.G_ema, encoder, preprocess, step)
        save_train_state(run_dir, step=step, modules=loop.modules, optimizers=loop.optimizers, rng=loop.rng,
                         extra={"ada_sum": loop.ada_sum, "ada_n": loop.ada_n, "lecam_real": loop.lecam_real,
                                "lecam_fake": loop.lecam_fake, "best_metric": best,
                                "bad_evals": bad_evals, "train": asdict(config), "model": model_config.to_dict()})
        if on_checkpoint is not None:
            on_checkpoint(step, loop.G_ema)

    for step in range(start + 1, config.steps + 1):
        metrics = loop.step(step)
        if not (math.isfinite(metrics["d_loss"]) and math.isfinite(metrics["g_loss"])):
            raise TrainingDiverged(
                run_dir, f"non-finite loss at step {step} (D {metrics['d_loss']}, G {metrics['g_loss']}); stopped "
                "without saving, the last checkpoint is intact; lower the learning rates or raise r1_gamma, then --resume"
            )
        stop = False
        improved = False
        if evaluating and step % config.eval_every == 0:
            value = loop.evaluate()
            metrics["val_swd"] = value
            improved = value < best
            best, bad_evals = (value, 0) if improved else (best, bad_evals + 1)
            stop = config.patience > 0 and bad_evals >= config.patience
            metrics["early_stop"] = stop
        metrics["seconds"] = round(time.perf_counter() - t0, 3)
        last = metrics
        if world.main and (step % config.log_every == 0 or step == config.steps or "val_swd" in metrics):
            with log_path.open("a") as handle:
                handle.write(json.dumps(metrics) + "\n")
        if progress is not None and world.main:
            progress(step, config.steps, metrics)
        if stop or step % config.checkpoint_every == 0 or step == config.steps or improved:
            keep_best = improved or not evaluating or not bundle_exists(run_dir, "generator")
            checkpoint(step, save_generator_now=keep_best)
        if stop:
            break
    return last
