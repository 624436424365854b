"""TumourPaste and its bank inside real torchio pipelines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchio as tio
from helpers import write_case, write_metadata

from augment3d import TumourBank, TumourPaste
from augment3d.brats import BRATS2021, BRATS2023, MODALITIES
from augment3d.data.layout import case_file_name
from augment3d.errors import CheckpointError, DataError

SHAPE = (40, 36, 32)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
KEYS = (*MODALITIES, "seg")


def brain(shape=SHAPE, seed=0, tumour_at=None, radius=0.18):
    """An ellipsoid brain with tissue texture and, optionally, a small tumour (ET core, SNFH rim)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    inside = (grid**2).sum(0) < 0.85
    images = {
        m: ((80.0 + 15 * k + 10 * grid[1] + rng.normal(0, 3, shape)) * inside).astype(np.float32)
        for k, m in enumerate(MODALITIES)
    }
    label = np.zeros(shape, np.uint8)
    if tumour_at is not None:
        d = ((grid - np.array(tumour_at).reshape(3, 1, 1, 1)) ** 2).sum(0)
        label[d < radius**2] = 2
        label[d < (radius * 0.6) ** 2] = 3
        for k, m in enumerate(MODALITIES):
            images[m][d < radius**2] = 300.0 + 20 * k
    return images, label


def write(root, sid, images, label, affine=AFFINE, scheme=None):
    kwargs = {"scheme": scheme} if scheme is not None else {}
    return write_case(root, sid, images=images, label=label, affine=affine, **kwargs)


def subject_of(folder: Path, sid: str, scheme=BRATS2023, **attributes):
    path = {k: Path(folder) / case_file_name(sid, k, scheme) for k in KEYS}
    return tio.Subject(
        **{k: tio.ScalarImage(path[k]) for k in MODALITIES}, seg=tio.LabelMap(path["seg"]), subject_id=sid, **attributes
    )


@pytest.fixture
def bank(tmp_path):
    donors = tmp_path / "donors"
    for i, at in enumerate([(0.2, 0.1, 0.0), (-0.2, 0.0, 0.1)]):
        write(donors, f"BraTS-DON-{i:05d}-000", *brain(seed=10 + i, tumour_at=at))
    write_metadata(donors, [{"subject_id": f"BraTS-DON-{i:05d}-000", "site": "SSA", "grade": "HGG"} for i in range(2)])
    return TumourBank.from_cohort(donors, where={"site": "SSA"}).save(tmp_path / "bank")


@pytest.fixture
def healthy(tmp_path):
    images, label = brain(seed=3)
    return subject_of(write(tmp_path / "recipients", "BraTS-REC-00000-000", images, label), "BraTS-REC-00000-000")


def arrays(subject):
    return {k: subject[k].data.clone() for k in KEYS}


def test_outside_the_insertion_nothing_changes_and_inside_the_lesion_is_the_donors(bank, healthy):
    before = arrays(healthy)
    out = TumourPaste(bank, p=1.0, seed=0)(healthy)
    (twin,) = [t for t in out.get_applied_transforms() if t.name == "TumourPlacement"]
    assert twin.corner is not None
    seg = out["seg"].data[0].numpy()
    pasted = seg > 0
    assert pasted.any() and set(np.unique(seg).tolist()) <= {0, 2, 3}
    from scipy import ndimage

    region = ndimage.distance_transform_edt(~pasted) <= twin.margin  # the lesion and `margin` voxels around it
    for k in MODALITIES:
        new, old = out[k].data[0].numpy(), before[k][0].numpy()
        assert np.array_equal(new[~region], old[~region]), k  # bit-identical outside the dilated lesion
        assert np.isfinite(new).all()
        inside_brain = old[old > old.min()]
        assert new[pasted].min() >= inside_brain.min()  # nothing darker than the recipient's brain
        # the donor's lesion keeps its contrast against the tissue around it, in the recipient's scale:
        # donor lesion 300 + 20k against tissue about 80 + 15k (SD 3 + the y ramp) in both
        contrast = (new[pasted].mean() - np.median(inside_brain)) / (
            300.0 + 20 * MODALITIES.index(k) - 80 - 15 * MODALITIES.index(k)
        )
        assert 0.6 < contrast < 1.6, contrast
    # the label map is the donor's lesion: the same class counts as in the bank's box (no resampling here)
    donor = TumourBank.load(bank).donors[twin.donor]
    assert sorted(np.bincount(seg.ravel(), minlength=4)[1:].tolist()) == sorted(
        np.bincount(donor.label.ravel(), minlength=4)[1:].tolist()
    )
    assert all(torch.equal(healthy[k].data, before[k]) for k in KEYS)  # the input is not modified


def test_history_replays_to_identical_tensors_and_the_seed_names_the_result(bank, healthy):
    transform = tio.Compose([tio.RandomFlip(axes=(0,)), TumourPaste(bank, p=1.0)])
    out = transform(healthy)
    replayed = out.get_composed_history()(healthy)
    assert all(torch.equal(out[k].data, replayed[k].data) for k in KEYS)
    a, b = TumourPaste(bank, p=1.0, seed=5)(healthy), TumourPaste(bank, p=1.0, seed=5)(healthy)
    assert all(torch.equal(a[k].data, b[k].data) for k in KEYS)


def test_pastes_beside_an_existing_tumour_in_bratS_2021_labels_and_another_orientation(bank, tmp_path):
    images, label = brain(seed=4, tumour_at=(0.0, -0.4, 0.0), radius=0.15)
    label = np.where(label == 3, 4, label).astype(np.uint8)  # BraTS 2021: ET is 4
    flipped = np.array([[0, -3.0, 0, 50], [2.5, 0, 0, -40], [0, 0, 2.0, 0], [0, 0, 0, 1]])  # other axes and voxel size
    folder = write(tmp_path / "r21", "BraTS-R21-00000-000", images, label, affine=flipped, scheme=BRATS2021)
    subject = subject_of(folder, "BraTS-R21-00000-000", BRATS2021)
    out = TumourPaste(bank, p=1.0, seed=1, max_tries=200)(subject)
    (twin,) = [t for t in out.get_applied_transforms() if t.name == "TumourPlacement"]
    assert twin.corner is not None
    seg = out["seg"].data[0].numpy()
    assert set(np.unique(seg).tolist()) <= {0, 1, 2, 4} and 3 not in seg
    original = label > 0
    assert np.array_equal(seg[original], label[original])  # the recipient's own tumour is untouched
    assert (seg > 0).sum() > original.sum()


def test_a_subject_with_no_room_passes_through_and_is_counted(bank, tmp_path):
    images, label = brain(shape=(12, 12, 12), seed=5)  # smaller than any donor's lesion box
    subject = subject_of(write(tmp_path / "small", "BraTS-SML-00000-000", images, label), "BraTS-SML-00000-000")
    paste = TumourPaste(bank, p=1.0, seed=0, max_tries=5)
    before = arrays(subject)
    out = paste(subject)
    assert all(torch.equal(out[k].data, before[k]) for k in KEYS)
    assert paste.no_room == 1 and paste.pasted == 0
    (twin,) = [t for t in out.get_applied_transforms() if t.name == "TumourPlacement"]
    assert twin.corner is None  # the history says so wherever it ran


def test_a_damaged_or_foreign_bank_is_one_clear_error_naming_the_file(bank, tmp_path):
    weights = bank / "tumour_bank.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-10] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="tumour_bank.safetensors"):
        TumourBank.load(bank)
    with pytest.raises(CheckpointError, match="tumour_bank"):
        TumourPaste(bank)
    with pytest.raises(CheckpointError, match="tumour_bank.json"):
        TumourPaste(tmp_path)  # no bank there
    with pytest.raises(DataError, match="no case matching"):
        TumourBank.from_cohort(tmp_path / "donors", where={"site": "HIC"})


def test_a_bank_needs_tumours_and_images_on_one_grid(tmp_path):
    images, label = brain(seed=6)
    folder = write(tmp_path / "none", "BraTS-NON-00000-000", images, label)
    with pytest.raises(DataError, match="no subject with a tumour"):
        TumourBank.from_subjects([subject_of(folder, "BraTS-NON-00000-000")])


QUEUE = """
import sys, torchio as tio
from augment3d import TumourPaste
sys.path.insert(0, sys.argv[3])
from test_tumour_paste import subject_of
from pathlib import Path
subjects = [subject_of(Path(sys.argv[1]), "BraTS-REC-00000-000") for _ in range(4)]
transform = tio.Compose([tio.RandomFlip(axes=(0,)), TumourPaste(sys.argv[2], p=1.0, seed=3)])
queue = tio.Queue(tio.SubjectsDataset(subjects, transform=transform), max_length=4, samples_per_volume=2,
                  sampler=tio.UniformSampler((8, 8, 8)), num_workers=2)
patches = sum(b["seg"][tio.DATA].shape[0] for b in tio.SubjectsLoader(queue, batch_size=2))
import torch
loader = torch.utils.data.DataLoader(tio.SubjectsDataset(subjects, transform=transform), batch_size=None,
                                     num_workers=2, collate_fn=lambda s: s)
same = 0
for subject in loader:  # made in a worker, replayed here
    replayed = subject.get_composed_history()(subjects[0])
    same += int(all((subject[k].data == replayed[k].data).all() for k in ("t1n", "t2f", "seg")))
print("patches", patches, "replayed", same)
"""


def test_in_a_queue_and_a_loader_with_workers(bank, healthy):
    folder = Path(healthy["seg"].path).parent
    done = subprocess.run(
        [sys.executable, "-c", QUEUE, str(folder), str(bank), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["patches", "8", "replayed", "4"]


def test_overlap_lets_the_lesion_cover_the_recipients_tumour_and_leaves_the_rest_of_it_exact(bank, tmp_path):
    from augment3d.transforms.tumour_bank import TumourBank
    from augment3d.transforms.tumour_paste import donor_in_grid

    images, label = brain(seed=7, tumour_at=(0.0, 0.0, 0.0), radius=0.45)  # a tumour filling the middle
    subject = subject_of(write(tmp_path / "big", "BraTS-BIG-00000-000", images, label), "BraTS-BIG-00000-000")
    clear = TumourPaste(bank, p=1.0, seed=0, max_tries=20)
    clear(subject)
    over = TumourPaste(bank, p=1.0, seed=0, max_tries=200, overlap=True)
    out = over(subject)
    assert clear.no_room == 1 and over.pasted == 1  # no room clear of it; room over it
    (twin,) = [t for t in out.get_applied_transforms() if t.name == "TumourPlacement"]
    lesion_box = donor_in_grid(TumourBank.load(bank), twin.donor, twin.flips, AFFINE)[0] > 0
    lesion = np.zeros(SHAPE, bool)
    lesion[tuple(slice(c, c + n) for c, n in zip(twin.corner, lesion_box.shape))] = lesion_box
    assert (lesion & (label > 0)).any()  # it does cover part of the recipient's tumour
    rest = (label > 0) & ~lesion
    seg = out["seg"].data[0].numpy()
    assert np.array_equal(seg[rest], label[rest])
    for k in MODALITIES:
        assert np.array_equal(out[k].data[0].numpy()[rest], images[k][rest]), k
