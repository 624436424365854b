"""``TrainConfig``: the ``[train]`` section of a recipe (torch-free, so reading a recipe is cheap)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config.field_types import enforce_field_types
from .terms.settings import Terms

__all__ = ["TrainConfig", "LOSSES", "AMP_MODES"]

#: adversarial losses: LSGAN (the proposal's default) and StyleGAN's non-saturating logistic loss
LOSSES = ("lsgan", "nonsaturating")
AMP_MODES = ("auto", "none", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the defaults are the proposal's values. docs/MODEL.md says what each
    does and what was measured with it."""

    #: optimiser steps; each step trains D, then G, on one global batch
    steps: int = 1000
    #: the global batch, cut into processes x ``accumulate`` micro-batches
    batch: int = 4
    accumulate: int = 1
    g_lr: float = 4e-4
    d_lr: float = 1e-4
    beta1: float = 0.0
    beta2: float = 0.99
    loss: str = "lsgan"
    #: lazy R1 gradient penalty on D's real inputs: its weight gamma, applied every ``r1_interval`` steps
    r1_gamma: float = 1.0
    r1_interval: int = 16
    #: share of G's subjects rendered under a condition drawn apart from their label
    #: map (each site/grade combination of the training data equally likely) instead of the map's
    #: own subject's; without it G can read the site off the map and ignore the condition, and the
    #: augmenter's restyle (a HIC map asked for SSA) then stays HIC (docs/MODEL.md)
    condition_swap: float = 0.0
    #: share of G's subjects made from two latents of one condition (StyleGAN's mixing regularisation)
    style_mixing: float = 0.0
    #: generator EMA: half-life in images, ramped up over the first ``ema_rampup`` x images seen
    ema_images: float = 2000.0
    ema_rampup: float = 0.05
    #: D's adaptive augmentation: on/off, target of r_t = E[sign(D(real))], how often and how fast p moves
    augment: bool = True
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_images: float = 5000.0
    #: autocast precision (``auto``: bf16 where the hardware has it, else none; ``none``, ``bf16``,
    #: ``fp16``) and the channels-last memory layout
    amp: str = "none"
    channels_last: bool = True
    checkpoint_every: int = 100
    log_every: int = 10
    #: early stopping: validation metric every ``eval_every`` steps (0: never) on ``eval_samples``
    #: EMA samples; stop after ``patience`` evaluations without improvement (0: never)
    eval_every: int = 0
    eval_samples: int = 16
    patience: int = 0
    seed: int = 0
    #: inpaint mode: crops cut per training subject, near its tumour (``augment3d.data.crops``),
    #: and the share of the regions G renders that are balls at a random place of the crop's
    #: central half instead of the grown tumour (healthy tissue, as the BraTS inpainting task
    #: asks, or part of the lesion)
    crops_per_case: int = 4
    ball_regions: float = 0.25
    #: the extra terms of G's loss and their settings, a ``[train.terms.NAME]`` table each
    #: (``training.terms.settings``): mode_seeking, label_consistency, texture_match, contrast_match
    terms: Terms = field(default_factory=Terms)

    def __post_init__(self):
        enforce_field_types(self)
        object.__setattr__(self, "terms", Terms.from_table(self.terms))
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        for name in ("ema_images", "ada_images"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in (
            "g_lr",
            "d_lr",
            "r1_gamma",
            "ema_rampup",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 turns it off), got {getattr(self, name)}")
        for name in ("beta1", "beta2", "style_mixing", "condition_swap", "ada_target", "ball_regions"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in (
            "steps",
            "batch",
            "accumulate",
            "r1_interval",
            "ada_interval",
            "checkpoint_every",
            "log_every",
            "eval_samples",
            "crops_per_case",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "patience", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        self.micro_batches(1)

    def micro_batches(self, world: int) -> int:
        """How many micro-batches the global batch is cut into over ``world`` processes."""
        parts = world * self.accumulate
        if self.batch % parts:
            raise ValueError(f"batch {self.batch} does not split into {world} processes x {self.accumulate} accumulation steps")
        if self.terms.mode_seeking.on and self.batch // parts < 2:
            raise ValueError(
                f"mode_seeking needs pairs of samples: batch {self.batch} over {world} processes x "
                f"{self.accumulate} accumulation steps leaves micro-batches of {self.batch // parts}; "
                "use a larger batch or fewer accumulation steps"
            )
        return parts
