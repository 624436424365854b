"""Mapping network: normalised z plus an embedded condition vector to the intermediate latent w."""

from __future__ import annotations

import torch
from torch import nn

from .architecture import ModelConfig
from .layers import EqualLinear

__all__ = ["MappingNetwork", "normalize_2nd_moment"]


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


class MappingNetwork(nn.Module):
    """MLP from (z, condition) to w, with the StyleGAN learning-rate multiplier."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = EqualLinear(config.cond_dim, config.cond_embed_dim) if config.cond_dim else None
        width = config.z_dim + (config.cond_embed_dim if config.cond_dim else 0)
        layers = []
        for _ in range(config.mapping_layers):
            layers.append(EqualLinear(width, config.w_dim, lr_mul=config.mapping_lr_mul, activate=True))
            width = config.w_dim
        self.layers = nn.Sequential(*layers)
        self.bypass = EqualLinear(config.cond_dim, config.w_dim) if config.cond_dim and config.cond_bypass else None

    def forward(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        x = normalize_2nd_moment(z)
        if self.embed is not None:
            if c is None or c.shape != (z.shape[0], self.config.cond_dim):
                raise ValueError(
                    f"condition must have shape ({z.shape[0]}, {self.config.cond_dim}), got "
                    f"{None if c is None else tuple(c.shape)}"
                )
            x = torch.cat([x, normalize_2nd_moment(self.embed(c))], dim=1)
        w = self.layers(x)
        return w if self.bypass is None else w + self.bypass(c)
