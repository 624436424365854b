"""Writing a phantom cohort folder: cases in BraTS-2023 layout, metadata.csv, phantom.json."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...io.atomic import atomic_write_text
from ...io.output_folders import staged_output
from ...brats import BRATS2023
from ...config.field_types import enforce_field_types
from ..layout import case_file_name
from ..metadata import METADATA_FILE
from ..nifti_write import write_nifti
from .anatomy import load_template, output_grid
from .subject import SubjectParams, sample_subject_params, synthesize_subject

__all__ = ["PhantomConfig", "make_phantom_cohort", "write_subjects", "PHANTOM_FILE", "INTENSITY_SCALE"]

PHANTOM_FILE = "phantom.json"
INTENSITY_SCALE = 1000.0  # written as int16, white matter on T1 near 800


@dataclass(frozen=True)
class PhantomConfig:
    """What to build: ``cases`` subjects, of which ``ssa_fraction`` from the SSA site and, of each
    site's, ``healthy_fraction`` without a tumour (an empty label map, grade ``none``)."""

    cases: int = 24
    seed: int = 0
    spacing: float = 2.0
    ssa_fraction: float = 0.25
    healthy_fraction: float = 0.0

    def __post_init__(self):
        enforce_field_types(self)
        if self.cases < 1:
            raise ValueError(f"cases must be at least 1, got {self.cases}")
        if not 0.0 <= self.ssa_fraction <= 1.0:
            raise ValueError(f"ssa_fraction must be in [0, 1], got {self.ssa_fraction}")
        if not 0.0 <= self.healthy_fraction <= 1.0:
            raise ValueError(f"healthy_fraction must be in [0, 1], got {self.healthy_fraction}")
        if not 0.5 <= self.spacing <= 8.0:
            raise ValueError(f"spacing must be between 0.5 and 8 mm, got {self.spacing}")

    def sites(self) -> list[str]:
        """Site of each subject: a seeded shuffle holding round(cases * ssa_fraction) SSA subjects."""
        n_ssa = int(round(self.cases * self.ssa_fraction))
        sites = np.array(["SSA"] * n_ssa + ["HIC"] * (self.cases - n_ssa))
        np.random.default_rng([self.seed, 2**31 - 1]).shuffle(sites)
        return [str(s) for s in sites]

    def healthy(self) -> list[bool]:
        """Whether each subject is tumour-free: round(n * healthy_fraction) of each site's n subjects,
        drawn from a stream of their own (the other subjects are the same at any fraction)."""
        sites = np.array(self.sites())
        flags = np.zeros(self.cases, dtype=bool)
        rng = np.random.default_rng([self.seed, 2**31 - 2])
        for site in sorted(set(sites)):
            members = np.flatnonzero(sites == site)
            flags[rng.permutation(members)[: int(round(len(members) * self.healthy_fraction))]] = True
        return flags.tolist()

    def record(self) -> dict:
        """The settings as ``phantom.json`` records them (a default healthy_fraction left out)."""
        out = {"cases": self.cases, "seed": self.seed, "spacing": self.spacing, "ssa_fraction": self.ssa_fraction}
        return out | ({"healthy_fraction": self.healthy_fraction} if self.healthy_fraction else {})


def subject_id(index: int) -> str:
    return f"BraTS-PHN-{index:05d}-000"


def _metadata_csv(params: list[SubjectParams]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["subject_id", "site", "grade"])
    for p in params:
        writer.writerow([p.subject_id, p.site, p.grade])
    return buffer.getvalue()


def _write_subject(folder: Path, p: SubjectParams, images, label, affine) -> None:
    case_dir = folder / p.subject_id
    case_dir.mkdir()
    for key, image in images.items():
        scaled = np.clip(np.round(image * INTENSITY_SCALE), 0, np.iinfo(np.int16).max)
        write_nifti(case_dir / case_file_name(p.subject_id, key, BRATS2023), scaled, affine, np.int16)
    write_nifti(case_dir / case_file_name(p.subject_id, "seg", BRATS2023), label, affine, np.uint8)


def write_subjects(folder: str | os.PathLike, params: list[SubjectParams], spacing: float) -> Path:
    """Render ``params`` into ``folder`` (which must exist) as a BraTS-layout cohort with its
    metadata.csv, as :func:`make_phantom_cohort` writes them (no phantom.json)."""
    folder = Path(folder)
    template = load_template(float(spacing))
    _, affine = output_grid(template)
    for p in params:
        images, label = synthesize_subject(p, template)
        _write_subject(folder, p, images, label, affine)
    atomic_write_text(folder / METADATA_FILE, _metadata_csv(params))
    return folder


def make_phantom_cohort(
    out: str | os.PathLike,
    config: PhantomConfig = PhantomConfig(),
    *,
    force: bool = False,
    preview: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> Path:
    """Build a phantom cohort in ``out``; the folder appears only once it is complete.

    Args:
        out: the cohort folder to create. An existing folder is refused unless ``force``.
        config: number of cases, seed, voxel spacing (mm), SSA share and tumour-free share.
        force: replace an existing ``out`` (only after the new cohort is complete).
        preview: also write ``preview.png`` (three planes x four modalities, label overlay).
        progress: ``progress(i, n, subject_id)`` called before each subject.

    Returns:
        The cohort folder. Same config, same bytes.
    """
    out = Path(out)
    template = load_template(float(config.spacing))
    _, affine = output_grid(template)
    with staged_output(out, "cohort", force=force) as work:
        params: list[SubjectParams] = []
        previews: list[tuple] = []
        for index, (site, healthy) in enumerate(zip(config.sites(), config.healthy())):
            sid = subject_id(index)
            if progress is not None:
                progress(index, config.cases, sid)
            p = sample_subject_params(template, sid, index, config.seed, site, healthy=healthy)
            images, label = synthesize_subject(p, template)
            _write_subject(work, p, images, label, affine)
            params.append(p)
            if preview and len(previews) < 4 and sum(q.site == site for q in params) <= 2:
                previews.append((f"{sid} {site} {p.grade}", images, label))
        atomic_write_text(work / METADATA_FILE, _metadata_csv(params))
        record = {
            "generator": "augment3d phantom",
            "template": "MNI152 2009a symmetric (nilearn)",
            "config": config.record(),
            "subjects": [p.to_dict() for p in params],
        }
        atomic_write_text(work / PHANTOM_FILE, json.dumps(record, indent=1) + "\n")
        if preview:
            from ...viz import save_montage

            save_montage(previews, work / "preview.png")
    return out
