"""``ModelConfig``: the architecture of the conditional 3D StyleGAN, as a dataclass from a recipe (torch-free)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..config.field_types import enforce_field_types

__all__ = ["ModelConfig", "synthesis_plan", "STYLE_MODES", "GENERATOR_MODES", "JOINT_NOT_TRAINED", "MAX_SIDE"]

STYLE_MODES = ("modulated", "adain")
#: ``labels``: images rendered from a given label map (the default); ``joint``: images and labels
#: from noise (loaded, no longer trained); ``inpaint``: a lesion rendered into a crop of a real subject
GENERATOR_MODES = ("labels", "joint", "inpaint")
#: why training refuses ``joint``: kept so that runs trained before labels-to-images load and sample
JOINT_NOT_TRAINED = (
    "joint generators (images and labels drawn from noise) are loaded and sampled but no longer trained; "
    'train with [model] mode = "labels" (docs/MODEL.md, "Generator modes")'
)
#: the largest grid side built (the proposal's grid is 128)
MAX_SIDE = 512
#: sane ranges: a checkpoint or recipe outside them is refused before any network is built
LIMITS = {
    "image_channels": (1, 64),
    "label_classes": (1, 64),
    "cond_dim": (0, 4096),
    "z_dim": (1, 4096),
    "w_dim": (1, 4096),
    "cond_embed_dim": (1, 4096),
    "mapping_layers": (1, 32),
    "mapping_lr_mul": (1e-6, 1.0),
    "channel_base": (1, 1 << 20),
    "channel_max": (1, 4096),
    "d_channel_base": (1, 1 << 20),
    "d_channel_max": (1, 4096),
    "mbstd_group": (1, 1024),
}


def synthesis_plan(shape: tuple[int, int, int]) -> tuple[tuple[int, int, int], int]:
    """Base grid and number of doublings for ``shape``: the most doublings leaving every side >= 3.

    Example:
        >>> synthesis_plan((32, 32, 32))
        ((4, 4, 4), 3)
        >>> synthesis_plan((48, 48, 48))
        ((3, 3, 3), 4)
    """
    doublings = 0
    while all(s % 2 ** (doublings + 1) == 0 and s // 2 ** (doublings + 1) >= 3 for s in shape):
        doublings += 1
    return tuple(s // 2**doublings for s in shape), doublings


@dataclass(frozen=True)
class ModelConfig:
    """Architecture settings. ``shape`` is the output grid; ``cond_dim`` the condition vector size."""

    shape: tuple[int, int, int] = (32, 32, 32)
    image_channels: int = 4
    label_classes: int = 4
    cond_dim: int = 0
    z_dim: int = 128
    w_dim: int = 128
    cond_embed_dim: int = 32
    mapping_layers: int = 4
    mapping_lr_mul: float = 0.01
    channel_base: int = 1024
    channel_max: int = 64
    style_mode: str = "modulated"
    d_channel_base: int = 1024
    d_channel_max: int = 64
    mbstd_group: int = 4
    #: spectral normalisation of every discriminator weight (Miyato et al. 2018), against a D
    #: that runs away from G; off by default (the recipes rely on R1 and ADA)
    d_spectral_norm: bool = False
    #: also add a full-learning-rate projection of the condition to w, next to the mapping
    #: network (whose lr multiplier of 0.01 lets the condition move w only slowly; docs/MODEL.md)
    cond_bypass: bool = True
    #: ``labels`` (labels to images) or ``joint`` (docs/MODEL.md); generators saved before the
    #: option are joint
    mode: str = "labels"
    #: labels mode: kernel of the SPADE convolution that turns the map's encoding into each
    #: layer's scale and shift: 3 (3x3x3, as in SPADE) or 1 (1x1x1: 27x fewer multiply-adds
    #: there, the map's own 3x3x3 encoding still sees the neighbourhood; docs/PERFORMANCE.md)
    spade_kernel: int = 3
    #: inpaint mode: the side of the cubes cut from the prepared subjects, the generator's grid
    #: (0: the whole data grid); the recipe sets ``shape`` from it (docs/MODEL.md, "Inpainting")
    crop: int = 0

    def __post_init__(self):
        enforce_field_types(self)
        shape = self.shape
        if isinstance(shape, int):
            shape = (shape,) * 3
        shape = tuple(int(s) for s in shape)
        object.__setattr__(self, "shape", shape)
        if len(shape) != 3 or min(shape) < 8:
            raise ValueError(f"model shape must be three sides >= 8, got {self.shape!r}")
        _, doublings = synthesis_plan(shape)
        if doublings < 1:
            raise ValueError(f"model shape {shape} cannot be reached by doubling a base grid of sides >= 3")
        if self.style_mode not in STYLE_MODES:
            raise ValueError(f"style_mode must be one of {STYLE_MODES}, got {self.style_mode!r}")
        if self.mode not in GENERATOR_MODES:
            raise ValueError(f"mode must be one of {GENERATOR_MODES}, got {self.mode!r}")
        if self.crop < 0 or (self.crop and self.mode != "inpaint"):
            raise ValueError(f"crop is the inpaint mode's crop side (>= 0), got {self.crop!r} in mode {self.mode!r}")
        if self.spade_kernel not in (1, 3):
            raise ValueError(f"spade_kernel must be 1 or 3, got {self.spade_kernel!r}")
        if max(shape) > MAX_SIDE:
            raise ValueError(f"model shape {shape} is larger than augment3d builds (sides up to {MAX_SIDE})")
        for name, (low, high) in LIMITS.items():
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {getattr(self, name)}")

    @property
    def map_channels(self) -> int:
        """Channels of the spatial input: labels, the label maps (brain mask + tumour classes);
        inpaint, those, the crop's images with the region to render blanked, and that region;
        joint, none."""
        return {"labels": self.label_classes, "inpaint": self.label_classes + self.image_channels + 1}.get(self.mode, 0)

    def channels(self, resolution: int, discriminator: bool = False) -> int:
        base, cap = (self.d_channel_base, self.d_channel_max) if discriminator else (self.channel_base, self.channel_max)
        return max(8, min(cap, base // resolution))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["shape"] = list(self.shape)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        data = dict(data)
        data.setdefault("cond_bypass", False)  # configs saved before the option had no bypass layer
        data.setdefault("mode", "joint")  # and before labels-to-images, every generator was joint
        if data.pop("noise_style", False):  # written as false by runs before the option was removed
            raise ValueError(
                "this generator uses style-dependent noise (noise_style), which this augment3d "
                "no longer builds (docs/MODEL.md, 'Removed options')"
            )
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model settings: {', '.join(sorted(unknown))}")
        if "shape" in data:
            data["shape"] = tuple(data["shape"])
        return cls(**data)
