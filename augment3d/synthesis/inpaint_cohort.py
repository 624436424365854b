"""``augment3d sample RUN OUT --into COHORT``: inpainted copies of a real cohort's subjects.

Each written subject is a real subject of COHORT (the recipients, in turn) with a new lesion: a
donor's label map from a tumour bank of the same cohort (``donors_where`` narrows the donors,
e.g. ``{"site": "SSA"}``) placed as :class:`~augment3d.TumourPaste` places it (whole lesion in
the brain, clear of the subject's own tumour) and rendered there by the inpainting run
(:class:`~augment3d.TumourInpainter`). Subject ``i`` is placed by ``default_rng([seed, i])``;
where its recipient has no room, the next recipients are tried in turn. Every voxel outside the
rendered region keeps the recipient's value; files keep its grid and affine. Written in the
BraTS-2023 layout with ``metadata.csv`` (the recipient's conditions, recipient, donor, the
generator's seed), so the copies drop into the same pipelines as the real cases.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..brats import MODALITIES
from ..errors import DataError

__all__ = ["inpaint_into_cohort"]


class _CohortSubjects(Sequence):
    """A cohort's cases as torchio subjects, each read (and checked) when asked for, so a cohort of
    full-size scans need not fit in memory; every case is read once up front, so a damaged one is
    refused before any work."""

    def __init__(self, cohort: Path, columns, categories, given: Mapping[str, str]):
        from ..data import discover_cases, read_metadata

        self.metadata = read_metadata(cohort)
        self.cases = discover_cases(cohort)
        if not self.cases:
            raise DataError(cohort, "holds no case folders in BraTS layout")
        self.columns = [c for c in columns if c not in given]
        self.categories, self.given = categories, dict(given)
        self.rows = self.metadata.rows if self.metadata is not None else {}
        for i in range(len(self.cases)):
            self[i]

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i):
        import torch
        import torchio as tio

        from ..data import read_case

        loaded = read_case(self.cases[i], self.metadata, self.columns, self.categories)
        images = {
            m: tio.ScalarImage(tensor=torch.from_numpy(np.ascontiguousarray(loaded.images[m]))[None], affine=loaded.affine)
            for m in MODALITIES
        }
        seg = tio.LabelMap(tensor=torch.from_numpy(loaded.label.astype(np.uint8))[None], affine=loaded.affine)
        return tio.Subject(**images, seg=seg, subject_id=loaded.subject_id, **{**loaded.conditions, **self.given})


def inpaint_into_cohort(
    run: str | os.PathLike,
    cohort: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n: int | None = None,
    seed: int = 0,
    condition: Mapping[str, str] | None = None,
    donors_where: Mapping[str, str] | None = None,
    grow: int = 2,
    margin: int = 2,
    psi: float = 1.0,
    precision: str = "auto",
    device: str = "cpu",
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write ``n`` (default: one per case) inpainted copies of ``cohort``'s subjects to ``out`` (see
    the module); ``condition`` renders every lesion under it (columns it leaves out come from each
    recipient's metadata). Returns the counts (inpainted, no room, moved, donors, recipients)."""
    from .. import TumourBank, TumourInpainter
    from ..io.atomic import atomic_write_text
    from ..io.output_folders import claim_output, staged_output
    from ..io.run_files import generator_mode
    from ..pretrained import run_folder
    from ..transforms.tumour_paste import placements
    from .export import csv_text, write_brats
    from .sampling import load_generator

    run, cohort = run_folder(run), Path(cohort)
    if generator_mode(run) != "inpaint":
        raise DataError(run, 'is not an inpainting run ([model] mode = "inpaint"): --into renders lesions into real subjects')
    if not cohort.is_dir():
        raise DataError(cohort, "cohort folder does not exist")
    claim_output(out, "samples", force=force, inputs=[run, cohort])
    gen = load_generator(run)
    given = gen.encoder.check_partial(dict(condition), source="--condition") if condition and gen.conditions else {}
    subjects = _CohortSubjects(cohort, list(gen.conditions), gen.conditions, given)
    rows = subjects.rows
    where = dict(donors_where or {})
    unknown = sorted(k for k in where if not any(k in row for row in rows.values()))
    if unknown:
        raise DataError(cohort / "metadata.csv", f"has no column {', '.join(unknown)} to choose donors by")
    donors = [
        i for i, case in enumerate(subjects.cases) if all(rows.get(case.subject_id, {}).get(k) == v for k, v in where.items())
    ]
    if not donors:
        raise DataError(cohort, f"no case matches {where} to take lesions from")
    n = len(subjects) if n is None else n
    with tempfile.TemporaryDirectory(prefix="augment3d-bank-") as scratch:
        built = TumourBank.from_subjects(subjects[i] for i in donors)  # the tumour-free ones are left out
        bank = built.save(Path(scratch) / "bank")
        place = TumourInpainter(
            run,
            bank,
            p=1.0,
            grow=grow,
            margin=margin,
            condition=given or None,
            psi=psi,
            max_tries=500,
            precision=precision,
            device=device,
        )
        names = [d.subject_id for d in built.donors]
        counts = {"inpainted": 0, "no_room": 0, "moved": 0, "donors": len(names), "recipients": len(subjects)}
        records = []
        with staged_output(Path(out), "samples", force=force, inputs=[run, cohort]) as work:
            for i, (subject, twin, moved) in enumerate(placements(place, subjects, n, seed)):
                done = twin(subject)
                sid = f"{subject['subject_id']}-inpainted-{i:05d}"
                images = np.stack([done[m].numpy()[0] for m in MODALITIES])
                write_brats(work, [sid], [images], [done["seg"].numpy()[0]], done["seg"].affine)
                placed = twin.corner is not None
                counts["inpainted" if placed else "no_room"] += 1
                counts["moved"] += bool(moved)
                conditions = {k: str(subject[k]) for k in gen.conditions if k in subject}
                records.append(
                    {
                        "subject_id": sid,
                        **conditions,
                        "recipient": subject["subject_id"],
                        "donor": names[twin.donor] if placed else "",
                        "generator_seed": twin.seed if placed else "",
                        "inpainted": placed,
                    }
                )
                if progress is not None:
                    progress(i + 1, n)
            atomic_write_text(work / "metadata.csv", csv_text(records))
    return counts
