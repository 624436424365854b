"""The reconstruction term of an inpainting run: inside the rendered region, G's images against
the real crop's.

An inpainting run trains on real pairs: the region G renders was voided from a real crop, so
what it held is known. The term is the mean absolute difference there (per voxel and modality of
the region; the rest of the crop is the real one by construction), the L1 part of pix2pix-style
training beside the adversarial loss: it anchors intensities and contrasts, while the
adversarial loss keeps the texture from going flat.
"""

from __future__ import annotations

import torch

from .base import Fakes, LossTerm, TermContext

__all__ = ["Reconstruction"]


class Reconstruction(LossTerm):
    """Mean |G's rendering - the real crop| over the rendered region. Logs ``recon``."""

    name = "recon"

    @classmethod
    def from_settings(cls, settings, context: TermContext) -> Reconstruction:
        if context.model.mode != "inpaint":
            raise ValueError(
                '[train.terms.reconstruction] needs an inpainting run ([model] mode = "inpaint"): '
                "only there does G render a region whose real content is known"
            )
        return cls(settings.weight)

    def loss(self, fakes: Fakes) -> torch.Tensor:
        if fakes.crops is None or fakes.regions is None:
            raise ValueError("the reconstruction term needs the real crops and the rendered regions")
        region = fakes.regions[:, None].to(fakes.images.dtype)
        gap = (fakes.images - fakes.crops.to(fakes.images.dtype)).abs() * region
        return gap.sum() / (region.sum() * fakes.images.shape[1]).clamp_min(1.0)
