"""TumourPaste (and TumourInpainter) cost per subject against torchio's RandomElasticDeformation (prints figures).

Usage:
    python benchmarks/paste_cost.py [--side 64] [--subjects 20] [--runs 5] [--inpaint RUN]

One --side^3 subject (four modalities + a label map with a tumour) gets a tumour pasted from a
bank of four donors (the same synthetic brain with tumours at other places), --subjects times per
run, in the same process as `tio.RandomElasticDeformation()` with its defaults on the same
subject; each of --runs runs prints both times and their ratio, then the median and range of the
ratios. Wall and CPU time (all threads) are both given: SimpleITK resamples at every core.
With ``--inpaint RUN`` (an inpainting run, e.g. ``augment3d train COHORT --recipe phantom_inpaint``)
TumourInpainter is timed the same way, rendering each lesion with RUN's generator.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile

import numpy as np
import torch
import torchio as tio
from augmenter_cost import make_subject, time_per_subject

from augment3d import TumourBank, TumourPaste


def donor(side: int, centre: float) -> tio.Subject:
    subject = make_subject(side)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, side)] * 3, indexing="ij"))
    label = (((grid - centre) ** 2).sum(0) < 0.03).astype(np.int64) * 2
    label[((grid - centre) ** 2).sum(0) < 0.01] = 3
    subject["seg"].set_data(torch.from_numpy(label[None]))
    for k in ("t1n", "t1c", "t2w", "t2f"):
        data = subject[k].data.clone()
        data[0][torch.from_numpy(label > 0)] = 300.0
        subject[k].set_data(data)
    return subject


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--inpaint", default=None, help="an inpainting run folder: time TumourInpainter too")
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {args.side}^3 subject, {args.subjects} subjects a run"
    )
    recipient = make_subject(args.side)
    recipient["seg"].set_data(torch.zeros_like(recipient["seg"].data))  # healthy: room anywhere in the brain
    with tempfile.TemporaryDirectory() as folder:
        TumourBank.from_subjects([donor(args.side, c) for c in (-0.3, -0.1, 0.1, 0.3)]).save(folder)
        paste, elastic = TumourPaste(folder, p=1.0, seed=0), tio.RandomElasticDeformation()
        ratios, inpaint_ratios = [], []
        inpainter = None
        if args.inpaint:
            from augment3d import TumourInpainter

            inpainter = TumourInpainter(args.inpaint, folder, p=1.0, seed=0)
        for run in range(args.runs):
            p_wall, p_cpu = time_per_subject(paste, recipient, args.subjects)
            e_wall, e_cpu = time_per_subject(elastic, recipient, args.subjects)
            ratios.append(p_wall / e_wall)
            print(
                f"run {run}: TumourPaste {p_wall * 1e3:.1f} ms wall, {p_cpu * 1e3:.1f} ms CPU; "
                f"RandomElasticDeformation {e_wall * 1e3:.1f} ms wall, {e_cpu * 1e3:.1f} ms CPU; "
                f"ratio {p_wall / e_wall:.3f} wall, {p_cpu / e_cpu:.3f} CPU"
            )
            if inpainter is not None:
                i_wall, i_cpu = time_per_subject(inpainter, recipient, args.subjects)
                inpaint_ratios.append(i_wall / e_wall)
                print(
                    f"run {run}: TumourInpainter {i_wall * 1e3:.1f} ms wall, {i_cpu * 1e3:.1f} ms CPU; ratio {i_wall / e_wall:.3f} wall"
                )
        print(
            f"TumourPaste / RandomElasticDeformation, wall: median {statistics.median(ratios):.3f}, "
            f"range {min(ratios):.3f}-{max(ratios):.3f} over {args.runs} runs "
            f"(pasted {paste.pasted}, no room {paste.no_room})"
        )
        if inpainter is not None:
            print(
                f"TumourInpainter / RandomElasticDeformation, wall: median {statistics.median(inpaint_ratios):.3f}, "
                f"range {min(inpaint_ratios):.3f}-{max(inpaint_ratios):.3f} over {args.runs} runs "
                f"(inpainted {inpainter.inpainted}, no room {inpainter.no_room})"
            )


if __name__ == "__main__":
    main()
