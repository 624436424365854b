"""One phantom subject: sampled parameters, then anatomy, tumour, contrast and scanner effects."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace

import numpy as np

from ...brats import MODALITIES
from .anatomy import Template, output_grid, sample_volume, smooth_field
from .contrast import SITE_SCANNER, TISSUES, tissue_table

__all__ = ["SubjectParams", "sample_subject_params", "synthesize_subject", "as_site"]

HGG_SHARE = {"HIC": 0.6, "SSA": 0.85}
# tumour presentation per site: radius (mm) per grade, necrotic share of the radius, oedema reach
TUMOUR = {
    "HIC": {"HGG": (10.0, 18.0), "LGG": (8.0, 14.0), "necrosis": (0.30, 0.60), "oedema": (0.5, 1.2)},
    "SSA": {"HGG": (16.0, 26.0), "LGG": (12.0, 20.0), "necrosis": (0.55, 0.80), "oedema": (0.7, 1.4)},
}


@dataclass
class SubjectParams:
    """Everything drawn for one subject; recorded in the cohort's ``phantom.json``."""

    subject_id: str
    index: int
    seed: int
    site: str
    grade: str
    scale: list[float]
    rotation_deg: list[float]
    warp_mm: float
    centre_voxel: list[float]
    radius_mm: float
    axes: list[float]
    necrosis_fraction: float
    oedema_reach: float
    mass_effect: float
    noise: float
    bias: float
    fwhm_mm: float
    slice_mm: float
    slice_axis: int
    intensities: dict[str, list[float]]
    healthy: bool = False  # no tumour: an empty label map, grade "none"

    def to_dict(self) -> dict:
        out = asdict(self)
        if not self.healthy:
            del out["healthy"]  # the records of tumour subjects read as before
        return out


@functools.lru_cache(maxsize=2)
def _centre_candidates(template: Template) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(template.brain > 0.5)
    idx = np.argwhere(template.wm > 0.6)
    return idx, depth[tuple(idx.T)]


def sample_subject_params(
    template: Template, subject_id: str, index: int, seed: int, site: str, healthy: bool = False
) -> SubjectParams:
    """Draw one subject's parameters from ``np.random.default_rng([seed, index])``; a ``healthy``
    subject draws the same anatomy and scan and has no tumour (grade ``none``)."""
    rng = np.random.default_rng([seed, index])
    grade = "HGG" if rng.random() < HGG_SHARE[site] else "LGG"
    tumour = TUMOUR[site]
    radius = float(rng.uniform(*tumour[grade]))
    idx, depth = _centre_candidates(template)
    ok = depth > 0.8 * radius + 6.0
    pool = idx[ok] if ok.any() else idx[depth >= depth.max() - 1]
    centre = pool[rng.integers(len(pool))].astype(float) + rng.uniform(-0.5, 0.5, 3)
    params = SubjectParams(
        subject_id=subject_id,
        index=index,
        seed=seed,
        site=site,
        grade=grade,
        scale=rng.uniform(0.93, 1.07, 3).round(4).tolist(),
        rotation_deg=rng.uniform(-6.0, 6.0, 3).round(3).tolist(),
        warp_mm=round(float(rng.uniform(2.0, 4.0)), 3),
        centre_voxel=centre.round(3).tolist(),
        radius_mm=round(radius, 3),
        axes=rng.uniform(0.8, 1.25, 3).round(4).tolist(),
        necrosis_fraction=round(float(rng.uniform(*tumour["necrosis"])), 4) if grade == "HGG" else 0.0,
        oedema_reach=round(float(rng.uniform(*tumour["oedema"])) * (1.0 if grade == "HGG" else 0.5), 4),
        mass_effect=round(float(rng.uniform(0.3, 0.6) if grade == "HGG" else rng.uniform(0.15, 0.35)), 4),
        **_scan(site, rng),
    )
    if healthy:
        params = replace(
            params, grade="none", radius_mm=0.0, necrosis_fraction=0.0, oedema_reach=0.0, mass_effect=0.0, healthy=True
        )
    return params


def _scan(site: str, rng: np.random.Generator) -> dict:
    """What ``site``'s scanner and protocol make of a subject: noise, bias, blur, slices, contrast."""
    scanner = SITE_SCANNER[site]
    return {
        "noise": round(float(rng.uniform(*scanner["noise"])), 5),
        "bias": round(float(rng.uniform(*scanner["bias"])), 4),
        "fwhm_mm": round(float(rng.uniform(*scanner["fwhm"])), 3),
        "slice_mm": round(float(rng.uniform(*scanner["slice"])), 3),
        "slice_axis": int(rng.integers(3)) if site == "SSA" else 2,
        "intensities": {m: v.round(4).tolist() for m, v in tissue_table(site, rng).items()},
    }


def as_site(p: SubjectParams, site: str) -> SubjectParams:
    """The same subject (anatomy, tumour, grade) scanned at ``site``: that site's scanner effects
    and tissue contrast, drawn from a stream named by the subject and the site. What a perfect
    restyle into ``site`` would give; ``p`` itself when it is already from ``site``."""
    if site == p.site:
        return p
    if site not in SITE_SCANNER:
        raise ValueError(f"unknown phantom site {site!r}; the phantom has {', '.join(SITE_SCANNER)}")
    rng = np.random.default_rng([p.seed, p.index, 7, sorted(SITE_SCANNER).index(site)])
    return replace(p, site=site, **_scan(site, rng))


def _rotation(degrees) -> np.ndarray:
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _warp_coordinates(p: SubjectParams, template: Template, shape, rng) -> tuple[np.ndarray, np.ndarray]:
    """Template voxel coordinates (1 mm) of every output voxel, and offsets to the tumour centre."""
    s = template.spacing
    axes = [(np.arange(n, dtype=np.float32) + 0.5) * s - 0.5 for n in shape]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))
    centre = np.asarray(p.centre_voxel, dtype=np.float32).reshape(3, 1, 1, 1)
    offset = grid - centre
    r = np.sqrt((offset**2).sum(0)) + 1e-6
    push = p.mass_effect * p.radius_mm * np.exp(-(r**2) / (2.0 * (1.5 * max(p.radius_mm, 1e-3)) ** 2))
    src = centre + offset * (np.maximum(r - push, 0.0) / r)
    src = src + p.warp_mm * smooth_field(rng, shape, control=5, channels=3)
    brain_centre = (np.array(template.shape, dtype=np.float32) / 2.0).reshape(3, 1, 1, 1)
    linear = (_rotation(p.rotation_deg) @ np.diag(1.0 / np.asarray(p.scale))).astype(np.float32)
    src = np.einsum("ij,jxyz->ixyz", linear, src - brain_centre) + brain_centre
    return src.astype(np.float32), offset


def synthesize_subject(p: SubjectParams, template: Template) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Render one subject: ``({modality: float32 volume}, label uint8)`` on :func:`output_grid`."""
    from scipy import ndimage

    shape, _ = output_grid(template)
    rng = np.random.default_rng([p.seed, p.index, 1])
    src, offset = _warp_coordinates(p, template, shape, rng)
    gm, wm, brain = (np.clip(sample_volume(m, src), 0, 1) for m in (template.gm, template.wm, template.brain))
    mask = brain > 0.5
    csf = np.clip(brain - gm - wm, 0.0, 1.0)

    # tumour: irregular rotated ellipsoid; rho < 1 inside, oedema reaching further along white matter
    rot = _rotation(rng.uniform(-180, 180, 3)).astype(np.float32)
    local = np.einsum("ji,jxyz->ixyz", rot, offset) / np.asarray(p.axes, dtype=np.float32).reshape(3, 1, 1, 1)
    rough = smooth_field(rng, shape, control=9, channels=2)
    rho = np.sqrt((local**2).sum(0)) / (max(p.radius_mm, 1e-3) * (1.0 + 0.18 * rough[0]))
    if p.healthy:
        rho = np.full_like(rho, np.inf)  # nothing inside the tumour, nor its oedema
    rho_oedema = 1.0 + p.oedema_reach * (0.25 + 1.1 * wm) * (1.0 + 0.3 * rough[1])
    width = 0.05
    tumour = _sigmoid((1.0 - rho) / width) * mask
    parenchyma = gm + wm
    oedema = _sigmoid((rho_oedema - rho) / width) * (1.0 - tumour) * np.clip(parenchyma / (brain + 1e-6), 0, 1)
    if p.grade == "HGG":
        necrosis = tumour * _sigmoid((p.necrosis_fraction - rho) / width)
        enhancing, nonenhancing = tumour - necrosis, np.zeros_like(tumour)
    else:
        necrosis = enhancing = np.zeros_like(tumour)
        nonenhancing = tumour
    keep = 1.0 - tumour
    fractions = {
        "csf": csf * keep,
        "gm": gm * keep * (1.0 - oedema),
        "wm": wm * keep * (1.0 - oedema),
        "oedema": parenchyma * keep * oedema,
        "necrosis": necrosis,
        "enhancing": enhancing,
        "nonenhancing": nonenhancing,
    }

    label = np.zeros(shape, dtype=np.uint8)
    solid = (rho < 1.0) & mask
    label[(rho < rho_oedema) & ~solid & mask & (parenchyma > 0.5 * brain)] = 2
    if p.grade == "HGG":
        label[solid] = 3
        label[solid & (rho < p.necrosis_fraction)] = 1
    else:
        label[solid] = 1

    texture = 1.0 + 0.04 * smooth_field(rng, shape, control=14)[0]
    bias_field = smooth_field(rng, shape, control=4, channels=4)
    s = template.spacing
    sigma = [p.fwhm_mm / 2.355 / s] * 3
    sigma[p.slice_axis] = max(p.slice_mm, p.fwhm_mm) / 2.355 / s
    images = {}
    for m, modality in enumerate(MODALITIES):
        values = p.intensities[modality]
        image = sum(fractions[t] * values[k] for k, t in enumerate(TISSUES)) * texture
        image = ndimage.gaussian_filter(image.astype(np.float32), sigma, mode="constant")
        image = image * np.exp(p.bias * bias_field[m])
        n1 = rng.standard_normal(shape, dtype=np.float32)
        n2 = rng.standard_normal(shape, dtype=np.float32)
        image = np.sqrt((image + p.noise * n1) ** 2 + (p.noise * n2) ** 2)
        image[~mask] = 0.0
        images[modality] = image.astype(np.float32)
    return images, label
