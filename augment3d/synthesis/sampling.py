"""A trained generator for users: load it, generate subjects by seed and condition.

Example:
    >>> gen = load_generator("runs/quick")                       # doctest: +SKIP
    >>> images, labels = gen.generate(2, condition={"site": "SSA", "grade": "HGG"}, seeds=[0, 1])  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..io.checkpoint import load_bundle
from ..data.conditions import ConditionEncoder
from ..data.preprocess import PreprocessConfig
from ..brats import MODALITIES
from ..errors import CheckpointError, DataError
from ..data.label_bank import LabelBank
from ..memory import check_fits
from ..pretrained import run_folder
from ..io.run_files import GENERATOR, save_generator  # noqa: F401  (re-exported: its old home)
from ..models.spatial_conditioning import inpaint_maps, label_maps as map_tensor, maps_to_labels
from ..models import Generator3D, ModelConfig

__all__ = ["SyntheticGenerator", "load_generator", "save_generator", "GENERATOR_FILE", "PRECISIONS"]

GENERATOR_FILE = GENERATOR  # the bundle's name (augment3d.io.run_files)
#: labels mode: brain voxels are kept at least this far above the background's -1
BRAIN_FLOOR = 1e-3

#: generation precisions: fp32 (the reference) or bf16 autocast (faster where the CPU has bf16
#: instructions or on a GPU; docs/PERFORMANCE.md)
PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


class SyntheticGenerator:
    """A loaded generator: ``.conditions``, ``.modalities``, ``.shape`` and :meth:`generate`."""

    def __init__(self, network: Generator3D, encoder: ConditionEncoder, meta: dict, device="cpu", path=None):
        self.network = network.eval().to(device)
        self.network.channels_last = True  # same values, faster convolutions (docs/PERFORMANCE.md)
        self.encoder = encoder
        self.meta = meta
        self.device = torch.device(device)
        self.path = Path(path) if path else None
        self._w_centres: dict[tuple, torch.Tensor] = {}
        #: labels mode: the run's training label maps, which seeds draw from (None: give maps)
        self.bank: LabelBank | None = None

    @property
    def takes_labels(self) -> bool:
        """True for a labels-to-images generator: label maps are its input (``mode`` in generator.json)."""
        return self.network.takes_labels

    @property
    def inpaints(self) -> bool:
        """True for an inpainting generator: it renders a region of a real crop (:meth:`inpaint`)."""
        return self.network.inpaints

    @property
    def conditions(self) -> dict[str, list[str]]:
        return dict(self.encoder.categories)

    @property
    def modalities(self) -> list[str]:
        return list(self.meta["modalities"])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.network.config.shape)

    @property
    def preprocess(self) -> PreprocessConfig:
        """The preprocessing the run's data went through: onto the model grid, or for an inpainting
        run onto the data grid its crops were cut from (``[data] shape``; the model grid is the crop)."""
        recorded = self.meta.get("preprocess", {})
        if self.inpaints and "shape" in recorded:
            return PreprocessConfig.from_dict(recorded)
        return PreprocessConfig.from_dict({**recorded, "shape": list(self.shape)})

    @property
    def voxel_mm(self) -> float:
        """The median voxel size (mm) of the training data on the model grid (1 when not recorded)."""
        return float(self.meta.get("voxel_mm", self.meta.get("preprocess", {}).get("voxel_mm", 1.0)))

    @property
    def affine(self) -> np.ndarray:
        """The model grid in world space: RAS axes, isotropic voxels of the training data's median
        size on the grid, centred on the origin (where preprocessing put no absolute position)."""
        affine = np.diag([self.voxel_mm] * 3 + [1.0])
        affine[:3, 3] = -self.voxel_mm * (np.asarray(self.shape, dtype=np.float64) - 1) / 2
        return affine

    def _condition_vector(self, condition: Mapping[str, str] | None, n: int) -> torch.Tensor | None:
        if not self.encoder.categories:
            return None
        vec = self.encoder.encode(condition or {}, source=str(self.path) if self.path else None)
        return torch.from_numpy(vec).expand(n, -1).to(self.device)

    @torch.no_grad()
    def w_centre(self, condition: Mapping[str, str] | None, samples: int = 512) -> torch.Tensor:
        """Mean w of a condition (fixed seed), the centre that truncation pulls towards."""
        key = tuple(sorted((condition or {}).items()))
        if key not in self._w_centres:
            g = torch.Generator().manual_seed(2**31 - 1)
            z = torch.randn(samples, self.network.config.z_dim, generator=g).to(self.device)
            self._w_centres[key] = self.network.mapping(z, self._condition_vector(condition, samples)).mean(0, keepdim=True)
        return self._w_centres[key]

    def latent(self, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """z and noise for ``seed``, drawn on the CPU: a seed names a subject on every device."""
        return self._draws(seed)[:2]

    def _draws(self, seed: int, condition: Mapping[str, str] | None = None, with_map: bool = False):
        """z, noise and (labels mode, ``with_map``) a deformed map of the run's and its source
        subject, in this order from ``seed``'s generator."""
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(1, self.network.config.z_dim, generator=g)
        noise = self.network.make_noise(1, g)
        if not with_map:
            return z, noise, None, None
        if self.bank is None:
            raise ValueError(
                f"{self.path or 'this generator'} renders images from label maps and keeps none of its "
                "own: give label_maps=(labels, masks)"
            )
        maps, source = self.bank.draw(g, condition)
        return z, noise, maps, source

    def _stacked(self, latents) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The z and per-layer noise of several :meth:`_draws` as one batch on this generator's device."""
        z = torch.cat([lat[0] for lat in latents]).to(self.device)
        noise = [torch.cat([lat[1][k] for lat in latents]).to(self.device) for k in range(len(latents[0][1]))]
        return z, noise

    def map_sources(
        self, seeds: Sequence[int], condition: Mapping[str, str] | None = None, maps_matching: Sequence[str] | None = None
    ) -> list[str]:
        """The training subjects whose (deformed) label maps ``seeds`` render (labels mode)."""
        maps_condition = self._maps_condition(condition, maps_matching)
        return [self._draws(s, maps_condition, with_map=True)[3] for s in seeds]

    def _maps_condition(self, condition: Mapping[str, str] | None, maps_matching: Sequence[str] | None):
        """The part of ``condition`` a drawn training map must share: all of it (``maps_matching``
        None) or the named columns only (``[]``: any map)."""
        if maps_matching is not None and not self.takes_labels:
            raise ValueError(
                "maps_matching picks training label maps to render; this generator draws its own labels (joint mode)"
            )
        if maps_matching is None or condition is None:
            return condition
        unknown = sorted(set(maps_matching) - set(self.conditions))
        if unknown or isinstance(maps_matching, str):
            raise ValueError(
                f"maps_matching must list condition columns of this run ({', '.join(self.conditions) or 'none'}), "
                f"got {maps_matching!r}"
            )
        return {k: v for k, v in condition.items() if k in maps_matching}

    @torch.no_grad()
    def generate(
        self,
        n: int | None = None,
        condition: Mapping[str, str] | None = None,
        seeds: Sequence[int] | None = None,
        psi: float = 1.0,
        batch_size: int = 8,
        precision: str = "fp32",
        mix_seeds: Sequence[int] | None = None,
        mix_cutoff: int | None = None,
        label_maps: tuple[np.ndarray, np.ndarray] | None = None,
        maps_matching: Sequence[str] | None = None,
    ):
        """Generate subjects. Returns ``(images (n, 4, X, Y, Z) float32 in [-1, 1], labels (n, X, Y, Z) uint8)``.

        A labels-to-images generator renders ``label_maps`` = (labels (n, X, Y, Z) in 0-3, brain
        masks (n, X, Y, Z)) on the model grid and returns those labels; without them each seed
        draws one of the run's training maps (of the requested condition, when the run has any;
        ``maps_matching = ["grade"]`` draws among the maps of that column only, e.g. every site's
        tumours rendered as ``{"site": "SSA"}``) and deforms it.

        Args:
            n: how many (default ``len(seeds)``); seeds default to ``0 .. n-1``.
            condition: e.g. ``{"site": "SSA", "grade": "HGG"}``; unknown categories raise DataError.
            seeds: one per subject; the same seed and condition always give the same subject.
            psi: truncation towards the condition's mean w (1 = none).
            precision: ``fp32`` (default) or ``bf16`` autocast (1.6-2.3x faster at batch 8 on
                this project's CPU, which has bf16 instructions); a seed gives the same subject
                in either, within bf16's rounding, so the precision is part of a subject's name.
            mix_seeds, mix_cutoff: style mixing. Subject i takes the coarse styles (the style inputs
                before ``mix_cutoff``) from ``seeds[i]`` and the finer ones from ``mix_seeds[i]``;
                its noise is ``seeds[i]``'s. The style inputs run from coarse to fine: 0 and 1 on
                the base grid, then three per doubling (``network.num_ws`` in all). Both or neither.

        Example:
            >>> gen = load_generator("runs/quick")                     # doctest: +SKIP
            >>> images, labels = gen.generate(seeds=[0], mix_seeds=[7], mix_cutoff=5)  # doctest: +SKIP
        """
        check_precision(precision)
        if self.inpaints:
            raise DataError(
                self.path,
                "is an inpainting generator: it renders a lesion into a crop of a real subject "
                "(SyntheticGenerator.inpaint), not whole subjects",
            )
        if seeds is None:
            if n is None:
                raise ValueError("give n or seeds")
            seeds = list(range(n))
        seeds = [int(s) for s in seeds]
        if n is not None and n != len(seeds):
            raise ValueError(f"n={n} but {len(seeds)} seeds given")
        mixing = self._check_mixing(len(seeds), mix_seeds, mix_cutoff)
        if condition is not None or self.encoder.categories:
            condition = self.encoder.check(condition or {}, source=str(self.path) if self.path else None)
        centre = self.w_centre(condition) if psi != 1.0 else None
        given = self._given_maps(label_maps, len(seeds))
        maps_condition = self._maps_condition(condition, maps_matching)
        images, labels = [], []
        for start in range(0, len(seeds), batch_size):
            chunk = seeds[start : start + batch_size]
            latents = [self._draws(s, maps_condition, with_map=self.takes_labels and given is None) for s in chunk]
            z, noise = self._stacked(latents)
            maps = None
            if self.takes_labels:
                maps = given[start : start + batch_size] if given is not None else torch.cat([lat[2] for lat in latents])
                maps = maps.to(self.device)
            c = self._condition_vector(condition, len(chunk))
            w = self.network.truncate(self.network.mapping(z, c), centre, psi)
            if mixing is not None:
                z_mix = torch.cat([self.latent(s)[0] for s in mixing[start : start + batch_size]]).to(self.device)
                w_mix = self.network.truncate(self.network.mapping(z_mix, c), centre, psi)
                w = self.network.mix_styles(w, w_mix, mix_cutoff)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                image, logits = self.network.from_w(w, noise, maps)
            if not (torch.isfinite(image).all() and (logits is None or torch.isfinite(logits).all())):
                raise CheckpointError(
                    self.path,
                    f"the generator produced NaN or Inf voxels (seeds {chunk[:4]}...); "
                    "its weights are broken: retrain or use another checkpoint",
                )
            image = image.float().clamp(-1, 1)
            if maps is not None:  # -1 means background, exactly: the brain stays just above it
                image = torch.where(maps[:, :1] > 0, image.clamp(min=-1.0 + BRAIN_FLOOR), -1.0)
            images.append(image.cpu())
            labels.append(
                maps_to_labels(maps).cpu() if maps is not None else logits.float().max(1).indices.to(torch.uint8).cpu()
            )  # = argmax(1), much faster on a CPU
        return torch.cat(images).numpy(), torch.cat(labels).numpy()

    @torch.no_grad()
    def inpaint(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        regions: np.ndarray,
        condition: Mapping[str, str] | None = None,
        seeds: Sequence[int] | None = None,
        psi: float = 1.0,
        precision: str = "fp32",
    ) -> np.ndarray:
        """Render ``regions`` of crops on the model grid (an inpainting generator).

        ``images`` (n, 4, X, Y, Z) in [-1, 1] are the crops, ``labels`` (n, X, Y, Z) in 0-3 the label
        maps to render there (e.g. a new lesion placed into the crop), ``regions`` (n, X, Y, Z) in
        [0, 1] where to render (1: the rendering, 0: the crop as given, between: a blend). Returns
        the crops with the regions rendered, (n, 4, X, Y, Z) float32: every voxel where the region
        is 0 is bit-identical to the given crop. Seed ``seeds[i]`` (default ``0 .. n-1``) and the
        condition name the rendering, as in :meth:`generate`.
        """
        check_precision(precision)
        if not self.inpaints:
            raise DataError(self.path, 'is not an inpainting generator ([model] mode = "inpaint")')
        images, labels, regions = (np.asarray(a) for a in (images, labels, regions))
        n = images.shape[0]
        expected = (n, *self.shape)
        if images.shape != (n, 4, *self.shape) or labels.shape != expected or regions.shape != expected:
            raise ValueError(
                f"inpaint takes images (n, 4, {', '.join(map(str, self.shape))}) and labels and regions of shape "
                f"{expected}; got {images.shape}, {labels.shape}, {regions.shape}"
            )
        if labels.min(initial=0) < 0 or labels.max(initial=0) > 3 or not ((regions >= 0) & (regions <= 1)).all():
            raise ValueError("labels must be in 0-3 (background, NETC, SNFH, ET) and regions in [0, 1]")
        seeds = list(range(n)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != n:
            raise ValueError(f"{len(seeds)} seeds for {n} crops: give one per crop")
        if condition is not None or self.encoder.categories:
            condition = self.encoder.check(condition or {}, source=str(self.path) if self.path else None)
        given = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        label = torch.from_numpy(labels.astype(np.int64))
        region = torch.from_numpy(np.ascontiguousarray(regions, dtype=np.float32))
        brain = (given > -1.0 + BRAIN_FLOOR).any(1) | (label > 0)
        maps = inpaint_maps(map_tensor(label, brain), given, region).to(self.device)
        z, noise = self._stacked([self._draws(s) for s in seeds])
        c = self._condition_vector(condition, n)
        w = self.network.truncate(self.network.mapping(z, c), self.w_centre(condition) if psi != 1.0 else None, psi)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            rendered, _ = self.network.from_w(w, noise, maps)
        rendered = rendered.float().cpu()
        if not torch.isfinite(rendered).all():
            raise CheckpointError(self.path, "the generator produced NaN or Inf voxels; its weights are broken")
        inside = torch.where(brain[:, None], rendered.clamp(-1.0 + BRAIN_FLOOR, 1.0), -1.0)
        return torch.where(region[:, None] > 0, inside, given).numpy()

    def _given_maps(self, label_maps_given, n: int) -> torch.Tensor | None:
        """``label_maps`` = (labels, masks) as the network's map tensor, checked (labels mode only)."""
        if label_maps_given is None:
            return None
        if not self.takes_labels:
            raise ValueError("this generator draws its own labels (joint mode); label_maps are for labels-to-images runs")
        labels, masks = (np.asarray(a) for a in label_maps_given)
        expected = (n, *self.shape)
        if labels.shape != expected or masks.shape != expected:
            raise ValueError(f"label_maps must be two arrays of shape {expected}, got {labels.shape} and {masks.shape}")
        if labels.min(initial=0) < 0 or labels.max(initial=0) > 3:
            raise ValueError("label maps hold values outside 0-3 (background, NETC, SNFH, ET)")
        return map_tensor(torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(masks.astype(bool)))

    def _check_mixing(self, n: int, mix_seeds: Sequence[int] | None, mix_cutoff: int | None) -> list[int] | None:
        if mix_seeds is None and mix_cutoff is None:
            return None
        if mix_seeds is None or mix_cutoff is None:
            raise ValueError("style mixing needs both mix_seeds and mix_cutoff")
        mix_seeds = [int(s) for s in mix_seeds]
        if len(mix_seeds) != n:
            raise ValueError(f"{len(mix_seeds)} mix_seeds for {n} seeds: give one per subject")
        num_ws = self.network.num_ws
        if not 0 <= int(mix_cutoff) <= num_ws:
            raise ValueError(f"mix_cutoff must be between 0 and {num_ws} (this generator's style inputs), got {mix_cutoff}")
        return mix_seeds


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> SyntheticGenerator:
    """Load the generator of a run folder, or a bundled one by name (``"phantom"``,
    :mod:`augment3d.pretrained`). Raises :class:`CheckpointError` for anything not ours."""
    path = run_folder(path)
    if not path.is_dir():
        raise CheckpointError(path, "not a run folder")
    tensors, meta = load_bundle(path, GENERATOR_FILE, "generator")
    try:
        config = ModelConfig.from_dict(meta["model"])
        encoder = ConditionEncoder.from_dict(meta["conditions"])
        if config.cond_dim != encoder.dim:
            raise ValueError(f"model expects {config.cond_dim} condition values, encoder gives {encoder.dim}")
        if list(meta.get("modalities", MODALITIES)) != list(MODALITIES):
            raise ValueError(f"modalities {meta.get('modalities')} are not the {', '.join(MODALITIES)} this augment3d generates")
        _check_weights(config, tensors)
        with torch.random.fork_rng(devices=[]):  # the random initialisation is overwritten: loading a
            network = Generator3D(config)  # generator leaves the caller's random stream alone
        network.load_state_dict(tensors, strict=True)
        gen = SyntheticGenerator(network, encoder, meta, device=device, path=path)
        _check_run_info(gen)
        if gen.takes_labels or gen.inpaints:
            gen.bank = LabelBank.load(path, gen.shape)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(path / f"{GENERATOR_FILE}.json", f"does not describe a usable generator ({exc})") from None
    return gen


def _check_weights(config: ModelConfig, tensors: dict) -> None:
    """The weights fit the architecture (compared on torch's meta device, which allocates nothing,
    so a description claiming a huge network is refused before it is built), are float32 and finite."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Generator3D(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        differ = sorted(set(expected) ^ set(got)) or [k for k in expected if expected[k] != got[k]]
        raise ValueError(f"weights do not fit the architecture it describes (first differences: {', '.join(differ[:3])})")
    for name, tensor in tensors.items():
        if tensor.dtype != torch.float32:
            raise ValueError(f"weight {name} is {tensor.dtype}, not float32")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"weight {name} holds NaN or Inf values; the generator would write them into images")
    check_fits(2 * 4 * sum(int(np.prod(s)) for s in expected.values()), None, "building the generator")


def _check_run_info(gen: SyntheticGenerator) -> None:
    voxel = gen.voxel_mm
    if not (np.isfinite(voxel) and 0.01 <= voxel <= 100.0):
        raise ValueError(f"voxel_mm {voxel} is not a voxel size in mm")
    gen.preprocess  # noqa: B018 (raises ValueError for settings that do not check out)


def check_conditions_match(gen: SyntheticGenerator, data_root: str | os.PathLike) -> None:
    """Refuse a generator conditioned on columns the cohort's metadata.csv does not have."""
    from ..data.metadata import read_metadata

    if not gen.conditions:
        return
    metadata = read_metadata(data_root)
    columns = set(metadata.columns) if metadata is not None else set()
    missing = [c for c in gen.conditions if c not in columns]
    if missing:
        raise CheckpointError(
            Path(gen.path or ".") / f"{GENERATOR_FILE}.json",
            f"conditioned on {', '.join(gen.conditions)}, but {data_root} has no "
            f"{'metadata.csv' if metadata is None else 'column ' + ', '.join(missing)} to match",
        )
