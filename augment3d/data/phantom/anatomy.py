"""MNI152 2009a anatomy from the nilearn wheel, and smooth random fields and warps on top of it."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import DataError

__all__ = ["Template", "load_template", "smooth_field", "sample_volume", "output_grid"]

_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


@dataclass(frozen=True, eq=False)
class Template:
    """Tissue maps (values 0..1) on the template's 1 mm grid, pre-smoothed for ``spacing``."""

    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    spacing: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.gm.shape


def _template_dir() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(None, "nilearn is not installed; it ships the MNI152 templates the phantom is built from")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


@functools.lru_cache(maxsize=2)
def load_template(spacing: float) -> Template:
    """Load the MNI152 2009a T1 and GM/WM maps, smoothed against aliasing at ``spacing`` mm."""
    import nibabel as nib
    from scipy import ndimage

    folder = _template_dir()
    maps = {}
    affine = None
    for key, name in _FILES.items():
        path = folder / name
        if not path.is_file():
            raise DataError(path, "MNI152 template missing from the nilearn installation")
        image = nib.load(path)
        assert isinstance(image, nib.Nifti1Image)  # nilearn ships NIfTI-1 templates
        maps[key] = np.asarray(image.dataobj, dtype=np.float32) / 255.0
        affine = image.affine
    brain = (maps["t1"] > 0).astype(np.float32)
    sigma = max(0.0, (spacing - 1.0) / 2.0)
    if sigma > 0:
        maps = {k: ndimage.gaussian_filter(v, sigma) for k, v in maps.items()}
        brain = ndimage.gaussian_filter(brain, sigma)
    return Template(gm=maps["gm"], wm=maps["wm"], brain=brain, affine=np.asarray(affine), spacing=spacing)


def output_grid(template: Template) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the phantom's grid: the template's field of view at ``spacing`` mm."""
    s = template.spacing
    x, y, z = (int(np.floor(n / s)) for n in template.shape)
    shape = (x, y, z)
    to_template = np.eye(4)
    to_template[:3, :3] *= s
    to_template[:3, 3] = 0.5 * s - 0.5
    return shape, template.affine @ to_template


def smooth_field(rng: np.random.Generator, shape, control: int = 6, channels: int = 1) -> np.ndarray:
    """Smooth random field(s), zero mean, unit std per channel: noise on a coarse grid, upsampled."""
    import torch
    import torch.nn.functional as F
    from scipy import ndimage

    coarse = rng.standard_normal((channels, control, control, control)).astype(np.float32)
    coarse = np.stack([ndimage.gaussian_filter(c, 0.7, mode="wrap") for c in coarse])
    field = F.interpolate(torch.from_numpy(coarse)[None], size=tuple(shape), mode="trilinear", align_corners=True)
    out = field[0].numpy()
    out -= out.mean(axis=(1, 2, 3), keepdims=True)
    out /= out.std(axis=(1, 2, 3), keepdims=True) + 1e-8
    return out


def sample_volume(volume: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Trilinear sample of ``volume`` at voxel coordinates ``coords`` (3, X, Y, Z); zero outside."""
    import torch
    import torch.nn.functional as F

    size = np.array(volume.shape, dtype=np.float32).reshape(3, 1, 1, 1)
    norm = (2.0 * coords + 1.0) / size - 1.0  # align_corners=False convention
    grid = torch.from_numpy(np.ascontiguousarray(norm.transpose(3, 2, 1, 0), dtype=np.float32))[None]
    vol = torch.from_numpy(np.ascontiguousarray(volume.transpose(2, 1, 0)))[None, None]
    out = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0, 0].numpy().transpose(2, 1, 0)
