"""GAN metrics: cross-checks against independent implementations and behaviour on known cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg

from augment3d.metrics import frechet_distance, kernel_distance, memorisation_audit, prdc, ssim
from augment3d.metrics.features import FIXED_WEIGHTS, extract, load_extractor
from augment3d.metrics.settings import DATA_RANGE, SSIM_CROSS_CHECK_TOLERANCE, SSIM_SIGMA
from augment3d.metrics.similarity import pairwise


def smooth_volumes(n, seed=0, side=24):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    vols = rng.normal(size=(n, 4, side, side, side))
    vols = np.stack([[ndimage.gaussian_filter(c, 2) for c in v] for v in vols])
    return np.clip(vols / (3 * vols.std()), -1, 1).astype(np.float32)


def test_ssim_agrees_with_scikit_image():
    from skimage.metrics import structural_similarity

    a = smooth_volumes(1, 0)[0]
    for b in (a + np.random.default_rng(1).normal(0, 0.2, a.shape).astype(np.float32), smooth_volumes(1, 2)[0]):
        ours = ssim(a, b)
        reference = structural_similarity(
            a, b, channel_axis=0, data_range=DATA_RANGE, gaussian_weights=True, sigma=SSIM_SIGMA, use_sample_covariance=False
        )
        assert abs(ours - reference) < SSIM_CROSS_CHECK_TOLERANCE, (ours, reference)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-5)


def test_batched_pairwise_ssim_matches_single_calls():
    a, b = smooth_volumes(3, 0, 16), smooth_volumes(2, 5, 16)
    matrix = pairwise(a, b)
    assert matrix.shape == (3, 2)
    assert matrix[2, 1] == pytest.approx(ssim(a[2], b[1]), abs=1e-6)


def test_frechet_matches_independent_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12))
    y = rng.normal(size=(150, 12)) @ rng.normal(size=(12, 12)) * 0.5 + 0.3
    mu_x, mu_y = x.mean(0), y.mean(0)
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(cx @ cy).real
    expected = ((mu_x - mu_y) ** 2).sum() + np.trace(cx + cy - 2 * root)
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_kid_is_near_zero_for_one_distribution():
    rng = np.random.default_rng(0)
    same, _ = kernel_distance(rng.normal(size=(100, 8)), rng.normal(size=(100, 8)))
    other, _ = kernel_distance(rng.normal(size=(100, 8)), rng.normal(size=(100, 8)) + 1)
    assert abs(same) < 0.05 < other


def test_fid_real_vs_real_near_floor_real_vs_noise_far(phantom_cohort):
    from augment3d.data import PreprocessConfig, prepare_cohort

    cases = prepare_cohort(phantom_cohort, PreprocessConfig(shape=16)).cases
    real = np.stack([c.images for c in cases])
    model, name = load_extractor("fixed")
    assert name == "fixed-encoder3d-v1"
    features = extract(model, real)
    flipped = extract(model, real[:, :, ::-1].copy())  # the same anatomy, mirrored: still brains
    noise = extract(model, np.random.default_rng(0).uniform(-1, 1, real.shape).astype(np.float32))
    real_vs_real = frechet_distance(features, flipped)
    real_vs_noise = frechet_distance(features, noise)
    assert real_vs_noise > 10 * real_vs_real


def test_shipped_feature_weights_are_checked(tmp_path, monkeypatch):
    import augment3d.metrics.features as features

    assert FIXED_WEIGHTS.is_file()
    fake = tmp_path / "w.safetensors"
    fake.write_bytes(FIXED_WEIGHTS.read_bytes()[:-1] + b"\x00")
    monkeypatch.setattr(features, "FIXED_WEIGHTS", fake)
    from augment3d.errors import CheckpointError

    with pytest.raises(CheckpointError, match="shipped feature weights were changed"):
        load_extractor("fixed")


def test_prdc_on_identical_and_disjoint_sets():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 5))
    same = prdc(real, real.copy())
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = prdc(real, real + 100)
    assert far["precision"] == far["recall"] == far["coverage"] == far["density"] == 0.0


def test_memorisation_audit_flags_a_copy():
    train = smooth_volumes(6, 0, 16)
    held = smooth_volumes(5, 1, 16)
    synthetic = np.concatenate([smooth_volumes(3, 2, 16), train[2:3] + 0.001])
    audit = memorisation_audit(synthetic, train, held)
    assert audit["n_flagged"] == 1 and audit["share_flagged"] == 0.25
    assert audit["closest_pairs"][0][:2] == (3, 2)


def test_medicalnet_loader_refuses_pickles_and_reads_tensors(tmp_path):
    import pickle

    import torch

    from augment3d.errors import CheckpointError
    from augment3d.metrics.features import MedicalNetResNet

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "resnet_10.pth"
    bad.write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(CheckpointError, match="not a tensors-only PyTorch file"):
        load_extractor("medicalnet", bad)
    assert not marker.exists()
    good = tmp_path / "resnet_10_23dataset.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in MedicalNetResNet(10).state_dict().items()}}, good)
    model, name = load_extractor("medicalnet", good)
    assert name.startswith("medicalnet-resnet10")
    assert extract(model, np.zeros((2, 4, 32, 32, 32), np.float32)).shape == (2, 512)


def test_evaluate_cli_writes_report(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from augment3d.data.phantom import PhantomConfig, make_phantom_cohort
    from cli import app

    data = make_phantom_cohort(tmp_path / "cohort", PhantomConfig(cases=6, seed=4, spacing=6.0, ssa_fraction=0.5))
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", str(tiny_run), str(data), "--out", str(out), "--n", "6"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    from augment3d.metrics.results import SCHEMA, Evaluation

    assert metrics["schema"] == SCHEMA and Evaluation.read(out / "metrics.json").to_json() == metrics  # read back whole
    assert metrics["n"] == {"synthetic": 6, "real_train": 3, "real_held_out": 3}
    assert metrics["extractor"] == "fixed-encoder3d-v1"
    assert metrics["fid"]["floor_held_out_vs_train"] >= 0 and "synthetic_vs_train" in metrics["fid"]
    for name in ("report.md", "montage_real_vs_synthetic.png", "histograms.png", "memorisation_pairs.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "| FID vs training real |" in report
    edge = metrics["tumour_at_head_edge"]
    assert 0 <= edge["real_train"] <= 1 and (edge["synthetic"] is None or 0 <= edge["synthetic"] <= 1)
    assert "| share of tumour voxels at the head's edge (2 voxels) |" in report
    with_tumour = metrics["label_consistency_dice"]["synthetic_with_tumour"]  # empty label maps left out
    assert with_tumour["n"] == round(6 * metrics["share_with_tumour"]["synthetic"])
    assert (
        (with_tumour["WT"] is None)
        if with_tumour["n"] == 0
        else (0 <= with_tumour["WT"] <= 1 and f"the {with_tumour['n']} subjects with a tumour label" in report)
    )
    profile = metrics["label_profile"]
    for column in ("site", "grade"):  # every synthetic subject counted once per condition column
        assert sum(p["n"] for p in profile["synthetic"][column].values()) == 6
        assert sum(p["n"] for p in profile["real_train"][column].values()) == 3
        for value in profile["synthetic"][column]:
            assert f"| {column}={value} |" in report
    # a barely trained generator never reads as closer to the real data than the floor
    for key in ("fid", "kid"):
        block = metrics[key]
        assert block["synthetic_ci95"][0] <= block["synthetic_ci95"][1] and len(block["floor_ci95"]) == 2
        assert "floor" in block["verdict"] and block["verdict"] in report
        assert "told apart" in block["verdict"] or "not a better-than-real generator" in block["verdict"]
    assert (
        "KID is the steadier measure at small N" in metrics["fid"]["verdict"]
        or "told apart from real ones" in metrics["fid"]["verdict"]
    )
    # a labels-to-images run: its labels are its input maps; restyling the training maps into
    # every site and grade is scored per target category
    assert metrics["mode"] == "labels" and "(labels mode)" in report
    restyle = metrics["restyle_fidelity"]
    for column, categories in (("site", {"HIC", "SSA"}), ("grade", {"HGG", "LGG"})):
        assert restyle[column]["n"] == 3 * 2 and set(restyle[column]["by_target_category"]) == categories
        assert all(0 <= v <= 1 for v in restyle[column]["by_target_category"].values())
        assert f"restyled training maps recognised as {column}=" in report
    # a phantom cohort: the restyle is read against a perfect restyle (the phantom re-scanned at each site)
    assert set(restyle["site"]["perfect_restyle_by_target_category"]) == {"HIC", "SSA"}
    assert "reference = a perfect restyle" in report
    ratio = metrics["label_consistency_dice"]["ratio_to_real"]
    assert ratio is None or ratio == pytest.approx(
        with_tumour["WT"] / metrics["label_consistency_dice"]["reference_held_out_real"]["WT"]
    )
    # a scarce site or grade is judged on at least --per-category generated subjects, not its share of --n
    judged = [c for c, f in metrics["condition_fidelity"].items() if "synthetic_n_by_category" in f]
    assert judged, "no condition column was judged: the check below would pass on nothing"
    for column, fidelity in metrics["condition_fidelity"].items():
        if "synthetic_n_by_category" in fidelity:
            assert min(fidelity["synthetic_n_by_category"].values()) >= 16, column
            assert all(f"|   {column}={c} recognised (n={k}) |" in report for c, k in fidelity["synthetic_n_by_category"].items())
    again = CliRunner().invoke(app, ["evaluate", str(tiny_run), str(data), "--out", str(out), "--n", "6"])
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_tumour_at_head_edge_tells_labels_on_the_skull_from_labels_inside():
    from augment3d.metrics.label_profile import tumour_at_head_edge
    from segbench.report import _diagnosis

    images = -np.ones((3, 4, 16, 16, 16), np.float32)
    images[:, :, 2:14, 2:14, 2:14] = 0.2
    images[:, :, 7:9, 7:9, 7:9] = -1.0  # a dark ventricle inside the head is not its edge
    labels = np.zeros((3, 16, 16, 16), np.uint8)
    labels[0, 6:10, 6:10, 6:10] = 2  # a lesion around the ventricle
    labels[1, 2:4, 2:14, 2:14] = 2  # oedema along the top of the head
    assert tumour_at_head_edge(images[:1], labels[:1]) == 0.0
    assert tumour_at_head_edge(images[1:2], labels[1:2]) == 1.0
    assert tumour_at_head_edge(images, labels) == 0.5  # subject 2 has no tumour and is left out
    assert tumour_at_head_edge(images[2:], labels[2:]) is None
    gan = {
        "share_with_tumour_synthetic": 1.0,
        "share_with_tumour_real": 1.0,
        "fid_floor_held_out_vs_train": 0.1,
        "fid_synthetic_vs_train": 0.2,
        "ssim_to_nearest_held_out": 0.6,
        "ssim_reference_held_out_to_train": 0.7,
        "memorised_share": 0.0,
        "tumour_at_head_edge": {"synthetic": 0.27, "real": 0.08},
    }
    assert any("head's edge" in line for line in _diagnosis(gan))
    gan["tumour_at_head_edge"] = {"synthetic": 0.12, "real": 0.08}
    assert not any("head's edge" in line for line in _diagnosis(gan))


def test_distance_verdicts_never_call_a_generator_better_than_real():
    from augment3d.metrics.small_n import distance_verdict

    below = distance_verdict("FID", 0.125, [0.09, 0.2], 0.55, [0.4, 0.7], n=8)
    assert "not a better-than-real generator" in below and "KID is the steadier" in below
    overlap = distance_verdict("FID", 0.3, [0.2, 0.5], 0.35, [0.25, 0.6], n=8)
    assert "cannot be told apart from real data" in overlap
    above = distance_verdict("KID", 0.9, [0.7, 1.1], 0.1, [0.05, 0.2], n=100)
    assert "told apart from real ones" in above and "N=" not in above


def test_metrics_json_of_another_schema_or_damaged_is_refused_naming_the_file(tmp_path):
    """metrics.json is read through one typed object: a file from before the schema was recorded reads
    (its later families None), a newer schema or a file missing a family every schema has is one
    DataError naming the file."""
    from augment3d.errors import DataError
    from augment3d.metrics.results import SCHEMA, Evaluation

    mean = {"mean": 0.5, "std": 0.1, "n": 4}
    old = {
        "run": "r",
        "data": "d",
        "generator_step": 10,
        "psi": 1.0,
        "seed": 0,
        "extractor": "x",
        "grid": [16, 16, 16],
        "n": {"synthetic": 4, "real_train": 4, "real_held_out": 4},
        "settings": {},
        "note": None,
        "fid": {"synthetic_vs_train": 2.0, "floor_held_out_vs_train": 1.0},
        "kid": {"synthetic_vs_train": 0.2, "floor_held_out_vs_train": 0.1},
        "ssim_to_nearest_held_out": mean,
        "mse_to_nearest_held_out": mean,
        "psnr_to_nearest_held_out": mean,
        "reference_held_out_to_nearest_train": {"ssim": mean, "mse": mean},
        "diversity_ms_ssim": {"note": "grid too small"},
        "prdc": {"precision": 1.0},
        "prdc_reference_held_out": {"precision": 1.0},
        "memorisation": {"share_flagged": 0.0},
        "label_consistency_dice": {"synthetic": {"WT": 0.5}, "reference_held_out_real": {"WT": 0.6}},
        "share_with_tumour": {"synthetic": 1.0, "real_held_out": 1.0},
        "condition_fidelity": {
            "site": {"synthetic_accuracy": 0.9, "synthetic_accuracy_by_category": {"SSA": 0.9}, "held_out_real_accuracy": 0.8}
        },
    }
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(old))
    read = Evaluation.read(path)
    assert read.schema == 0 and read.mode == "joint" and read.tumour_at_head_edge is None
    assert read.label_consistency.with_tumour_wt is None and read.diversity.synthetic is None
    assert read.condition_fidelity["site"].real_accuracy_cross_validated == 0.8  # renamed since
    path.write_text(json.dumps({**old, "schema": SCHEMA + 1}))
    with pytest.raises(DataError, match="schema") as err:
        Evaluation.read(path)
    assert str(path) in str(err.value)
    path.write_text(json.dumps({k: v for k, v in old.items() if k != "fid"}))
    with pytest.raises(DataError, match="not a complete augment3d metrics.json") as err:
        Evaluation.read(path)
    assert str(path) in str(err.value)
    path.write_text('{"run": ')
    with pytest.raises(DataError, match="cannot be read as JSON"):
        Evaluation.read(path)
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match="not an object"):
        Evaluation.read(path)
