"""augment3d inside nnU-Net v2: the transforms in nnU-Net's own loader and augmenter (two worker
processes), the trainers found through nnUNet_extTrainer for training and prediction."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

from typer.testing import CliRunner  # noqa: E402

from cli import app  # noqa: E402

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _cli(name: str) -> str:
    """nnU-Net's console script beside this interpreter (the venv need not be on PATH)."""
    return str(Path(sys.executable).with_name(name))


def _datasets(trainer):
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    trainer.dataset_class = infer_dataset_class(trainer.preprocessed_dataset_folder)
    return trainer.get_tr_and_val_datasets()[0]


@pytest.fixture(scope="module")
def nnunet(tmp_path_factory):
    """A 12-case phantom cohort at 4 mm, half of it tumour-free: the healthy half and one tumour
    case (nnU-Net's planner needs foreground) as nnU-Net dataset 501 (any tumour in a batch of a
    healthy case was pasted), the tumour half as 502 (to restyle) and as the paste's bank; both
    planned and preprocessed by nnU-Net itself."""
    from augment3d import TumourBank

    root = tmp_path_factory.mktemp("nnunet")
    cohort = root / "cohort"
    made = _invoke("phantom", cohort, "--cases", 12, "--spacing", 4.0, "--ssa-fraction", 0.5, "--healthy-fraction", 0.5)
    assert made.exit_code == 0, made.output
    with open(cohort / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    healthy = [r["subject_id"] for r in rows if r["grade"] == "none"]
    tumours = [r["subject_id"] for r in rows if r["grade"] != "none"]
    TumourBank.from_cohort(cohort).save(root / "bank")
    env = {
        **os.environ,
        "nnUNet_raw": str(root / "raw"),
        "nnUNet_preprocessed": str(root / "pre"),
        "nnUNet_results": str(root / "results"),
        "nnUNet_n_proc_DA": "2",
        "nnUNet_def_n_proc": "1",
    }
    for name, ids in (("Dataset501_Healthy", healthy + tumours[:1]), ("Dataset502_Tumours", tumours)):
        args = [a for i in ids for a in ("--subject", i)]
        done = _invoke("nnunet-dataset", cohort, root / "raw" / name, *args)
        assert done.exit_code == 0, done.output
    subprocess.run(
        [_cli("nnUNetv2_plan_and_preprocess"), "-d", "501", "502", "-c", "3d_fullres", "-np", "1", "--verify_dataset_integrity"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return {"root": root, "env": env, "bank": root / "bank", "healthy": healthy, "tumours": tumours}


def _trainer(nnunet, monkeypatch, name: str, dataset: str, **settings):
    """The trainer ``name`` as nnU-Net finds it (through nnUNet_extTrainer and the folder augment3d
    writes), for ``dataset``'s 3d_fullres plans, fold all."""
    from augment3d.nnunet import configure

    for key, value in nnunet["env"].items():
        monkeypatch.setenv(key, value)
    folder = nnunet["root"] / f"trainers-{name}"
    written = _invoke("nnunet-trainers", folder, "--bank", nnunet["bank"], "--prob", 1.0)
    assert written.exit_code == 0, written.output
    monkeypatch.setenv("nnUNet_extTrainer", str(folder))
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(dataset, "3d_fullres", "all", name, device=torch.device("cpu"))
    assert type(trainer).__module__ == "augment3d.nnunet.trainers"  # importable: pickles into any worker
    configure(**settings)
    return trainer


def _batches(trainer, n: int):
    trainer.initialize()  # as nnUNetv2_train does before it asks for the loaders
    train, val = trainer.get_dataloaders()
    try:
        return [next(train) for _ in range(n)]
    finally:
        for loader in (train, val):
            loader._finish()


def test_nnunet_workers_paste_different_tumours_whose_labels_match_the_images(nnunet, monkeypatch):
    """Recipients are tumour-free, so every tumour voxel in a batch was pasted in one of nnU-Net's
    two worker processes: the pasted oedema is bright on FLAIR as in the donors, and no two pasted
    samples are the same draw."""
    trainer = _trainer(nnunet, monkeypatch, "nnUNetTrainerTumourPaste", "Dataset501_Healthy", prob=1.0, seed=None)
    batches = _batches(trainer, 16)  # some donors of this tiny cohort fit few recipients' patches (no room)
    pasted, flair_in, flair_out, seen, samples = 0, [], [], set(), 0
    for batch in batches:
        target = batch["target"][0] if isinstance(batch["target"], list) else batch["target"]
        for key, image, label in zip(batch["keys"], batch["data"], target[:, 0]):
            if key not in nnunet["healthy"]:
                continue  # the one tumour case nnU-Net's planner needed
            samples += 1
            if not (label > 0).any():
                continue
            pasted += 1
            seen.add(label.numpy().tobytes())
            flair = image[3]
            flair_in.append(flair[label == 2].mean().item())
            flair_out.append(flair[label == 0].mean().item())
    assert samples >= 16
    assert pasted >= 4, f"only {pasted} of {samples} samples had a tumour pasted"
    assert len(seen) == pasted  # the workers' draws differ (nnU-Net reseeds numpy per worker, not torch)
    assert np.mean(flair_in) > np.mean(flair_out) + 0.5  # z-scored units: oedema brighter than the rest


def test_nnunet_restyle_keeps_the_label_map_and_renders_new_images(nnunet, monkeypatch):
    """The restyle transform as the trainer builds it, on samples nnU-Net's dataset loads: the
    segmentation stays bit-identical, the background stays 0, the brain gets new values in the
    sample's z-scored range."""
    trainer = _trainer(
        nnunet, monkeypatch, "nnUNetTrainerSynthetic", "Dataset502_Tumours", prob=1.0, seed=3, condition={"site": "SSA"}
    )
    ours = trainer._augment3d_transform(trainer.configuration_manager.patch_size)
    train = _datasets(trainer)
    key = sorted(train.identifiers)[0]
    data, seg, _, _ = train.load_case(key)
    image, label = torch.from_numpy(np.asarray(data)).float(), torch.from_numpy(np.asarray(seg)).to(torch.int16)
    out = ours(image=image.clone(), segmentation=label.clone())
    assert torch.equal(out["segmentation"], label)
    brain = label[0] >= 0
    assert torch.equal(out["image"][:, ~brain], image[:, ~brain])
    changed = (out["image"] != image)[:, brain].float().mean().item()
    assert changed > 0.9
    assert out["image"][:, brain].min() >= image[:, brain].min() - 1e-4  # within the sample's range
    again = ours(image=image.clone(), segmentation=label.clone())
    assert not torch.equal(again["image"], out["image"])  # a new draw each call


def test_nnunet_paste_keeps_every_voxel_outside_the_insertion_and_places_it_in_the_patch(nnunet, monkeypatch):
    trainer = _trainer(nnunet, monkeypatch, "nnUNetTrainerTumourPaste", "Dataset501_Healthy", prob=1.0, seed=5)
    patch = trainer.configuration_manager.patch_size
    ours = trainer._augment3d_transform(patch)
    train = _datasets(trainer)
    data, seg, _, _ = train.load_case(nnunet["healthy"][0])
    image, label = torch.from_numpy(np.asarray(data)).float(), torch.from_numpy(np.asarray(seg)).to(torch.int16)
    out = ours(image=image.clone(), segmentation=label.clone())
    new = out["segmentation"][0] > 0
    assert new.any() and ours.applied == 1
    region = ours._region(tuple(image.shape[1:]))
    outside = torch.ones_like(new)
    outside[region] = False
    assert not (new & outside).any()  # inside the centre region nnU-Net's spatial transform keeps
    from scipy import ndimage

    near = torch.from_numpy(ndimage.distance_transform_edt(~new.numpy()) <= ours.paste.margin)  # the blending margin
    assert torch.equal(out["image"][:, ~near], image[:, ~near])
    assert torch.equal(out["segmentation"][0][~new], label[0][~new])  # -1 outside the brain kept
    assert set(out["segmentation"][0][new].unique().tolist()) <= {1, 2, 3}


def test_nnunet_trains_and_predicts_with_the_trainer_found_through_nnunet_ext_trainer(nnunet, tmp_path):
    """`nnUNetv2_train -tr` and `nnUNetv2_predict -tr` with the trainer folder augment3d writes (a
    one-epoch subclass beside it keeps the run short)."""
    folder = tmp_path / "trainers"
    written = _invoke("nnunet-trainers", folder, "--bank", nnunet["bank"], "--prob", 1.0)
    assert written.exit_code == 0, written.output
    (folder / "tiny.py").write_text(
        "import torch\n"
        "from augment3d.nnunet.trainers import nnUNetTrainerTumourPaste\n\n\n"
        "class nnUNetTrainerTumourPasteTiny(nnUNetTrainerTumourPaste):\n"
        "    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device('cuda')):\n"
        "        super().__init__(plans, configuration, fold, dataset_json, device)\n"
        "        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 1, 2, 1\n"
    )
    env = {**nnunet["env"], "nnUNet_extTrainer": str(folder)}
    name = "nnUNetTrainerTumourPasteTiny"
    train = subprocess.run(
        [_cli("nnUNetv2_train"), "501", "3d_fullres", "all", "-tr", name, "-device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    log = next(
        (Path(env["nnUNet_results"]) / "Dataset501_Healthy" / f"{name}__nnUNetPlans__3d_fullres" / "fold_all").glob(
            "training_log_*.txt"
        )
    ).read_text()
    assert "augment3d: TumourPasteTransform first in the training transforms" in log
    images = Path(env["nnUNet_raw"]) / "Dataset501_Healthy" / "imagesTr"
    one = tmp_path / "in"
    one.mkdir()
    for k in range(4):
        (one / f"case_{k:04d}.nii.gz").symlink_to(images / f"{nnunet['healthy'][0]}_{k:04d}.nii.gz")
    predict = subprocess.run(
        [
            _cli("nnUNetv2_predict"),
            "-i",
            str(one),
            "-o",
            str(tmp_path / "out"),
            "-d",
            "501",
            "-c",
            "3d_fullres",
            "-f",
            "all",
            "-tr",
            name,
            "-device",
            "cpu",
            "--disable_tta",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert predict.returncode == 0, predict.stdout[-3000:] + predict.stderr[-3000:]
    assert (tmp_path / "out" / "case.nii.gz").is_file()


def test_the_labels_of_nnunet_datasets_read_as_brats_classes():
    from augment3d.nnunet import brats_classes

    nnunet_brats2021 = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    assert brats_classes(nnunet_brats2021) == {1: 2, 2: 1, 3: 3}  # edema, non-enhancing, enhancing
    assert brats_classes({"background": 0, "NETC": 1, "SNFH": 2, "ET": 3}) == {1: 1, 2: 2, 3: 3}
    assert brats_classes({"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3}) == {1: 2, 2: 1, 3: 3}
    assert brats_classes({"background": 0, "a": 1}, override={"NETC": 2, "SNFH": 1, "ET": 3}) == {2: 1, 1: 2, 3: 3}
    with pytest.raises(ValueError, match="labels="):
        brats_classes({"background": 0, "liver": 1, "tumour": 2})
    with pytest.raises(ValueError, match="nested"):
        brats_classes({"background": 0, "a": [1, 2], "b": [2, 3], "c": [3]})


def test_the_trainer_folder_command_refuses_bad_input(tmp_path):
    not_a_bank = tmp_path / "bank"
    not_a_bank.mkdir()
    result = _invoke("nnunet-trainers", tmp_path / "t", "--bank", not_a_bank)
    assert result.exit_code == 2 and "tumour bank" in result.output and not (tmp_path / "t").exists()
    result = _invoke("nnunet-trainers", tmp_path / "t", "--generator", tmp_path / "nothing")
    assert result.exit_code == 2 and "generator" in result.output
    result = _invoke("nnunet-trainers", tmp_path / "t", "--labels", "NETC=two")
    assert result.exit_code == 2 and "--labels" in result.output
    result = _invoke("nnunet-dataset", tmp_path, tmp_path / "NotADataset")
    assert result.exit_code == 2 and "DatasetNNN_Name" in result.output
    assert (
        "nnunetv2"
        not in subprocess.run(
            [sys.executable, "-c", "import augment3d, sys; print(sorted(sys.modules))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


def test_a_damaged_case_stops_the_nnunet_export_by_name_and_writes_nothing(nnunet, tmp_path):
    import shutil

    cohort = tmp_path / "cohort"
    case = nnunet["root"] / "cohort" / nnunet["healthy"][0]
    shutil.copytree(case, cohort / case.name)
    damaged = next((cohort / case.name).glob("*-t1n.nii.gz"))
    damaged.write_bytes(damaged.read_bytes()[:200])
    out = tmp_path / "Dataset503_Damaged"
    result = _invoke("nnunet-dataset", cohort, out)
    assert result.exit_code == 2 and damaged.name in result.output
    assert not out.exists() and not list(tmp_path.glob(".Dataset503*"))
