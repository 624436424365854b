"""The ``[bench]`` section of a recipe: splits, arms, seeds, the segmentation model and its budget.

augment3d's recipe loader keeps ``[bench]`` as a raw table; :func:`bench_config` reads and checks it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from augment3d.errors import RecipeError
from augment3d.config.field_types import enforce_field_types

__all__ = ["ARMS", "DEFAULT_ARMS", "LR_SCHEDULES", "BenchConfig", "bench_config"]

#: learning-rate schedules of the segmentation nets (``BenchConfig.lr_schedule``)
LR_SCHEDULES = ("constant", "poly")

#: the arms a bench may run, in report order; ``real`` is the reference every other arm is compared with
ARMS = (
    "real",
    "real+classic",
    "real+synthetic",
    "real+classic+synthetic",
    "real+paste",
    "real+classic+paste",
    "real+inpaint",
    "real+classic+inpaint",
)
#: the arms run when a recipe names none: the inpaint arms need an inpainting GAN of their own (opt in)
DEFAULT_ARMS = tuple(a for a in ARMS if "inpaint" not in a.split("+"))


@dataclass(frozen=True)
class BenchConfig:
    """Defaults suit the ``quick`` CPU run; the bundled recipes set every value they rely on.

    Splits: ``val_fraction`` / ``test_fraction`` of each site x grade stratum, seeded by
    ``split_seed``. Segmentation: an smp-3d ``architecture`` with ``encoder`` (never pretrained; ``norm = "group"`` swaps its BatchNorm
    layers for GroupNorm, which small 3D batches need),
    ``steps`` AdamW steps of ``batch`` subjects at ``lr`` (``lr_schedule``), optionally averaged (``ema_decay``), validation Dice every ``val_every`` steps (the best
    weights are kept), whole volumes when ``patch`` is 0, else ``patch``^3 patches through a
    ``tio.Queue``. Synthetic data: ``synthetic = "augmenter"`` swaps each training subject for a
    generated one with probability ``synthetic_p``; ``"cohort"`` adds ``synthetic_ratio`` x the
    number of training subjects as a fixed synthetic cohort. ``synthetic_condition`` fixes some
    condition columns (e.g. ``{site = "SSA"}`` to generate the scarce site); the others come from
    the subject being replaced. ``gan_steps`` = 0 keeps the recipe's ``[train] steps``.
    """

    arms: tuple[str, ...] = DEFAULT_ARMS
    seeds: tuple[int, ...] = (0,)
    #: phantom cohort seeds: each a whole bench of its own ([phantom] seed, split_seed and [train] seed set to it),
    #: pooled in one report (``segbench.cohorts``); empty (the default): one cohort, the recipe's own
    cohorts: tuple[int, ...] = ()
    split_seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.3
    #: > 0: exactly this many test cases per site (instead of ``test_fraction``), for a verdict
    test_per_site: int = 0
    #: caps on a site's training cases, e.g. ``{SSA = 6}``: the scarce site stays scarce
    train_per_site: dict[str, int] = field(default_factory=dict)
    architecture: str = "Unet"
    encoder: str = "mobileone_s0"
    decoder_channels: tuple[int, ...] = (64, 32, 16, 16, 8)
    norm: str = "group"
    steps: int = 300
    batch: int = 2
    lr: float = 3e-3
    #: ``constant``: AdamW at ``lr`` throughout; ``poly``: nnU-Net's schedule, ``lr`` x (1 - step/steps)^0.9,
    #: so every arm ends converged within its ``steps`` (the plateau the report checks for ``real``)
    lr_schedule: str = "constant"
    #: > 0: validate, keep and test an exponential moving average of the weights (decay per optimiser step,
    #: e.g. 0.995: about the last 200 steps) instead of the raw weights, so a job depends less on where
    #: its last steps happened to land; 0 (the default): the raw weights
    ema_decay: float = 0.0
    #: > 0: train until the validation Dice stops improving, ``steps`` being the cap: stop when its trailing
    #: mean over ``plateau_window`` validations has gone ``patience`` validations without beating its best by
    #: more than ``min_delta``, and not before ``min_steps`` (``segbench.plateau``); 0: exactly ``steps`` steps
    patience: int = 0
    plateau_window: int = 3
    min_delta: float = 0.005
    min_steps: int = 0
    #: > 0: after the plateau (or the cap), this many more steps with the rate falling linearly to 0, and the
    #: weights at the end tested (no pick of one noisy validation point); 0: the best validated weights tested
    anneal_steps: int = 0
    #: > 0: validate, keep and test the uniform average of the weights over a job's last ``average_steps``
    #: steps (every step counted; stochastic weight averaging) instead of the weights of one step; needs the
    #: end known in advance: ``patience = 0``, or a window within the anneal (``average_steps <= anneal_steps``)
    average_steps: int = 0
    weight_decay: float = 1e-4
    #: segmentation arithmetic: ``none`` (fp32), ``bf16`` autocast, or ``auto`` (bf16 where the
    #: hardware has it: AVX512-BF16 or AMX CPUs, GPUs). Each job records what it used. fp32 is the
    #: default: the recipes' small 32^3 U-Net is overhead-bound on a CPU and was no faster in bf16
    #: (benchmarks/segbench_throughput.py, docs/lab/performance.md)
    amp: str = "none"
    val_every: int = 25
    patch: int = 0
    samples_per_volume: int = 4
    queue_length: int = 16
    workers: int = 0
    synthetic: str = "augmenter"
    synthetic_p: float = 0.5
    synthetic_ratio: float = 1.0
    synthetic_condition: dict[str, str] = field(default_factory=lambda: {"site": "SSA"})
    #: cohort mode, labels-to-images runs: the condition columns a synthetic subject's label map shares
    #: with its condition; empty (the default) = all, e.g. ``["grade"]``: every site's maps rendered as SSA
    synthetic_maps_matching: tuple[str, ...] = ()
    #: the augmenter leaves subjects already of ``synthetic_condition`` real (``keep_matching``)
    synthetic_keep_matching: bool = False
    psi: float = 1.0
    #: the paste arms: the pasted tumour may cover part of the recipient's own (on a 32^3 grid a second
    #: tumour clear of the first rarely fits; docs/AUGMENTER.md); False: clear of it by ``margin`` voxels
    paste_overlap: bool = True
    #: the inpaint arms: the recipe of the inpainting GAN the bench trains on the training split (``[model]
    #: mode = "inpaint"``; a bundled recipe's name, or a file, relative to this recipe's folder), with this
    #: recipe's ``[train] seed``; it renders the same donors' lesions into the same recipients as the paste arms
    inpaint_recipe: str = "phantom_inpaint"
    #: voxels of the subject's grid around the placed lesion rendered anew, and of soft edge beyond them
    #: (``TumourInpainter``'s ``grow`` and ``margin``)
    inpaint_grow: int = 1
    inpaint_margin: int = 1
    #: the inpainting generator's arithmetic (``auto``: bf16 where the hardware has it)
    inpaint_precision: str = "auto"
    #: a trained run folder or a bundled generator's name (``"phantom"``, ``augment3d.pretrained``) used instead
    #: of training a GAN on the training split of the recipe's phantom cohort (with ``--data`` the bench
    #: trains one); empty (the default): the bench trains one
    generator: str = ""
    gan_steps: int = 0
    gan_eval_n: int = 16
    judge_steps: int = 150
    bootstrap: int = 10000
    headline_site: str = "SSA"

    def __post_init__(self):
        enforce_field_types(self)
        for name, kind in (
            ("arms", str),
            ("seeds", int),
            ("cohorts", int),
            ("decoder_channels", int),
            ("synthetic_maps_matching", str),
        ):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
                raise ValueError(f"{name} must be a list of {kind.__name__}s, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if not isinstance(self.train_per_site, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
            for k, v in self.train_per_site.items()
        ):
            raise ValueError(f"train_per_site must be a table of site = count >= 1, got {self.train_per_site!r}")
        if self.test_per_site < 0:
            raise ValueError(f"test_per_site must be >= 0, got {self.test_per_site}")
        if not isinstance(self.synthetic_condition, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.synthetic_condition.items()
        ):
            raise ValueError(f"synthetic_condition must be a table of strings, got {self.synthetic_condition!r}")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"arms must be among {', '.join(ARMS)}, got {', '.join(unknown) or 'none'}")
        if "real" not in self.arms:
            raise ValueError("arms must include 'real', the reference the others are compared with")
        if len(set(self.arms)) != len(self.arms) or len(set(self.seeds)) != len(self.seeds) or not self.seeds:
            raise ValueError("arms and seeds must be non-empty lists without repeats")
        if len(set(self.cohorts)) != len(self.cohorts) or any(c < 0 for c in self.cohorts):
            raise ValueError(f"cohorts must be distinct seeds >= 0, got {list(self.cohorts)}")
        if self.cohorts and self.generator:
            raise ValueError("generator and cohorts do not go together: every cohort trains its own GAN on its own split")
        if self.norm not in ("group", "batch"):
            raise ValueError(f"norm must be 'group' (GroupNorm, batch-size independent) or 'batch', got {self.norm!r}")
        if self.amp not in ("auto", "bf16", "none"):
            raise ValueError(f"amp must be 'auto', 'bf16' or 'none', got {self.amp!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(map(repr, LR_SCHEDULES))}, got {self.lr_schedule!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no weight average), got {self.ema_decay}")
        if self.synthetic not in ("augmenter", "cohort"):
            raise ValueError(f"synthetic must be 'augmenter' or 'cohort', got {self.synthetic!r}")
        if self.synthetic_maps_matching and self.synthetic != "cohort":
            raise ValueError(
                "synthetic_maps_matching picks the label maps of a synthetic cohort: it needs synthetic = 'cohort' "
                "(the augmenter restyles each subject's own map)"
            )
        if self.average_steps < 0:
            raise ValueError(f"average_steps must be >= 0 (0: no weight average), got {self.average_steps}")
        if self.average_steps and self.ema_decay:
            raise ValueError("average_steps and ema_decay are two weight averages: set one of them")
        if self.average_steps and self.patience and self.average_steps > self.anneal_steps:
            raise ValueError(
                f"average_steps = {self.average_steps} needs the job's end known in advance: patience = 0, "
                f"or average_steps <= anneal_steps (= {self.anneal_steps})"
            )
        if self.average_steps > self.steps + self.anneal_steps:
            raise ValueError(
                f"average_steps = {self.average_steps} is longer than the job ({self.steps} + {self.anneal_steps} steps)"
            )
        if min(self.patience, self.min_steps, self.anneal_steps) < 0 or self.plateau_window < 1 or self.min_delta < 0:
            raise ValueError("patience, min_steps, anneal_steps and min_delta must be >= 0, plateau_window >= 1")
        if min(self.steps, self.batch, self.val_every, self.samples_per_volume, self.queue_length, self.bootstrap) < 1:
            raise ValueError("steps, batch, val_every, samples_per_volume, queue_length and bootstrap must be >= 1")
        if self.patch < 0 or self.patch % 32:
            raise ValueError(f"patch must be 0 (whole volumes) or a multiple of 32, got {self.patch}")
        if not (0 < self.test_fraction < 1 and 0 <= self.val_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ValueError("val_fraction and test_fraction must leave cases for training")
        if not 0 <= self.synthetic_p <= 1 or self.synthetic_ratio <= 0:
            raise ValueError("synthetic_p must be in [0, 1] and synthetic_ratio > 0")
        if self.inpaint_grow < 0 or self.inpaint_margin < 1:
            raise ValueError("inpaint_grow must be >= 0 and inpaint_margin >= 1")
        if self.inpaint_precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"inpaint_precision must be 'auto', 'bf16' or 'fp32', got {self.inpaint_precision!r}")
        if self.gan_eval_n < 4 or self.gan_steps < 0 or self.workers < 0:
            raise ValueError("gan_eval_n must be >= 4, gan_steps and workers >= 0")
        if len(self.decoder_channels) != 5:
            raise ValueError("decoder_channels needs 5 values (encoder_depth 5: smp-3d crashes at other depths)")

    def to_dict(self) -> dict:
        return asdict(self)


def bench_config(recipe) -> BenchConfig:
    """The checked ``[bench]`` section of an :class:`augment3d.config.Recipe`. Raises :class:`RecipeError`."""
    table = recipe.bench
    known = {f.name for f in fields(BenchConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise RecipeError(recipe.path, f"unknown key(s) in [bench]: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    try:
        config = BenchConfig(**table)
    except (TypeError, ValueError) as exc:
        raise RecipeError(recipe.path, f"[bench]: {exc}") from None
    unknown = [c for c in config.synthetic_maps_matching if c not in recipe.data.conditions]
    if unknown:
        raise RecipeError(
            recipe.path,
            f"[bench] synthetic_maps_matching: {', '.join(unknown)} is not among [data] "
            f"conditions ({', '.join(recipe.data.conditions) or 'none'})",
        )
    return config
