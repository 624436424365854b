"""Segmentation networks from segmentation-models-pytorch-3d, the Dice + cross-entropy loss, inference."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from augment3d.brats import LABEL_CLASSES, MODALITIES, REGIONS
from augment3d.errors import RecipeError
from augment3d.models.ops import conv3d
from augment3d.models.segmenter import soft_dice

from .config import BenchConfig

__all__ = ["build_model", "seg_loss", "pad_to", "predict", "autocast", "BenchConv3d"]

_MULTIPLE = 32  # smp-3d's encoders downsample five times; its own shape check never fires


def build_model(config: BenchConfig) -> torch.nn.Module:
    """An smp-3d network with 4 input modalities and 4 classes; weights never downloaded."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecations inside some encoders
        # importing smp-3d draws from torch's global RNG: forked, so that every job seeded alike
        # starts alike, whether or not an earlier one in the process imported it
        with torch.random.fork_rng(devices=[]):
            import segmentation_models_pytorch_3d as smp

        cls = getattr(smp, config.architecture, None)
        if cls is None or not isinstance(cls, type):
            raise RecipeError(None, f"[bench] architecture {config.architecture!r} is not in segmentation-models-pytorch-3d")
        kwargs = {"decoder_channels": config.decoder_channels} if config.architecture in ("Unet", "UnetPlusPlus") else {}
        try:
            model = cls(
                encoder_name=config.encoder,
                encoder_weights=None,
                in_channels=len(MODALITIES),
                classes=LABEL_CLASSES,
                encoder_depth=5,
                **kwargs,
            )
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise RecipeError(
                None, f"[bench] cannot build {config.architecture} with encoder {config.encoder!r}: {exc}"
            ) from None
    model = group_norm(model) if config.norm == "group" else model
    return bench_convs(model)


class BenchConv3d(torch.nn.Conv3d):
    """The bench's Conv3d: safe under CPU bf16 autocast, and one fp32 case on oneDNN.

    - On torch 2.14's CPU (oneDNN) path, the bf16 weight gradient of a padded 3x3x3 convolution
      whose input is 2 voxels deep is garbage: values up to 1e37 or non-finite, different on every
      call (measured: wrong in 40 of 40 calls at 32-1280 channels, and wrong at 16 and 24; inputs
      1, 3 and 4 voxels deep are right, and so is fp32). A 32^3 input reaches 2^3 four levels
      down, so a bf16 segbench job trained on noise there. Such a layer is tiny, so it runs in fp32.
    - Prediction runs one case at a time, and in fp32 torch gives the narrow layers of a batch of
      one its slow im2col kernel: :func:`augment3d.models.ops.conv3d` sends them to oneDNN
      (``predict`` on a 32^3 case with the ``phantom`` recipe's U-Net: 122-134 against 228-262 ms
      on a 2-core AVX2 CPU; the same labels).
    Every other call is an ordinary Conv3d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and 2 in x.shape[2:] and max(self.kernel_size) > 1:
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        if self.padding_mode == "zeros" and not isinstance(self.padding, str):
            return conv3d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return super().forward(x)


def bench_convs(module: torch.nn.Module) -> torch.nn.Module:
    """Make every plain Conv3d of ``module`` a :class:`BenchConv3d` (in place; same weights)."""
    for child in module.modules():
        if type(child) is torch.nn.Conv3d:
            child.__class__ = BenchConv3d
    return module


def group_norm(module: torch.nn.Module, groups: int = 8) -> torch.nn.Module:
    """Swap every BatchNorm for GroupNorm (in place).

    A 32^3 input reaches the encoder's bottom at 1^3, where BatchNorm normalises over only the
    batch's few values per channel (with one subject it refuses to run in training mode).
    GroupNorm does not depend on the batch. On the quick cohort the two trained alike over 100
    steps; the slow start seen there was the learning rate (1e-3 -> 3e-3), not the norm.
    """
    for name, child in module.named_children():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            channels = child.num_features
            g = next(k for k in range(min(groups, channels), 0, -1) if channels % k == 0)
            setattr(module, name, torch.nn.GroupNorm(g, channels, affine=child.affine))
        else:
            group_norm(child, groups)
    return module


def autocast(device, amp: str):
    """The segmenter's autocast context: bf16 when ``amp`` (resolved, not ``auto``) is ``bf16``."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp == "bf16")


def _region_probabilities(probs: torch.Tensor) -> torch.Tensor:
    """The BraTS regions' probabilities (B, 3, ...): WT, TC, ET from class probabilities (B, 4, ...)."""
    return torch.stack([probs[:, list(classes)].sum(1) for classes in REGIONS.values()], 1)


def seg_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice on the BraTS regions (WT, TC, ET), the regions that are scored."""
    labels = labels.long()
    ce = F.cross_entropy(logits, labels)
    probs = _region_probabilities(logits.float().softmax(1))
    truth = _region_probabilities(F.one_hot(labels, LABEL_CLASSES).movedim(-1, 1).float())
    return ce + (1 - soft_dice(probs, truth).mean())  # batch Dice: one score per region over the batch


def pad_to(x: torch.Tensor, multiple: int = _MULTIPLE, value: float = -1.0) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad the spatial axes of (B, C, X, Y, Z) up to a multiple; returns the tensor and the crop back."""
    sizes = x.shape[2:]
    extra = [(-s) % multiple for s in sizes]
    pad = []
    for e in reversed(extra):
        pad += [e // 2, e - e // 2]
    crop = tuple(slice(e // 2, e // 2 + s) for e, s in zip(extra, sizes))
    return (F.pad(x, pad, value=value) if any(extra) else x), crop


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, device: str = "cpu", patch: int = 0, amp: str = "none") -> np.ndarray:
    """Label map (X, Y, Z) uint8 of one case's images (4, X, Y, Z) in [-1, 1]."""
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[None].to(device)
    with autocast(device, amp):
        if patch and any(s > patch for s in x.shape[2:]):
            return _predict_patches(model, x, device, patch)
        padded, crop = pad_to(x)
        logits = model(padded)[(slice(None), slice(None), *crop)].float()
    return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()


def _predict_patches(model, x: torch.Tensor, device: str, patch: int) -> np.ndarray:
    """Sliding window (half-patch overlap, averaged logits) for volumes larger than the patch."""
    import torchio as tio

    subject = tio.Subject(image=tio.ScalarImage(tensor=x[0].cpu()))
    sampler = tio.GridSampler(subject, patch, patch // 2, padding_mode=-1.0)
    aggregator = tio.GridAggregator(sampler, overlap_mode="average")
    for batch in tio.SubjectsLoader(sampler, batch_size=2):  # type: ignore[arg-type]  # a GridSampler is a dataset
        logits = model(batch["image"][tio.DATA].to(device)).float()
        aggregator.add_batch(logits.cpu(), batch[tio.LOCATION])
    return aggregator.get_output_tensor().argmax(0).to(torch.uint8).numpy()
