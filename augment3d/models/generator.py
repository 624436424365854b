"""Generator3D: learned constant, upsampling style blocks with noise, skip outputs.

Two modes (``ModelConfig.mode``, recorded in the checkpoint):

* ``labels`` (labels to images): a label map and brain mask (:func:`label_maps`) are the input,
  added to the constant and injected at every layer by spatially-adaptive scale and shift
  (:class:`SpatialModulation`); the output is the four images, zero outside the brain mask
  (-1 on the [-1, 1] scale). The labels are exact by construction.
* ``joint``: the four images and the tumour-label logits generated together from noise; kept so
  that runs trained before labels to images load and sample (training refuses it).
* ``inpaint``: a crop of a real subject with a region to render (:func:`inpaint_maps`: the label
  map, the crop's images with the region blanked, the region) is the input; the generator renders
  the region and the crop outside it comes back exactly as given.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import ModelConfig, synthesis_plan
from .layers import AdaINConv3d, EqualConv3d, ModulatedConv3d, NoiseInjection
from .ops import LRELU_GAIN, LRELU_SLOPE, upsample2
from .mapping import MappingNetwork
from .spatial_conditioning import SpatialModulation, inpaint_maps, label_maps, map_pyramid

__all__ = ["Generator3D", "SynthesisLayer", "SynthesisBlock", "inpaint_maps", "label_maps", "render_flops"]


class SynthesisLayer(nn.Module):
    """Style convolution (modulated or AdaIN), noise, bias, leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, config: ModelConfig):
        super().__init__()
        self.conv: nn.Module
        if config.style_mode == "adain":
            self.conv = AdaINConv3d(in_ch, out_ch, 3, config.w_dim)
        else:
            self.conv = ModulatedConv3d(in_ch, out_ch, 3, config.w_dim)
        self.noise = NoiseInjection()
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.spatial = SpatialModulation(config.map_channels, out_ch, kernel=config.spade_kernel) if config.map_channels else None

    def forward(self, x, w, noise, maps=None):
        # lrelu(conv + noise + bias) with lrelu's gain folded into each term: fewer full-size
        # passes; the noise and lrelu then work in place on the layer's own fresh activation
        # (the same values, no new full-size tensors; no backward needs the overwritten ones)
        x = self.conv(x, w, gain=LRELU_GAIN, bias=self.bias * LRELU_GAIN)
        if self.spatial is not None:
            x = self.spatial(x, maps[tuple(x.shape[2:])])
        return F.leaky_relu_(self.noise(x, noise, gain=LRELU_GAIN), LRELU_SLOPE)


class ToOutput(nn.Module):
    """1x1 modulated convolution (no demodulation) to image channels + label logits."""

    def __init__(self, in_ch: int, config: ModelConfig):
        super().__init__()
        out = config.image_channels + (config.label_classes if config.mode == "joint" else 0)
        self.conv = ModulatedConv3d(in_ch, out, 1, config.w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out))

    def forward(self, x, w):
        return self.conv(x, w, bias=self.bias)


class SynthesisBlock(nn.Module):
    """Upsample x2, two style layers, and add this resolution's output to the upsampled skip."""

    def __init__(self, in_ch: int, out_ch: int, config: ModelConfig):
        super().__init__()
        self.layer1 = SynthesisLayer(in_ch, out_ch, config)
        self.layer2 = SynthesisLayer(out_ch, out_ch, config)
        self.to_output = ToOutput(out_ch, config)

    num_ws = 3

    def forward(self, x, skip, ws, noises, maps=None):
        x = upsample2(x)
        x = self.layer1(x, ws[:, 0], noises[0], maps)
        x = self.layer2(x, ws[:, 1], noises[1], maps)
        return x, upsample2(skip) + self.to_output(x, ws[:, 2])


class Generator3D(nn.Module):
    """Conditional 3D StyleGAN generator.

    Example:
        >>> cfg = ModelConfig(shape=(16, 16, 16), cond_dim=4, channel_max=16, z_dim=32, w_dim=32, mode="joint")
        >>> images, logits = Generator3D(cfg)(torch.randn(2, 32), torch.eye(4)[:2])
        >>> tuple(images.shape), tuple(logits.shape)
        ((2, 4, 16, 16, 16), (2, 4, 16, 16, 16))
        >>> labels = torch.zeros(2, 16, 16, 16, dtype=torch.long)
        >>> maps = label_maps(labels, torch.ones(2, 16, 16, 16, dtype=torch.bool))
        >>> images, none = Generator3D(ModelConfig(shape=16, cond_dim=4, z_dim=32, w_dim=32))(torch.randn(2, 32), torch.eye(4)[:2], maps=maps)
        >>> tuple(images.shape), none
        ((2, 4, 16, 16, 16), None)
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.base, doublings = synthesis_plan(config.shape)
        self.mapping = MappingNetwork(config)
        res = [min(self.base) * 2**i for i in range(doublings + 1)]
        ch = [config.channels(r) for r in res]
        self.const = nn.Parameter(torch.randn(ch[0], *self.base))
        #: labels and inpaint modes: the spatial input at the base grid, projected and added to the constant
        self.map_in = EqualConv3d(config.map_channels, ch[0], 3) if config.map_channels else None
        self.first = SynthesisLayer(ch[0], ch[0], config)
        self.first_out = ToOutput(ch[0], config)
        self.blocks = nn.ModuleList(SynthesisBlock(ch[i], ch[i + 1], config) for i in range(doublings))
        self.num_ws = 2 + SynthesisBlock.num_ws * doublings
        #: run the synthesis in ``channels_last_3d`` memory layout: the same values (within 1e-5),
        #: and faster convolutions on CPU, above all in bf16 (docs/PERFORMANCE.md)
        self.channels_last = False
        self.noise_shapes = [self.base] + [tuple(b * 2 ** (i + 1) for b in self.base) for i in range(doublings) for _ in range(2)]

    def make_noise(self, batch: int, generator: torch.Generator | None = None, device=None) -> list[torch.Tensor | None]:
        """Per-voxel noise for every layer, drawn where ``generator`` is (with a CPU generator a
        seed gives the same noise anywhere), or on ``device`` without one."""
        where = generator.device if generator is not None else device
        return [torch.randn((batch, 1, *s), generator=generator, device=where).to(device) for s in self.noise_shapes]

    @property
    def takes_labels(self) -> bool:
        """True in labels-to-images mode: the label map is an input, not an output."""
        return self.config.mode == "labels"

    @property
    def inpaints(self) -> bool:
        """True in inpaint mode: the input is a label map plus a real crop with a region to render
        (:func:`~augment3d.models.spatial_conditioning.inpaint_maps`); outside the region the
        crop comes back as it was."""
        return self.config.mode == "inpaint"

    def synthesize(
        self, ws: torch.Tensor, noises: list[torch.Tensor | None] | None = None, maps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """ws: (B, num_ws, w_dim); maps (labels, inpaint modes): (B, map_channels, *shape). Returns
        (B, image_channels [+ label_classes in joint mode], *shape)."""
        if noises is None:
            noises = [None] * len(self.noise_shapes)
        x = self.const[None].expand(ws.shape[0], *self.const.shape).to(ws.dtype)
        pyramid = None
        if self.map_in is not None:
            assert maps is not None, "a labels-to-images or inpainting generator needs its maps"
            pyramid = map_pyramid(maps, [self.base, *(n for n in self.noise_shapes[1::2])], self.channels_last)
            x = x + self.map_in(pyramid[tuple(self.base)].to(x.dtype))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x = self.first(x, ws[:, 0], noises[0], pyramid)
        out = self.first_out(x, ws[:, 1])
        for i, block in enumerate(self.blocks):
            k = 2 + SynthesisBlock.num_ws * i
            x, out = block(x, out, ws[:, k : k + SynthesisBlock.num_ws], noises[1 + 2 * i : 3 + 2 * i], pyramid)
        return out

    def from_w(self, w: torch.Tensor, noises: list[torch.Tensor | None] | None = None, maps: torch.Tensor | None = None):
        """Images and label logits (``None`` in labels mode, where ``maps`` are the input) for
        intermediate latents ``w``: (B, w_dim), used by every layer, or (B, num_ws, w_dim), one
        per style input (see :meth:`mix_styles`)."""
        channels = self.config.map_channels
        if channels and (maps is None or tuple(maps.shape[2:]) != tuple(self.config.shape) or maps.shape[1] != channels):
            made_by = "inpaint_maps()" if self.inpaints else "label_maps()"
            raise ValueError(
                f"this generator renders images from {'a crop and its label map' if self.inpaints else 'label maps'}: "
                f"give maps of shape (B, {channels}, {', '.join(map(str, self.config.shape))}) ({made_by})"
            )
        ws = w[:, None].expand(-1, self.num_ws, -1) if w.dim() == 2 else w
        out = self.synthesize(ws, noises, maps)
        k = self.config.image_channels
        if maps is not None:  # the background outside the brain mask is exact: -1
            brain = maps[:, :1].to(out.dtype)
            rendered = out[:, :k] * brain + (brain - 1.0)
            if self.inpaints:  # the crop outside the region exactly as given: context + 0 * (...)
                labels = self.config.label_classes
                context = maps[:, labels : labels + k].to(out.dtype)
                region = maps[:, -1:].to(out.dtype)
                rendered = context + region * (rendered - context)
            return rendered.contiguous(), None
        return out[:, :k].contiguous(), out[:, k:].contiguous()

    def mix_styles(self, w: torch.Tensor, w_mix: torch.Tensor, cutoff: torch.Tensor | int) -> torch.Tensor:
        """Style mixing: per-layer latents (B, num_ws, w_dim) that take ``w`` (B, w_dim) for the
        style inputs before ``cutoff`` and ``w_mix`` from it on.

        The style inputs run from coarse to fine: 0 and 1 on the base grid (its convolution and
        output), then three per doubling (two convolutions and the output). ``cutoff`` is an int or
        one per sample (B,); ``num_ws`` keeps ``w`` throughout, 0 takes ``w_mix`` throughout.
        """
        cutoff = torch.as_tensor(cutoff, device=w.device).reshape(-1, 1, 1)
        layer = torch.arange(self.num_ws, device=w.device).reshape(1, -1, 1)
        return torch.where(layer < cutoff, w[:, None], w_mix[:, None])

    @staticmethod
    def truncate(w: torch.Tensor, centre: torch.Tensor | None, psi: float) -> torch.Tensor:
        """Pull ``w`` towards ``centre`` (the condition's mean w) by ``psi`` (1 leaves it alone)."""
        if psi == 1.0:
            return w
        if centre is None:
            raise ValueError("truncation needs w_centre (the mean w of the condition)")
        return centre + psi * (w - centre)

    def forward(
        self,
        z,
        c=None,
        *,
        maps: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        w_centre: torch.Tensor | None = None,
        noise: str = "random",
        generator: torch.Generator | None = None,
    ):
        """Images (B, 4, ...) and label logits (B, classes, ...; ``None`` in labels mode, where
        ``maps`` are given) for latents ``z`` and conditions ``c``.

        ``noise`` is ``random`` (fresh noise, from ``generator`` if given) or ``none``.
        Truncation pulls w towards ``w_centre`` (the per-condition mean w) by ``truncation_psi``.
        """
        w = self.truncate(self.mapping(z, c), w_centre, truncation_psi)
        noises = self.make_noise(z.shape[0], generator, z.device) if noise == "random" else None
        return self.from_w(w, noises, maps)


@functools.lru_cache(maxsize=16)
def render_flops(config: ModelConfig) -> int:
    """Floating-point operations of generating one subject with ``config``'s generator (two per
    multiply-add, as ``torch.utils.flop_counter`` counts them), counted on the meta device: no
    weights, memory or arithmetic, a fraction of a second even at 128^3.

    Example:
        >>> round(render_flops(ModelConfig(shape=16, cond_dim=4, channel_max=16, z_dim=32, w_dim=32)) / 1e9, 2)
        0.42
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.device("meta"), torch.no_grad(), counter:
        net = Generator3D(config).eval().requires_grad_(False)  # the counter's module hooks want no grads
        z, c = torch.zeros(1, config.z_dim), torch.zeros(1, config.cond_dim)
        maps = torch.zeros(1, config.map_channels, *config.shape) if config.map_channels else None
        net(z, c, maps=maps)
    return int(counter.get_total_flops())
