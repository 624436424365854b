"""3D feature extractors for FID, KID and precision/recall.

* ``fixed`` (default): a small seeded 3D CNN whose weights ship inside the package as
  safetensors, so the same volumes give the same number on every machine. Features: the mean
  of each of four stages' activations (16 + 32 + 64 + 128 = 240 values), resolution-agnostic.
* ``medicalnet``: a MedicalNet / Med3D ResNet-10/18/34 from a local weights file (safetensors,
  or a PyTorch file read with ``weights_only=True``: tensors only, no code); the T1 image
  (single-channel, as MedicalNet was trained) goes in, the globally pooled last stage comes out.

Regenerate the shipped weights (only when deliberately changing the extractor) with
``python -m augment3d.metrics.features``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError

__all__ = ["FixedEncoder3D", "MedicalNetResNet", "FIXED_WEIGHTS", "FIXED_WEIGHTS_SHA256", "load_extractor", "extract"]

FIXED_WEIGHTS = Path(__file__).with_name("fixed_encoder3d.safetensors")
FIXED_WEIGHTS_SHA256 = "d2be968faeb307c5312a938b50dd568d2eb352d21079c7a43c403d87562e01cb"
_WIDTHS = (16, 32, 64, 128)


class FixedEncoder3D(nn.Module):
    """Four strided 3x3x3 conv stages with leaky ReLU; features are per-stage channel means."""

    def __init__(self, in_channels: int = 4):
        super().__init__()
        widths = (in_channels, *_WIDTHS)
        self.stages = nn.ModuleList(
            nn.Conv3d(widths[i], widths[i + 1], 3, stride=1 if i == 0 else 2, padding=1) for i in range(len(_WIDTHS))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for conv in self.stages:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x.mean(dim=(2, 3, 4)))
        return torch.cat(feats, dim=1)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class MedicalNetResNet(nn.Module):
    """The MedicalNet ResNet trunk (BasicBlock, shortcut B), matching its state-dict names."""

    LAYERS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}

    def __init__(self, depth: int = 10):
        super().__init__()
        if depth not in self.LAYERS:
            raise ValueError(f"MedicalNet depth must be one of {sorted(self.LAYERS)}")
        self.conv1 = nn.Conv3d(1, 64, 7, stride=(2, 2, 2), padding=(3, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        cin = 64
        for i, (blocks, width) in enumerate(zip(self.LAYERS[depth], (64, 128, 256, 512))):
            stride = 1 if i == 0 else 2
            layer = []
            for b in range(blocks):
                layer.append(_BasicBlock(cin, width, stride if b == 0 else 1))
                cin = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))

    def forward(self, x):
        x = F.max_pool3d(F.relu(self.bn1(self.conv1(x[:, :1]))), 3, 2, 1)
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return x.mean(dim=(2, 3, 4))


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(path, "weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(path, f"not a safetensors file ({exc})") from None
    try:  # tensors only: weights_only refuses anything that would run code
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(path, f"not a tensors-only PyTorch file ({exc.__class__.__name__})") from None
    data = data.get("state_dict", data) if isinstance(data, dict) else data
    if not isinstance(data, dict):
        raise CheckpointError(path, "does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in data.items()}


def _fixed() -> FixedEncoder3D:
    from safetensors.torch import load_file

    blob = FIXED_WEIGHTS.read_bytes()
    if hashlib.sha256(blob).hexdigest() != FIXED_WEIGHTS_SHA256:
        raise CheckpointError(FIXED_WEIGHTS, "the shipped feature weights were changed; FID values would not compare")
    model = FixedEncoder3D()
    model.load_state_dict(load_file(str(FIXED_WEIGHTS)))
    return model.eval()


def load_extractor(kind: str = "fixed", weights: str | os.PathLike | None = None) -> tuple[nn.Module, str]:
    """An eval-mode extractor and a name for reports (``fixed``, ``medicalnet-resnet18:<file>``)."""
    if kind == "fixed":
        return _fixed(), "fixed-encoder3d-v1"
    if kind == "medicalnet":
        if weights is None:
            raise CheckpointError(None, "--features medicalnet needs --weights PATH (a local MedicalNet ResNet file)")
        tensors = _read_tensors(Path(weights))
        tensors = {k: v for k, v in tensors.items() if not k.startswith(("conv_seg", "fc"))}
        blocks = {int(k.split(".")[1]) for k in tensors if k.startswith("layer3.")}
        depth = {1: 10, 2: 18, 6: 34}.get(len(blocks))
        if depth is None:
            raise CheckpointError(weights, f"not a MedicalNet ResNet-10/18/34 state dict (layer3 has {len(blocks)} blocks)")
        model = MedicalNetResNet(depth)
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(weights, f"does not match MedicalNet ResNet-{depth} ({str(exc)[:200]})") from None
        return model.eval(), f"medicalnet-resnet{depth}:{Path(weights).name}"
    if kind == "segmenter":
        raise CheckpointError(
            weights,
            "segmenter features need a segbench run; segbench is not part of this "
            "version yet (use --features fixed or medicalnet)",
        )
    raise ValueError(f"unknown feature extractor {kind!r} (fixed, medicalnet, segmenter)")


@torch.no_grad()
def extract(model: nn.Module, volumes: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Features (N, D) float64 of volumes (N, 4, X, Y, Z) in [-1, 1]."""
    out = []
    for start in range(0, len(volumes), batch_size):
        x = torch.as_tensor(np.asarray(volumes[start : start + batch_size]), dtype=torch.float32)
        out.append(model(x).double().numpy())
    return np.concatenate(out)


def _write_fixed_weights() -> str:
    from safetensors.torch import save

    torch.manual_seed(20261124)
    model = FixedEncoder3D()
    for conv in model.stages:
        assert isinstance(conv, nn.Conv3d) and conv.bias is not None
        nn.init.kaiming_normal_(conv.weight, a=0.2, nonlinearity="leaky_relu")
        nn.init.zeros_(conv.bias)
    blob = save({k: v.contiguous() for k, v in model.state_dict().items()})
    FIXED_WEIGHTS.write_bytes(blob)
    return hashlib.sha256(blob).hexdigest()


if __name__ == "__main__":
    print(_write_fixed_weights())
