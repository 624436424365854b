"""The conditional 3D StyleGAN: mapping network, generator, discriminator; a small segmenter.

``ModelConfig`` (``augment3d.models.architecture``) is torch-free; the networks load torch when
first used, so reading a recipe does not.
"""

from __future__ import annotations

import importlib

from .architecture import ModelConfig, synthesis_plan

_LAZY = {
    "Generator3D": "augment3d.models.generator",
    "Discriminator3D": "augment3d.models.discriminator",
    "MappingNetwork": "augment3d.models.mapping",
    "TinySegmenter": "augment3d.models.segmenter",
}

__all__ = ["ModelConfig", "synthesis_plan", *_LAZY]  # noqa: PLE0604 (the lazy names are strings)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'augment3d.models' has no attribute {name!r}")
