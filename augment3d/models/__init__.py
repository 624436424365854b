"""The conditional 3D StyleGAN: mapping network, generator, discriminator."""

from .config import ModelConfig, synthesis_plan
from .discriminator import Discriminator3D
from .generator import Generator3D
from .mapping import MappingNetwork

__all__ = ["ModelConfig", "Generator3D", "Discriminator3D", "MappingNetwork", "synthesis_plan"]
