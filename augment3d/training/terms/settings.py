"""What each extra term of G's loss takes from a recipe: the ``[train.terms.NAME]`` tables (torch-free).

Every term has a ``weight`` (0, the default, leaves it out of the run) and whatever else it alone
needs; :class:`Terms` holds one settings object per term, in the order the terms join G's loss::

    [train.terms.label_consistency]
    weight = 1.0
    warmup = 200

Recipes written before the tables used flat ``[train]`` keys; :data:`FLAT_KEYS` says where each
now lives (the recipe loader maps them, so old recipes and run folders read as before).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ...config.field_types import enforce_field_types

__all__ = [
    "ContrastMatchSettings",
    "FLAT_KEYS",
    "LabelConsistencySettings",
    "ModeSeekingSettings",
    "ReconstructionSettings",
    "Terms",
    "TextureMatchSettings",
]


@dataclass(frozen=True)
class _TermSettings:
    #: the term's weight in G's loss; 0 leaves the term out
    weight: float = 0.0

    def __post_init__(self):
        enforce_field_types(self)
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0 (0 turns the term off), got {self.weight}")

    @property
    def on(self) -> bool:
        return self.weight > 0


@dataclass(frozen=True)
class ModeSeekingSettings(_TermSettings):
    """Mode seeking (``training.terms.mode_seeking``): pairs of latents pushed apart."""


@dataclass(frozen=True)
class LabelConsistencySettings(_TermSettings):
    """Label consistency (``training.terms.label_consistency``): a segmenter trained on the reals
    judges G's images against G's labels."""

    #: the segmenter's width, learning rate and the steps before G hears it
    width: int = 8
    lr: float = 2e-3
    warmup: int = 200
    #: run the segmenter under the training's autocast and memory layout (``amp``, ``channels_last``)
    #: as G and D run, instead of fp32 channels-first: faster at 64^3, no faster at 32^3; off by
    #: default: benched on the phantom recipe its GAN gave a smaller SSA gain (docs/lab/bench.md)
    autocast: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")
        if self.lr < 0:
            raise ValueError(f"lr must be >= 0, got {self.lr}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")


@dataclass(frozen=True)
class TextureMatchSettings(_TermSettings):
    """Texture match (``training.terms.texture_match``): each subject's high-frequency energy per
    modality pulled to that of the real subjects of its condition."""


@dataclass(frozen=True)
class ContrastMatchSettings(_TermSettings):
    """Contrast match (``training.terms.contrast_match``): each tumour class's contrast to the
    healthy brain, per modality, pulled to that of the real subjects of its condition."""


@dataclass(frozen=True)
class ReconstructionSettings(_TermSettings):
    """Reconstruction (``training.terms.reconstruction``), inpaint mode only: G's rendering of a
    region against the real crop's content there (L1)."""


def _table(cls, value, where: str):
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"[{where}] must be a table, got {value!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"unknown key(s) in [{where}]: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    try:
        return cls(**value)
    except ValueError as exc:
        raise ValueError(f"[{where}] {exc}") from None


@dataclass(frozen=True)
class Terms:
    """The extra terms of G's loss, in the order they join it. Each field takes its settings
    object or a table of its keys (``{"weight": 1.0}``), as a recipe gives it."""

    mode_seeking: ModeSeekingSettings = field(default_factory=ModeSeekingSettings)
    label_consistency: LabelConsistencySettings = field(default_factory=LabelConsistencySettings)
    texture_match: TextureMatchSettings = field(default_factory=TextureMatchSettings)
    contrast_match: ContrastMatchSettings = field(default_factory=ContrastMatchSettings)
    reconstruction: ReconstructionSettings = field(default_factory=ReconstructionSettings)

    def __post_init__(self):
        for f in fields(self):
            cls = type(f.default_factory())
            object.__setattr__(self, f.name, _table(cls, getattr(self, f.name), f"train.terms.{f.name}"))

    @classmethod
    def from_table(cls, value) -> Terms:
        """``[train.terms]`` as TOML gives it (a table of tables), checked."""
        if isinstance(value, Terms):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"[train.terms] must be a table of tables, got {value!r}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown term(s) in [train.terms]: {', '.join(unknown)} (known: {', '.join(known)})")
        return cls(**value)

    def active(self) -> list[tuple[str, _TermSettings]]:
        """``(name, settings)`` of the terms switched on, in order."""
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name).on]


#: flat ``[train]`` keys of recipes before the term tables -> (term, key) they now set
FLAT_KEYS = {
    "mode_seeking": ("mode_seeking", "weight"),
    "seg_consistency": ("label_consistency", "weight"),
    "seg_width": ("label_consistency", "width"),
    "seg_lr": ("label_consistency", "lr"),
    "seg_warmup": ("label_consistency", "warmup"),
    "seg_autocast": ("label_consistency", "autocast"),
    "texture_match": ("texture_match", "weight"),
    "contrast_match": ("contrast_match", "weight"),
}
