"""The conditional 3D StyleGAN: mapping network, generator, discriminator; a small segmenter."""

from .config import ModelConfig, synthesis_plan
from .discriminator import Discriminator3D
from .generator import Generator3D
from .mapping import MappingNetwork
from .segmenter import TinySegmenter

__all__ = ["ModelConfig", "Generator3D", "Discriminator3D", "MappingNetwork", "TinySegmenter", "synthesis_plan"]
