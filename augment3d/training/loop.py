"""The GAN training step, in the shape of StyleGAN2-ADA's loop.

Setup builds G, D, the EMA copy of G, the extra loss terms, D's adaptive augmentation and the
optimisers. Each step then runs:

1. **D phase**: adversarial loss on augmented real and fake subjects, plus R1 every
   ``r1_interval`` steps; the terms see the real batch (the label-consistency segmenter trains on it).
2. **G phase**: adversarial loss on augmented fakes, plus each active term times its weight.
3. **EMA** of G's weights.
4. **ADA tick**: D's augmentation probability follows r_t.

All random draws (batches, latents, noise, augmentation) come from one CPU ``torch.Generator``
seeded from the recipe and saved in the training state, so a resumed run continues exactly. On a
GPU the per-voxel noise is drawn there, from a GPU generator seeded by a draw from that stream
(on the CPU it took the host 0.28 s of a 2.0 s step at 128^3 on an H200), so a GPU run's stream
differs from a CPU run's but is as reproducible. Host-to-GPU copies do not wait for the GPU, and
the step's figures are read once at its end, so the host queues work while the GPU runs.

Each phase draws the whole global batch; the global batch is cut into ``world size x
accumulate`` micro-batches and each process works on its own, so the result does not depend on
how the work is spread (up to the order of floating-point sums).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import numpy as np
import torch

from ..data.conditions import ConditionEncoder
from ..models import Discriminator3D, Generator3D, ModelConfig
from ..models.architecture import JOINT_NOT_TRAINED
from ..models.layers import power_iteration
from ..data.batched import Batched
from ..data.label_deformation import Deformation, deform_maps, draw_deformations
from ..models.segmenter import one_hot
from ..precision import auto_amp
from ..models.spatial_conditioning import brain_masks, inpaint_maps, label_maps, tumour_regions
from .adaptive_augment import AdaptiveAugment3D, AugmentParams, AugmentTuner
from .distributed import World, all_reduce_grads
from .early_stopping import EarlyStopping, coarse_features, sliced_wasserstein
from .losses import d_loss, g_loss, r1_penalty, real_sign_threshold
from .state import TrainState
from .stats import StepStats
from .terms import build_terms
from .terms.base import Fakes, LossTerm, TermContext
from .terms.texture_match import condition_combinations
from .train_config import TrainConfig

__all__ = ["TrainingData", "TrainingLoop", "brain_masks", "maps_to_onehot"]


#: inpaint mode: the most voxels a tumour grows into the region G renders (drawn 1..MAX_GROW per
#: subject), and the growth the validation metric renders with
MAX_GROW = 3
VALIDATION_GROW = 2


def maps_to_onehot(maps: torch.Tensor) -> torch.Tensor:
    """Label maps (mask, tumour classes) -> the label one-hot (background, tumour classes) D sees."""
    tumour = maps[:, 1:]
    return torch.cat([1.0 - tumour.sum(1, keepdim=True), tumour], 1)


@dataclass(frozen=True)
class RegionDraw(Batched):
    """Inpaint mode: the region G renders in each crop: the tumour grown by ``grow`` voxels, or
    where ``ball`` is set a ball of the crop's sixth plus ``grow`` around ``centre`` (voxels)."""

    grow: torch.Tensor
    ball: torch.Tensor
    centre: torch.Tensor

    @classmethod
    def draw(cls, batch: int, shape, ball_share: float, rng: torch.Generator) -> RegionDraw:
        """``batch`` regions for crops of ``shape``: growth 1..MAX_GROW, a ball with probability
        ``ball_share``, its centre in the crop's central half; drawn from ``rng`` in this order."""
        grow = torch.randint(1, MAX_GROW + 1, (batch,), generator=rng)
        ball = torch.rand(batch, generator=rng) < ball_share
        side = torch.tensor(shape, dtype=torch.float32)
        return cls(grow, ball, side / 4 + torch.rand(batch, 3, generator=rng) * side / 2)

    def regions(self, labels: torch.Tensor) -> torch.Tensor:
        """The regions (B, X, Y, Z) of crops with these ``labels``, where the labels are."""
        where = self.to(labels.device)
        return tumour_regions(labels, where.grow, labels.shape[1] / 6, where.ball, where.centre)


@dataclass(frozen=True)
class PhaseDraw(Batched):
    """Everything random in one D or G phase, drawn for the global batch and sliced per micro-batch:
    the real subjects (``idx``; G renders their maps, deformed, or in inpaint mode a region of
    their crops), G's latents and noise, the two ADA draws, the conditions G renders under;
    optional parts are None when their option or mode is off."""

    idx: torch.Tensor
    z: torch.Tensor
    noise: list[torch.Tensor]
    aug_fake: AugmentParams
    aug_real: AugmentParams
    cond: torch.Tensor
    #: labels mode: how each subject's label map is deformed before G renders it
    deform: Deformation | None
    z_mix: torch.Tensor | None = None
    mix_cutoff: torch.Tensor | None = None
    #: inpaint mode: the region of each subject's crop G renders
    region: RegionDraw | None = None


@dataclass
class TrainingData:
    """Prepared tensors: images (N, 4, X, Y, Z) in [-1, 1], labels (N, X, Y, Z) int64, conditions
    (N, C) and brain masks (N, X, Y, Z) bool (by default every voxel where an image is above -1)."""

    images: torch.Tensor
    labels: torch.Tensor
    conditions: torch.Tensor
    masks: torch.Tensor = None  # type: ignore[assignment]  # None: brain_masks(images), set on construction
    #: the subjects' ids, recorded with a labels-to-images run's label maps
    subject_ids: list[str] | None = None

    def __post_init__(self):
        if self.masks is None:
            self.masks = brain_masks(self.images)

    def maps(self, idx, device: torch.device | str = "cpu") -> torch.Tensor:
        """The label maps of subjects ``idx`` as a labels-to-images generator takes them (made on ``device``)."""
        return label_maps(self.labels[idx].to(device, non_blocking=True), self.masks[idx].to(device, non_blocking=True))

    @classmethod
    def from_cases(cls, cases, encoder: ConditionEncoder) -> TrainingData:
        images = torch.from_numpy(np.stack([c.images for c in cases]))
        labels = torch.from_numpy(np.stack([c.label for c in cases]).astype(np.int64))
        conds = torch.from_numpy(encoder.encode([c.conditions for c in cases]))
        return cls(images, labels, conds, subject_ids=[c.subject_id for c in cases])


def _paired(x: torch.Tensor) -> torch.Tensor:
    """``x`` with its second half replaced by its first half (an odd last row kept)."""
    half = x.shape[0] // 2
    return torch.cat([x[:half], x[:half], x[2 * half :]])


class TrainingLoop:
    """One training run's networks, optimisers, terms and random stream, and its step."""

    def __init__(self, data: TrainingData, model_config: ModelConfig, config: TrainConfig, device: str, world: World = World()):
        if model_config.mode == "joint":
            raise ValueError(f"mode {model_config.mode!r}: {JOINT_NOT_TRAINED}")
        self.data, self.mc, self.cfg, self.device, self.world = data, model_config, config, device, world
        self.parts = config.micro_batches(world.size)
        self.micro, self.scale = config.batch // self.parts, 1.0 / self.parts
        self.rng = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)  # initial weights: the same on every rank
        self.G = Generator3D(model_config).to(device)
        self.D = Discriminator3D(model_config).to(device)
        self.G.channels_last = self.D.channels_last = config.channels_last
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.augment = AdaptiveAugment3D().to(device)
        self.tuner = AugmentTuner(
            self.augment, config.ada_target, config.ada_interval, config.ada_images, config.batch, enabled=config.augment
        )
        self.stopping = EarlyStopping(config.eval_every, config.patience)
        betas, lazy = (config.beta1, config.beta2), config.r1_interval / (config.r1_interval + 1)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=config.g_lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.d_lr * lazy, betas=(betas[0] ** lazy, betas[1] ** lazy))
        #: the autocast actually used (``auto`` resolved for this machine)
        self.amp = auto_amp(config.amp, device)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)
        context = TermContext(data, model_config, self.micro, config.seed, device, self.dtype, config.channels_last)
        self.terms: list[LossTerm] = build_terms(config.terms, context)
        #: the condition combinations the training data holds, each drawn equally often by condition_swap
        self.combos = condition_combinations(data.conditions)[0]

    def state(self) -> TrainState:
        """Everything a checkpoint holds: the one description that saving and resuming use."""
        modules = {"G": self.G, "D": self.D, "G_ema": self.G_ema, "augment": self.augment}
        optimizers: dict[str, torch.optim.Optimizer] = {"G": self.opt_g, "D": self.opt_d}
        for term in self.terms:
            modules.update(term.networks())
            optimizers.update(term.optimizers())
        return TrainState(modules, optimizers, self.rng, [self.tuner, self.stopping])

    def step(self, step: int) -> dict:
        """One optimiser step of D, then G; returns the step's figures for the log."""
        stats = StepStats()
        r1_now = self.cfg.r1_gamma > 0 and step % self.cfg.r1_interval == 0
        self.d_phase(r1_now, stats)
        self.g_phase(step, stats)
        self.ema_update(step)
        figures = stats.reduce(self.world)
        self.tuner.accumulate(figures.pop("ada_signs"), figures.pop("ada_count"))
        r_t = self.tuner.tick(step)
        return {"step": step, **figures, **({} if r_t is None else {"ada_rt": r_t}), "ada_p": float(self.augment.p)}

    def d_phase(self, r1_now: bool, stats: StepStats) -> None:
        power_iteration(self.D)  # spectral norm's u, v: once a step, however the batch is split (no-op without)
        whole = self._draw()
        self.opt_d.zero_grad(set_to_none=True)
        for term in self.terms:
            term.begin_d_phase()
        for lo, hi in self._my_slices():
            draw = whole.slice(lo, hi)
            real_img, real_lab, c = self._real(draw.idx)
            for term in self.terms:
                term.on_real(real_img, real_lab, self.scale, stats)
            c_fake = self._to_device(draw.cond)
            with torch.no_grad(), self.autocast():
                fake_img, fake_lab, _, _ = self._fake(draw, c_fake)
            real = self.augment.apply(real_img, real_lab, draw.aug_real)
            fake = self.augment.apply(fake_img, fake_lab, draw.aug_fake)
            (self._d_loss(real, fake, c, c_fake, r1_now, stats) * self.scale).backward()
        all_reduce_grads(self.D, self.world)
        self.opt_d.step()
        for term in self.terms:
            term.end_d_phase(self.world)

    def _d_loss(self, real, fake, c_real, c_fake, r1_now: bool, stats: StepStats) -> torch.Tensor:
        real_img, real_lab = real
        if r1_now:
            real_img, real_lab = real_img.detach().requires_grad_(True), real_lab.detach().requires_grad_(True)
        real_scores = self._judge(real_img, real_lab, c_real)
        loss = d_loss(self.cfg.loss, real_scores, self._judge(fake[0], fake[1], c_fake))
        stats.add("d_loss", loss, self.scale)
        stats.add("ada_signs", torch.sign(real_scores.detach() - real_sign_threshold(self.cfg.loss)).sum())
        stats.add("ada_count", real_scores.numel())
        if r1_now:
            r1 = r1_penalty(real_scores, [real_img, real_lab])
            stats.add("r1", r1, self.scale)
            loss = loss + 0.5 * self.cfg.r1_gamma * r1 * self.cfg.r1_interval
        return loss

    def g_phase(self, step: int, stats: StepStats) -> None:
        whole = self._draw()
        self.opt_g.zero_grad(set_to_none=True)
        active = [term for term in self.terms if term.active(step)]
        paired = any(term.pairs for term in self.terms)  # pairs (i, i + half) share condition and noise
        with contextlib.ExitStack() as frozen:
            for term in self.terms:
                frozen.enter_context(term.g_phase())
            for lo, hi in self._my_slices():
                draw = whole.slice(lo, hi)
                c = self._to_device(draw.cond)
                c = _paired(c) if paired else c
                with self.autocast():
                    fake_img, fake_lab, crops, regions = self._fake(draw, c, paired)
                fakes = Fakes(fake_img, fake_lab, self._to_device(draw.z), c, crops, regions)
                extra = [(term, term.loss(fakes)) for term in active]
                fake = self.augment.apply(fake_img, fake_lab, draw.aug_fake)
                loss = g_loss(self.cfg.loss, self._judge(*fake, c))
                stats.add("g_loss", loss, self.scale)
                for term, value in extra:
                    stats.add(term.name, value, self.scale)
                    loss = loss + term.weight * value
                (loss * self.scale).backward()
        all_reduce_grads(self.G, self.world)
        self.opt_g.step()

    def ema_update(self, step: int) -> None:
        beta = self.ema_beta(step)
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.lerp_(p, 1.0 - beta)
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)

    def ema_beta(self, step: int) -> float:
        """EMA decay per step: half-life ``ema_images``, ramped up with the images seen so far."""
        images = self.cfg.ema_images
        if self.cfg.ema_rampup > 0:
            images = min(images, step * self.cfg.batch * self.cfg.ema_rampup)
        return 0.5 ** (self.cfg.batch / max(images, 1e-8))

    def autocast(self):
        return torch.autocast(torch.device(self.device).type, dtype=self.dtype, enabled=self.dtype is not None)

    def _draw(self) -> PhaseDraw:
        """Everything random for one phase, for the whole global batch (drawn in this order)."""
        b, shape = self.cfg.batch, self.mc.shape
        idx = torch.randint(0, self.data.images.shape[0], (b,), generator=self.rng)
        z = torch.randn(b, self.mc.z_dim, generator=self.rng)
        noise = self._noise(b)
        aug_fake = self.augment.draw(b, shape, self.rng)
        aug_real = self.augment.draw(b, shape, self.rng)
        z_mix = mix_cutoff = None
        if self.cfg.style_mixing > 0:  # drawn only when on: runs without it keep their random stream
            mixed = torch.rand(b, generator=self.rng) < self.cfg.style_mixing
            cutoff = torch.randint(1, self.G.num_ws, (b,), generator=self.rng)
            z_mix = torch.randn(b, self.mc.z_dim, generator=self.rng)
            mix_cutoff = torch.where(mixed, cutoff, self.G.num_ws)
        deform = region = None
        if self.G.inpaints:  # the fakes render a region of the batch's own crops, the rest kept
            region = RegionDraw.draw(b, shape, self.cfg.ball_regions, self.rng)
        else:  # the fakes render the batch's own maps, deformed
            deform = draw_deformations(b, self.rng)
        cond = self.data.conditions[idx]  # G renders each map under its own subject's conditions...
        if self.cfg.condition_swap > 0:  # ...or a swapped combination (drawn only when on, as above)
            swapped = torch.rand(b, generator=self.rng) < self.cfg.condition_swap
            combo = self.combos[torch.randint(0, self.combos.shape[0], (b,), generator=self.rng)]
            cond = torch.where(swapped[:, None], combo, cond)
        return PhaseDraw(idx, z, noise, aug_fake, aug_real, cond, deform, z_mix, mix_cutoff, region)

    def _noise(self, batch: int) -> list[torch.Tensor]:
        """G's per-voxel noise for ``batch`` subjects: from the loop's stream on the CPU; on a GPU,
        drawn there from a seed that stream gives."""
        if torch.device(self.device).type == "cpu":
            return self.G.make_noise(batch, self.rng)
        seed = int(torch.randint(0, 2**62, (1,), generator=self.rng))
        return self.G.make_noise(batch, torch.Generator(self.device).manual_seed(seed), self.device)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True)  # a host-to-GPU copy need not wait for the GPU

    def _my_slices(self):
        for a in range(self.cfg.accumulate):
            part = self.world.rank * self.cfg.accumulate + a
            yield part * self.micro, (part + 1) * self.micro

    def _real(self, idx):
        images = self._to_device(self.data.images[idx])
        onehot = one_hot(self._to_device(self.data.labels[idx]), self.mc.label_classes)
        return images, onehot, self._to_device(self.data.conditions[idx])

    def _inputs(self, idx, deform: Deformation | None, region: RegionDraw | None):
        """G's spatial input for subjects ``idx`` (made where G runs): their label maps, deformed;
        or in inpaint mode their maps and crops with the region to render; and (inpaint) the crops
        and the regions, else None."""
        maps = self.data.maps(idx, self.device)
        if region is None:
            return (maps if deform is None else deform_maps(maps, deform, grid_device=self.device)), None, None
        images = self._to_device(self.data.images[idx])
        regions = region.regions(self._to_device(self.data.labels[idx]))
        return inpaint_maps(maps, images, regions), images, regions

    def _fake(self, draw: PhaseDraw, c, paired: bool = False):
        """G's subjects for a (sliced) ``draw``: images, label one-hots and (inpaint mode) the real
        crops and rendered regions; ``paired`` gives the second half the first half's noise (and
        maps): a pair differs only in z."""
        pair = _paired if paired else (lambda x: x)
        noise = [self._to_device(pair(n)) for n in draw.noise]
        w = self.G.mapping(self._to_device(draw.z), c)
        if draw.z_mix is not None and draw.mix_cutoff is not None:  # shared by a pair, as the noise is
            w_mix = self.G.mapping(self._to_device(pair(draw.z_mix)), c)
            w = self.G.mix_styles(w, w_mix, self._to_device(pair(draw.mix_cutoff)))
        maps, crops, regions = self._inputs(draw.idx, draw.deform, draw.region)
        maps = pair(maps)
        crops, regions = (None, None) if crops is None or regions is None else (pair(crops), pair(regions))
        images, _ = self.G.from_w(w, noise, maps)
        return images.float(), maps_to_onehot(maps[:, : self.mc.label_classes]), crops, regions

    def _judge(self, images, labels, c) -> torch.Tensor:
        """D's scores, in fp32."""
        with self.autocast():
            return self.D(images, labels, c).float()

    @torch.no_grad()
    def validation_swd(self) -> float:
        """Sliced Wasserstein distance between EMA samples (fixed seeds) and the training data."""
        n = min(self.cfg.eval_samples, self.data.images.shape[0] * 4)
        g = torch.Generator().manual_seed(12345)
        idx = torch.randint(0, self.data.images.shape[0], (n,), generator=g)
        z = torch.randn(n, self.mc.z_dim, generator=g)
        noise = self.G_ema.make_noise(n, g)
        c = self.data.conditions[idx].to(self.device)
        region = None
        if self.G_ema.inpaints:  # each crop's tumour grown by VALIDATION_GROW
            middle = torch.tensor([(side - 1) / 2 for side in self.mc.shape]).expand(n, 3)
            region = RegionDraw(torch.full((n,), VALIDATION_GROW), torch.zeros(n, dtype=torch.bool), middle)
        maps = self._inputs(idx, None, region)[0]
        images, _ = self.G_ema.from_w(self.G_ema.mapping(z.to(self.device), c), [x.to(self.device) for x in noise], maps)
        labels = maps_to_onehot(maps[:, : self.mc.label_classes])  # its labels: the maps it was given
        fake = coarse_features(images.float().clamp(-1, 1).cpu(), labels.cpu())
        real = coarse_features(self.data.images, one_hot(self.data.labels, self.mc.label_classes))
        return sliced_wasserstein(real, fake)
