"""TumourInpainter: a bank's lesion placed as TumourPaste places it, rendered by an inpainting run."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torchio as tio
from test_tumour_paste import KEYS, arrays, bank, brain, healthy, subject_of, write  # noqa: F401  (fixtures)

from augment3d.errors import DataError
from augment3d.transforms.tumour_inpaint import InpaintPlacement, TumourInpainter


def _run(folder, voxel_mm: float):
    from helpers import TINY_ENCODER, TINY_MODEL, TINY_TRAIN, tiny_data

    from augment3d.data.preprocess import PreprocessConfig
    from augment3d.training.trainer import train_gan

    torch.manual_seed(0)
    train_gan(
        folder,
        tiny_data(),
        replace(TINY_MODEL, mode="inpaint"),
        replace(TINY_TRAIN, steps=1),
        TINY_ENCODER,
        PreprocessConfig(shape=16),
        generator_info={"voxel_mm": voxel_mm},
    )
    return folder


@pytest.fixture(scope="module")
def inpaint_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("inpaint") / "run", voxel_mm=3.0)  # a 48 mm crop


def _placed(out) -> InpaintPlacement:
    (twin,) = [t for t in out.get_applied_transforms() if t.name == "InpaintPlacement"]
    return twin


def test_the_lesion_is_rendered_in_place_and_everything_else_is_bit_identical(inpaint_run, bank, healthy):  # noqa: F811
    healthy["site"] = "SSA"
    before = arrays(healthy)
    out = TumourInpainter(inpaint_run, bank, p=1.0, seed=0)(healthy)
    twin = _placed(out)
    assert twin.corner is not None
    seg = out["seg"].data[0].numpy()
    assert (seg > 0).sum() > 20 and set(np.unique(seg)) <= {0, 2, 3}  # the donor's classes, placed
    from scipy import ndimage

    near = ndimage.distance_transform_edt(seg == 0) < twin.grow + twin.margin + 1  # where the soft edge reaches
    changed = np.zeros(seg.shape, bool)
    for key in KEYS[:-1]:
        diff = (out[key].data[0] != before[key][0]).numpy()
        assert not (diff & ~near).any(), key  # outside the lesion's rendered surroundings: exact
        changed |= diff
    assert changed[seg > 0].mean() > 0.9  # the lesion itself is rendered anew
    replayed = out.get_composed_history()(
        tio.Subject({k: type(healthy[k])(tensor=before[k], affine=healthy[k].affine) for k in KEYS} | {"site": "SSA"})
    )
    for key in KEYS:
        assert torch.equal(replayed[key].data, out[key].data), key  # the history replays the same rendering


def test_no_room_in_the_crop_passes_the_subject_through(tmp_path, bank, healthy):  # noqa: F811
    healthy["site"] = "SSA"
    before = arrays(healthy)
    small = _run(tmp_path / "small", voxel_mm=1.0)  # a 16 mm crop: the donors' lesions do not fit
    transform = TumourInpainter(small, bank, p=1.0, seed=0)
    out = transform(healthy)
    assert _placed(out).corner is None and transform.no_room == 1
    assert all(torch.equal(out[k].data, before[k]) for k in KEYS)


def test_it_runs_in_loader_workers_and_refuses_what_it_cannot_use(inpaint_run, bank, tmp_path):  # noqa: F811
    subjects, folders = [], []
    for i in range(4):
        sid = f"BraTS-REC-{i:05d}-000"
        folders.append(write(tmp_path / "rec", sid, *brain(seed=20 + i)))
        subjects.append(subject_of(folders[-1], sid, site="SSA"))
    dataset = tio.SubjectsDataset(subjects, transform=TumourInpainter(inpaint_run, bank, p=1.0, seed=3))
    loader = tio.SubjectsLoader(dataset, batch_size=2, num_workers=2, collate_fn=lambda batch: batch)
    seen = [s for batch in loader for s in batch]
    assert len(seen) == 4 and all(_placed(s).corner is not None for s in seen)
    assert all((s["seg"].data > 0).sum() > 0 for s in seen)
    labels_run = tmp_path / "labels"
    from helpers import TINY_ENCODER, TINY_MODEL, TINY_TRAIN, tiny_data

    from augment3d.training.trainer import train_gan

    train_gan(labels_run, tiny_data(), TINY_MODEL, replace(TINY_TRAIN, steps=1), TINY_ENCODER)
    with pytest.raises(DataError, match="is not an inpainting run"):
        TumourInpainter(labels_run, bank)
    no_site = subject_of(folders[0], "BraTS-REC-00000-000")
    with pytest.raises(DataError, match="no 'site' attribute"):
        TumourInpainter(inpaint_run, bank, p=1.0, seed=0)(no_site)


def test_the_subject_s_own_tumour_keeps_its_voxels(inpaint_run, bank, tmp_path):  # noqa: F811
    sid = "BraTS-REC-00009-000"
    images, label = brain(seed=4, tumour_at=(0.0, 0.0, 0.0), radius=0.3)  # a large tumour in the middle
    subject = subject_of(write(tmp_path / "rec", sid, images, label), sid, site="SSA")
    before = arrays(subject)
    own = before["seg"][0] > 0
    out = TumourInpainter(inpaint_run, bank, p=1.0, seed=1, grow=3, margin=1)(subject)  # the soft edge reaches past the clearance
    assert _placed(out).corner is not None
    own &= out["seg"].data[0] == before["seg"][0]  # where the placed lesion covers it, the lesion wins (as in TumourPaste)
    assert own.sum() > 20
    for key in KEYS[:-1]:
        assert torch.equal(out[key].data[0][own], before[key][0][own]), key


def test_sample_into_writes_inpainted_copies_of_a_real_cohort(tmp_path, phantom_cohort, tiny_run):
    """`augment3d sample RUN OUT --into COHORT`: real subjects with a new lesion from the chosen donors,
    rendered by the run; every other voxel, the grid and the affine the recipient's; a seed names the copies."""
    import csv

    from typer.testing import CliRunner

    from augment3d.cli import app
    from augment3d.data import discover_cases, read_case

    run = _run(tmp_path / "run", voxel_mm=10.0)  # a 160 mm crop: the phantom's lesions fit on its 6 mm grid
    runner = CliRunner()

    def sample(out, *extra):
        args = ["sample", run, out, "--into", phantom_cohort, "--n", "3", "--seed", "4", *extra]
        return runner.invoke(app, [str(a) for a in args])

    result = sample(tmp_path / "copies", "--donors-where", "site=SSA")
    assert result.exit_code == 0, result.output
    assert "3 with a new lesion" in result.stdout
    with open(tmp_path / "copies" / "metadata.csv") as f:
        rows = list(csv.DictReader(f))
    real = {c.subject_id: read_case(c) for c in discover_cases(phantom_cohort)}
    with open(phantom_cohort / "metadata.csv") as f:
        ssa = {r["subject_id"] for r in csv.DictReader(f) if r["site"] == "SSA"}
    copies = {c.subject_id: read_case(c) for c in discover_cases(tmp_path / "copies")}
    assert len(rows) == 3 == len(copies)
    for row in rows:
        assert row["inpainted"] == "True" and row["donor"] in ssa and row["recipient"] in real
        copy, recipient = copies[row["subject_id"]], real[row["recipient"]]
        assert np.array_equal(copy.affine, recipient.affine) and copy.label.shape == recipient.label.shape
        assert (copy.label > 0).sum() > (recipient.label > 0).sum()  # its own tumour and a new one
        changed = np.zeros(copy.label.shape, bool)
        for key in copy.images:
            changed |= copy.images[key] != recipient.images[key]
        assert changed.any()
        grown = copy.label != recipient.label
        from scipy import ndimage

        near = ndimage.distance_transform_edt(~grown) < 2 + 2 + 1  # within the grown region and its soft edge
        assert not (changed & ~near).any()  # nothing changed away from the new lesion
    again = sample(tmp_path / "again", "--donors-where", "site=SSA")
    assert again.exit_code == 0, again.output
    for sid, copy in copies.items():
        other = read_case(next(c for c in discover_cases(tmp_path / "again") if c.subject_id == sid))
        assert all(np.array_equal(copy.images[k], other.images[k]) for k in copy.images)
    # what it cannot do: one clear error each, nothing written
    for extra, message in ((("--donors-where", "site=XYZ"), "no case matches"), (("--format", "nnunet"), "leave out --format")):
        bad = sample(tmp_path / "bad", *extra)
        assert bad.exit_code == 2 and message in bad.output and not (tmp_path / "bad").exists()
    labels = runner.invoke(app, ["sample", str(tiny_run), str(tmp_path / "bad"), "--into", str(phantom_cohort)])
    assert labels.exit_code == 2 and "is not an inpainting run" in labels.output and not (tmp_path / "bad").exists()
