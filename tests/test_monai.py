"""augment3d.monai inside real MONAI pipelines: CacheDataset, worker DataLoaders, MetaTensor, inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("monai")

from monai import transforms as mt  # noqa: E402
from monai.data import CacheDataset, DataLoader, MetaTensor  # noqa: E402
from test_tumour_paste import brain, write  # noqa: E402

from augment3d import TumourBank  # noqa: E402
from augment3d.brats import MODALITIES  # noqa: E402
from augment3d.data.layout import case_file_name  # noqa: E402
from augment3d.monai import RandTumourPasted  # noqa: E402

LPS = np.diag([-2.0, -2.0, 2.0, 1.0])  # stored LPS-like: Orientationd has work to do, and to undo


@pytest.fixture
def setup(tmp_path):
    from helpers import write_metadata

    donors = tmp_path / "donors"
    for i, at in enumerate([(0.2, 0.1, 0.0), (-0.2, 0.0, 0.1)]):
        write(donors, f"BraTS-DON-{i:05d}-000", *brain(seed=10 + i, tumour_at=at))
    write_metadata(donors, [{"subject_id": f"BraTS-DON-{i:05d}-000", "site": "SSA", "grade": "HGG"} for i in range(2)])
    bank = TumourBank.from_cohort(donors).save(tmp_path / "bank")
    sid = "BraTS-REC-00000-000"
    folder = write(tmp_path / "recipients", sid, *brain(seed=3), affine=LPS)
    item = {
        "image": [str(folder / case_file_name(sid, m)) for m in MODALITIES],
        "label": str(folder / case_file_name(sid, "seg")),
    }
    return bank, item


def pipeline(bank, **kwargs):
    return mt.Compose(
        [
            mt.LoadImaged(keys=["image", "label"], image_only=True),
            mt.EnsureChannelFirstd(keys=["image", "label"]),
            mt.Orientationd(keys=["image", "label"], axcodes="RAS"),
            RandTumourPasted(bank, prob=1.0, **kwargs),
        ]
    )


def test_in_a_cache_dataset_with_workers_it_pastes_afresh_and_leaves_the_cache_alone(setup):
    bank, item = setup
    dataset = CacheDataset([item] * 4, transform=pipeline(bank), cache_rate=1.0, num_workers=0, copy_cache=False)
    cached = [{k: v.clone() for k, v in entry.items()} for entry in dataset._cache]
    assert all(not c["label"].any() for c in cached)  # the cache holds the healthy recipient, not a paste
    epochs = []
    for _epoch in range(2):
        loader = DataLoader(dataset, batch_size=2, num_workers=2)
        labels = torch.cat([batch["label"] for batch in loader])
        assert labels.shape[0] == 4 and all(label.any() for label in labels)  # a tumour in every sample
        epochs.append(labels)
        batch = next(iter(DataLoader(dataset, batch_size=1, num_workers=0)))
        assert isinstance(batch["image"], MetaTensor)
        assert torch.diagonal(batch["image"].affine[0])[:3].tolist() == [2.0, 2.0, 2.0]
    flat = [tuple(label.flatten().nonzero().flatten()[:50].tolist()) for label in torch.cat(epochs)]
    assert len(set(flat)) > 1  # workers and epochs draw different placements
    for entry, before in zip(dataset._cache, cached):  # copy_cache=False shares the cache: it must be intact
        assert all(torch.equal(entry[k], before[k]) for k in before)


def test_metadata_survives_and_the_earlier_transforms_still_invert(setup):
    bank, item = setup
    transform = pipeline(bank)
    out = transform(item)
    image, label = out["image"], out["label"]
    assert isinstance(image, MetaTensor) and isinstance(label, MetaTensor)
    assert image.shape[0] == 4 and label.any()
    assert [op["class"] for op in image.applied_operations] == ["Orientation"]
    assert np.allclose(np.diag(image.affine.numpy())[:3], [2.0, 2.0, 2.0])
    assert image.meta["filename_or_obj"] and label.meta["filename_or_obj"]
    pasted = label.clone()
    inverted = transform.inverse(out)
    assert np.allclose(inverted["image"].affine.numpy(), LPS)  # back on the stored grid
    assert not inverted["image"].applied_operations
    assert torch.equal(inverted["label"], torch.flip(pasted, dims=(1, 2)))  # the paste moved with the inverse


def test_its_random_state_replays_and_bad_samples_get_one_clear_error(setup):
    bank, item = setup
    loaded = mt.Compose(pipeline(bank).transforms[:3])(item)
    paste = RandTumourPasted(bank, prob=1.0)
    first = paste.set_random_state(seed=7)(loaded)
    again = paste.set_random_state(seed=7)(loaded)
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["label"], again["label"])
    other = paste.set_random_state(seed=8)(loaded)
    assert not torch.equal(first["label"], other["label"])
    assert not loaded["label"].any()  # the input is not written into
    never = RandTumourPasted(bank, prob=0.0)(loaded)
    assert never["image"] is loaded["image"]
    with pytest.raises(ValueError, match="4 channels"):
        paste({"image": loaded["image"][:3], "label": loaded["label"]})
    with pytest.raises(ValueError, match="BraTS modality"):
        RandTumourPasted(bank, channels=("t1", "t1ce", "t2", "pd"))
    with pytest.raises(KeyError, match="no label"):
        paste({"image": loaded["image"]})


def test_the_guide_example_runs(phantom_cohort, tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path

    guide = (Path(__file__).parent.parent / "docs" / "MONAI.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", guide, flags=re.S)
    monkeypatch.chdir(tmp_path)
    code = code.replace('cohort = "cohort"', f'cohort = "{phantom_cohort}"')
    assert str(phantom_cohort) in code
    exec(compile(code, "MONAI.md", "exec"), {})
    shapes = capsys.readouterr().out.strip().splitlines()
    assert len(shapes) == 3 and all("[2, 4, 24, 24, 24]" in s and "[2, 3, 24, 24, 24]" in s for s in shapes)  # 6 cases
    assert (tmp_path / "ssa_tumours").is_dir()


def _phantom_items(cohort):
    import csv

    from augment3d.data import discover_cases

    rows = {r["subject_id"]: r for r in csv.DictReader((cohort / "metadata.csv").open())}
    return [
        {
            "image": [str(c.paths[m]) for m in MODALITIES],
            "label": str(c.paths["seg"]),
            "site": rows[c.subject_id]["site"],
            "grade": rows[c.subject_id]["grade"],
        }
        for c in discover_cases(cohort)
    ]


def test_synthetic_replacement_renders_new_images_for_the_samples_own_labels(phantom_cohort):
    from augment3d.monai import RandSyntheticReplaced

    items = _phantom_items(phantom_cohort)[:2]
    transform = mt.Compose(
        [
            mt.LoadImaged(keys=["image", "label"], image_only=True),
            mt.EnsureChannelFirstd(keys=["image", "label"]),
            mt.Orientationd(keys=["image", "label"], axcodes="RAS"),
            RandSyntheticReplaced("phantom", prob=1.0, condition={"site": "SSA"}),
        ]
    )
    dataset = CacheDataset(items, transform=transform, cache_rate=1.0, num_workers=0, copy_cache=False)
    cached = [{k: v.clone() for k, v in entry.items() if isinstance(v, torch.Tensor)} for entry in dataset._cache]
    epochs = []
    for _epoch in range(2):
        batches = list(DataLoader(dataset, batch_size=1, num_workers=2))
        for batch, before in zip(batches, cached):
            assert torch.equal(batch["label"][0], before["label"])  # labels to images: the map stays exact
            assert not torch.equal(batch["image"][0], before["image"])  # new images
            assert isinstance(batch["image"], MetaTensor)
            assert np.allclose(batch["image"].affine[0].numpy(), before["image"].affine.numpy())
            brain = before["image"].amax(0) > before["image"].amin()
            assert (batch["image"][0][:, ~brain] == before["image"][:, ~brain]).all()  # outside the brain: as it was
        epochs.append(torch.stack([b["image"][0] for b in batches]))
    assert not torch.equal(epochs[0], epochs[1])  # each epoch draws new subjects
    for entry, before in zip(dataset._cache, cached):
        assert all(torch.equal(entry[k], before[k]) for k in before)

    loaded = mt.Compose(transform.transforms[:3])(items[0])
    replace = RandSyntheticReplaced("phantom", prob=1.0, condition={"site": "SSA"})
    first = replace.set_random_state(seed=3)(loaded)
    again = replace.set_random_state(seed=3)(loaded)
    assert torch.equal(first["image"], again["image"])
    with pytest.raises(Exception, match="grade"):  # the condition needs the sample's grade
        replace({"image": loaded["image"], "label": loaded["label"]})
