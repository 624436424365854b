"""segbench end to end (the ci recipe), its statistics, its arms and its folder rules."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def ci_bench(tmp_path_factory):
    """The whole ci bench, run once: phantom cohort, splits, GAN on the training split, four arms, report."""
    out = tmp_path_factory.mktemp("bench") / "ci"
    result = _invoke("bench", "--recipe", "ci", "--out", out)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_ci_bench_runs_the_whole_pipeline(ci_bench):
    out, output = ci_bench
    assert "report:" in output
    splits = json.loads((out / "splits.json").read_text())
    train, val, test = (set(splits[k]) for k in ("train", "val", "test"))
    assert train and test and not (train & val) and not (train & test) and not (val & test)
    # the GAN saw the training split only
    assert set(json.loads((out / "gan" / "subjects.json").read_text())["train"]) == train
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == 1
    assert set(report["summary"]["all"]) == {
        "real",
        "real+classic",
        "real+synthetic",
        "real+classic+synthetic",
        "real+paste",
        "real+classic+paste",
    }
    paste = json.loads((out / "arms" / "real+paste" / "seed0" / "result.json").read_text())["paste"]
    assert paste["pasted"] + paste["no_room"] == len(train) and paste["recipients"] >= 1
    assert set(report["head_to_head"]["all"]) == {"real+synthetic vs real+paste", "real+classic+synthetic vs real+classic+paste"}
    assert report["missing"] == []
    assert {"all", "HIC", "SSA"} <= set(report["summary"])
    scored = {row["subject_id"] for row in json.loads((out / "arms" / "real" / "seed0" / "result.json").read_text())["cases"]}
    assert scored == test
    md = (out / "report.md").read_text()
    assert md.splitlines()[2].startswith("**Did synthetic data help?** real+synthetic vs real on the SSA test cases")
    assert md.splitlines()[4].startswith("One cohort: these intervals count the training seeds and the test cases")
    for png in ("dice_by_arm.png", "learning_curves.png", "synthetic_samples.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert report["gan"]["fid_synthetic_vs_train"] >= 0
    # on the phantom cohort the restyle is read against what a perfect restyle scores
    assert set(report["gan"]["perfect_restyle_recognised_site"]) == {"HIC", "SSA"}
    assert "perfect restyle recognised site" in md
    # the report says what the synthetic arms trained on
    assert report["synthetic"] == "augmenter" and "Synthetic subjects: labels to images (real label maps restyled" in md


def test_rerun_keeps_finished_jobs(ci_bench):
    out, _ = ci_bench
    result_file = out / "arms" / "real" / "seed0" / "result.json"
    before = result_file.stat().st_mtime_ns
    again = _invoke("bench", "--recipe", "ci", "--out", out)
    assert again.exit_code == 0, again.output
    assert "finished earlier, kept" in again.output
    assert result_file.stat().st_mtime_ns == before


def test_one_job_then_bench_report_merges_what_finished(ci_bench, tmp_path):
    source, _ = ci_bench
    out = tmp_path / "split-jobs"
    common = ["--recipe", "ci", "--out", out, "--data", source / "cohort", "--generator", source / "gan"]
    setup = _invoke("bench", *common, "--setup-only")
    assert setup.exit_code == 0, setup.output
    assert not (out / "arms").exists() and (out / "splits.json").is_file()
    one = _invoke("bench", *common, "--arm", "real", "--seed", 0)
    assert one.exit_code == 0, one.output
    two = _invoke("bench", *common, "--arm", "real+synthetic", "--seed", 0)
    assert two.exit_code == 0, two.output
    merged = _invoke("bench-report", out)
    assert merged.exit_code == 0, merged.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["finished"]) == {"real", "real+synthetic"}
    assert "real+classic seed 0" in report["missing"]
    assert "not finished yet" in merged.output


def test_a_generator_trained_on_the_test_cases_is_refused(ci_bench, tmp_path):
    import shutil

    source, _ = ci_bench
    leaky = tmp_path / "leaky-gan"
    shutil.copytree(source / "gan", leaky)
    record = json.loads((leaky / "subjects.json").read_text())
    test_ids = json.loads((source / "splits.json").read_text())["test"]
    record["train"] = sorted(set(record["train"]) | set(test_ids))  # as if trained on the whole cohort
    (leaky / "subjects.json").write_text(json.dumps(record))
    out = tmp_path / "bench"
    result = _invoke("bench", "--recipe", "ci", "--out", out, "--data", source / "cohort", "--generator", leaky, "--setup-only")
    assert result.exit_code == 2, result.output
    assert "validation/test cases" in result.output and test_ids[0] in result.output
    assert not (out / "gan_eval").exists()


def test_bench_refuses_foreign_or_mismatched_folders(ci_bench, tmp_path):
    out, _ = ci_bench
    other = _invoke("bench", "--recipe", "quick", "--out", out, "--setup-only")
    assert other.exit_code == 2 and "a bench with a different" in other.output and "recipe_sha256" in other.output
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    refused = _invoke("bench", "--recipe", "ci", "--out", foreign)
    assert refused.exit_code == 2 and "not a bench folder" in refused.output
    assert (foreign / "notes.txt").read_text() == "mine"
    bad_arm = _invoke("bench", "--recipe", "ci", "--out", out, "--arm", "real+gan")
    assert bad_arm.exit_code == 2 and "is not one of this recipe's arms" in bad_arm.output
    empty = _invoke("bench-report", tmp_path)
    assert empty.exit_code == 2 and "not a bench folder" in empty.output


def test_bootstrap_and_wilcoxon():
    from segbench.stats import bootstrap_ci, wilcoxon_p

    assert bootstrap_ci([0.2, 0.2, 0.2]) == (pytest.approx(0.2), pytest.approx(0.2))
    values = np.random.default_rng(0).normal(0.5, 0.1, 40)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high and high - low < 0.1
    assert bootstrap_ci(values, seed=1) != bootstrap_ci(values, seed=2)
    assert wilcoxon_p([0.0, 0.0, 0.0]) is None and wilcoxon_p([0.1]) is None
    assert wilcoxon_p([0.1] * 10) < 0.01


def test_paired_comparison_by_hand():
    from segbench.stats import arm_summary, paired_comparison

    def result(seed, scores):
        return {
            "seed": seed,
            "cases": [
                {"subject_id": f"c{i}", "site": "SSA" if i < 2 else "HIC", "scores": {r: {"dice": d} for r in ("WT", "TC", "ET")}}
                for i, d in enumerate(scores)
            ],
        }

    real = [result(0, [0.5, 0.6, 0.7]), result(1, [0.5, 0.8, 0.7])]
    synth = [result(0, [0.6, 0.6, 0.7]), result(1, [0.7, 0.8, 0.9])]
    c = paired_comparison(synth, real, "dice", "WT", "SSA", 1000)
    # case c0: mean(0.1, 0.2) = 0.15; case c1: 0; mean 0.075
    assert c.cases == 2 and c.difference == pytest.approx(0.075)
    s = arm_summary(real, "dice", "mean", None, 1000)
    assert s.mean == pytest.approx(np.mean([0.5, 0.7, 0.7])) and s.seeds == 2
    assert s.seed_std == pytest.approx(np.std([0.6, 2 / 3]))
    # per seed: seed 0 (0.1 + 0) / 2, seed 1 (0.2 + 0) / 2
    assert c.per_seed == {"0": pytest.approx(0.05), "1": pytest.approx(0.1)}
    assert paired_comparison(synth[:1], real[:1], "dice", "WT", "SSA", 1000).ci95_seeds_and_cases is None


def test_a_gain_that_one_seed_makes_is_not_called_a_gain():
    """Test cases agree within each seed, but the seeds disagree (+0.06 on one, -0.02 on two): the
    CI over cases excludes 0, the CI over seeds and cases does not, and the verdict says so; seeds that
    agree give a two-level CI about as narrow as the one over cases, and a verdict of 'helped'."""
    from segbench.report import _verdict
    from segbench.stats import bootstrap_ci_two_level, paired_comparison

    rng = np.random.default_rng(0)

    def result(seed, scores):
        return {
            "seed": seed,
            "cases": [
                {"subject_id": f"c{i}", "site": "SSA", "scores": {r: {"dice": d} for r in ("WT", "TC", "ET")}}
                for i, d in enumerate(scores)
            ],
        }

    base = rng.uniform(0.3, 0.7, 40)
    real = [result(s, base) for s in range(3)]
    split = [result(s, base + shift + rng.normal(0, 0.005, 40)) for s, shift in enumerate([0.06, -0.02, -0.02])]
    agree = [result(s, base + 0.02 + rng.normal(0, 0.005, 40)) for s in range(3)]
    c = paired_comparison(split, real, "dice", "mean", "SSA", 4000)
    assert c.ci95[0] > 0 and c.ci95_seeds_and_cases[0] < 0 < c.ci95_seeds_and_cases[1]
    assert "not beyond the training seeds' own variation" in _verdict(c)
    c = paired_comparison(agree, real, "dice", "mean", "SSA", 4000)
    assert c.ci95_seeds_and_cases[0] > 0.015 and _verdict(c) == "helped"
    assert bootstrap_ci_two_level(np.full((1, 5), 0.1)) is None


def test_the_report_shows_where_a_difference_comes_from_by_site_and_grade(tmp_path):
    """ET on cases without enhancing tumour scores 1 or 0: an arm that calls ET in LGG cases pays
    there, and the report's by-grade table shows it apart from the HGG cases."""
    import shutil

    from augment3d.config.recipe import load_recipe
    from segbench.report import write_report

    folder = tmp_path / "bench"
    folder.mkdir()
    shutil.copy(load_recipe("ci").path, folder / "recipe.toml")
    (folder / "bench.json").write_text(json.dumps({"recipe": "ci"}))
    grades = ["HGG", "HGG", "LGG", "LGG"]
    et = {"real": [0.7, 0.6, 1.0, 1.0], "real+synthetic": [0.7, 0.6, 0.0, 1.0]}  # one LGG case gets a spurious ET
    for arm, scores in et.items():
        job = folder / "arms" / arm / "seed0"
        job.mkdir(parents=True)
        cases = [
            {
                "subject_id": f"c{i}",
                "site": "HIC",
                "grade": g,
                "scores": {
                    "WT": {"dice": 0.8, "hd95": 3.0, "lesion_dice": 0.8, "lesion_hd95": 3.0},
                    "TC": {"dice": 0.6, "hd95": 3.0, "lesion_dice": 0.6, "lesion_hd95": 3.0},
                    "ET": {"dice": d, "hd95": 0.0, "lesion_dice": d, "lesion_hd95": 0.0},
                },
            }
            for i, (g, d) in enumerate(zip(grades, scores))
        ]
        (job / "result.json").write_text(
            json.dumps(
                {
                    "arm": arm,
                    "seed": 0,
                    "steps": 4,
                    "seconds": 1.0,
                    "cases": cases,
                    "curve": [{"step": 2, "val_dice": 0.5}, {"step": 4, "val_dice": 0.5}],
                    "validation": "val",
                }
            )
        )
    report = write_report(folder)
    by_grade = report["vs_real_by_grade"]
    assert set(by_grade) == {"HIC HGG", "HIC LGG"}
    assert by_grade["HIC HGG"]["real+synthetic"]["ET"].difference == pytest.approx(0.0)
    assert by_grade["HIC LGG"]["real+synthetic"]["ET"].difference == pytest.approx(-0.5)
    assert by_grade["HIC LGG"]["real+synthetic"]["ET"].cases == 2
    assert "| HIC LGG (n=2) | real+synthetic | +0.000 | +0.000 | -0.500 |" in (folder / "report.md").read_text()


def test_synthetic_arm_replaces_subjects_and_real_arm_only_flips(tiny_run):
    from augment3d.data.preprocess import PreparedCase
    from segbench.config import BenchConfig
    from segbench.data import arm_dataset

    rng = np.random.default_rng(0)
    label = np.zeros((16, 16, 16), np.uint8)
    label[5:9, 5:9, 5:9] = 2
    case = PreparedCase(
        subject_id="c0",
        images=rng.uniform(-1, 1, (4, 16, 16, 16)).astype(np.float32),
        label=label,
        affine=np.diag([3.0, 3.0, 3.0, 1.0]),
        conditions={"site": "HIC", "grade": "LGG"},
    )
    real = arm_dataset("real", BenchConfig(), [case], None, seed=0)[0]
    assert torch.equal(real["seg"].data.sum(), torch.tensor(int(label.astype(np.int64).sum())))
    config = BenchConfig(synthetic_p=1.0, synthetic_condition={"site": "SSA"})
    swapped = arm_dataset("real+synthetic", config, [case], str(tiny_run), seed=0)[0]
    assert not np.allclose(swapped["t1n"].data.numpy()[0], case.images[0])
    assert set(np.unique(swapped["seg"].data.numpy())) <= {0, 1, 2, 3}
    history = [t.name for t in swapped.get_applied_transforms()]
    assert "SyntheticReplacement" in history
    replacement = next(t for t in swapped.get_applied_transforms() if t.name == "SyntheticReplacement")
    assert replacement.condition == {"site": "SSA", "grade": "LGG"}  # site fixed, grade from the subject
    cohort = arm_dataset("real+synthetic", BenchConfig(synthetic="cohort", synthetic_ratio=2.0), [case], str(tiny_run), 0)
    assert len(cohort) == 3
    # a synthetic subject first in a batch: the batch still collates (it raised KeyError 'seed')
    import torchio as tio

    batch = next(iter(tio.SubjectsLoader(torch.utils.data.Subset(cohort, [1, 0, 2]), batch_size=3)))
    assert batch["subject_id"][1] == "c0" and batch["site"][0] == "SSA"


def test_the_paste_arm_adds_as_many_pasted_subjects_as_the_synthetic_arm_from_the_same_donors(tmp_path):
    from augment3d.data.preprocess import PreparedCase
    from segbench.config import BenchConfig
    from segbench.data import arm_dataset

    def case(sid, site, at):
        grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 32)] * 3, indexing="ij"))
        brain = (grid**2).sum(0) < 0.8
        label = np.zeros((32, 32, 32), np.uint8)
        label[((grid - np.array(at).reshape(3, 1, 1, 1)) ** 2).sum(0) < 0.03] = 2
        images = np.where(brain, -0.2, -1.0)[None].repeat(4, 0).astype(np.float32)
        images[:, label > 0] = 0.8
        return PreparedCase(sid, images, label, np.diag([2.0, 2.0, 2.0, 1.0]), {"site": site, "grade": "HGG"})

    cases = [
        case("h0", "HIC", (0.4, 0, 0)),
        case("h1", "HIC", (0, 0.4, 0)),
        case("s0", "SSA", (-0.4, 0, 0)),
        case("s1", "SSA", (0, -0.4, 0)),
    ]
    config = BenchConfig(synthetic_ratio=0.5, synthetic_condition={"site": "SSA"})
    dataset = arm_dataset("real+paste", config, cases, None, seed=0, folder=tmp_path)
    assert len(dataset) == 4 + 2 and dataset.counts == {"pasted": 2, "no_room": 0, "moved": 0, "donors": 2, "recipients": 2}
    from augment3d import TumourBank

    bank = TumourBank.load(tmp_path / "tumour_bank")
    assert sorted(d.subject_id for d in bank.donors) == ["s0", "s1"]  # the scarce site's own tumours only
    pasted = [dataset[i] for i in (4, 5)]
    for subject, recipient in zip(pasted, cases[2:]):
        assert subject["site"] == "SSA" and subject["subject_id"].startswith("pasted-0-")
        assert (subject["seg"].data > 0).sum() > (recipient.label > 0).sum()  # its own tumour and a pasted one
    again = arm_dataset("real+paste", config, cases, None, seed=0, folder=tmp_path / "again")
    placed = [next(t for t in d.get_applied_transforms() if t.name == "TumourPlacement") for d in (pasted[0], again[4])]
    assert placed[0].corner == placed[1].corner and placed[0].donor == placed[1].donor  # a seed names the cohort

    # a recipient with no room (a brain smaller than any lesion): its subject goes to the next recipient
    small = case("s2", "SSA", (0, 0, 0))
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 32)] * 3, indexing="ij"))
    small.images[:, (grid**2).sum(0) >= 0.02] = -1.0
    small.label[:] = 0
    config = BenchConfig(synthetic_ratio=0.6, synthetic_condition={"site": "SSA"})  # 3 subjects: s0, s1, s2 -> s0
    moved = arm_dataset("real+paste", config, [*cases, small], None, seed=0, folder=tmp_path / "moved")
    assert moved.counts == {"pasted": 3, "no_room": 0, "moved": 1, "donors": 2, "recipients": 3}
    third = moved[5 + 2]
    assert (third["seg"].data > 0).sum() > (cases[2].label > 0).sum()  # s0's tumour and a pasted one


def test_model_pads_any_shape_and_loss_prefers_the_truth():
    from segbench.config import BenchConfig
    from segbench.model import build_model, predict, seg_loss

    model = build_model(BenchConfig(decoder_channels=(16, 16, 8, 8, 8)))
    out = predict(model, np.zeros((4, 20, 24, 18), np.float32))
    assert out.shape == (20, 24, 18) and out.dtype == np.uint8
    labels = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    labels[0, 2:5, 2:5, 2:5] = 3
    perfect = torch.nn.functional.one_hot(labels, 4).movedim(-1, 1).float() * 20
    assert seg_loss(perfect, labels) < seg_loss(torch.zeros_like(perfect), labels)


@pytest.mark.parametrize(
    "line, message",
    [
        ("patch = 40", "multiple of 32"),
        ('arms = ["real+synthetic"]', "must include 'real'"),
        ("step = 3", "unknown key"),
        ('norm = "layer"', "norm must be"),
        ("seeds = [0.5]", "seeds must be a list of ints"),
        ('synthetic_condition = "SSA"', "synthetic_condition must be a table"),
        ("steps = 1e3", "steps must be a whole number"),
        ('amp = "fp16"', "amp must be 'auto', 'bf16' or 'none'"),
        ('lr_schedule = "cosine"', "lr_schedule must be one of 'constant', 'poly'"),
        ("ema_decay = 1.0", "ema_decay must be in \\[0, 1\\)"),
        ('synthetic_maps_matching = ["site"]', "needs synthetic = 'cohort'"),
        ('synthetic = "cohort"\nsynthetic_maps_matching = ["scanner"]', "scanner is not among \\[data\\] conditions"),
    ],
)
def test_bench_section_is_checked(tmp_path, line, message):
    from augment3d.config.recipe import load_recipe
    from augment3d.errors import RecipeError
    from segbench.config import bench_config

    recipe = tmp_path / "r.toml"
    recipe.write_text(f"[data]\nshape = 16\n[bench]\n{line}\n")
    with pytest.raises(RecipeError, match=message):
        bench_config(load_recipe(recipe))


def test_patch_training_through_a_queue_and_sliding_window_inference(tmp_path):
    from augment3d.data.preprocess import PreparedCase
    from segbench.config import BenchConfig
    from segbench.train import run_job

    rng = np.random.default_rng(1)

    def case(i):
        label = np.zeros((40, 36, 44), np.uint8)
        label[10:20, 8:18, 12:24] = 2
        label[13:17, 11:15, 15:20] = 3
        images = rng.uniform(-1, 1, (4, 40, 36, 44)).astype(np.float32)
        return PreparedCase(f"c{i}", images, label, np.diag([2.0, 2.0, 2.0, 1.0]), {"site": "SSA", "grade": "HGG"})

    config = BenchConfig(
        patch=32, samples_per_volume=2, queue_length=4, steps=2, val_every=1, batch=2, decoder_channels=(16, 16, 8, 8, 8)
    )
    result = run_job(tmp_path, "real", 0, config, [case(0), case(1)], [case(2)], [case(3)], None)
    assert len(result["curve"]) == 2 and result["cases"][0]["subject_id"] == "c3"
    assert set(result["cases"][0]["scores"]) == {"WT", "TC", "ET"}
    assert (tmp_path / "arms" / "real" / "seed0" / "result.json").is_file()


@pytest.mark.parametrize("amp", ["bf16", "none", "auto"])
def test_a_job_records_the_arithmetic_it_trained_in(tmp_path, amp):
    """``amp = "auto"`` resolves by the hardware (bf16 on AVX512-BF16/AMX CPUs and GPUs); each job
    writes what it used, and a bf16 job trains: finite losses, a prediction for every test case."""
    from augment3d.data.preprocess import PreparedCase
    from augment3d.precision import auto_amp
    from segbench.config import BenchConfig
    from segbench.train import run_job

    rng = np.random.default_rng(2)

    def case(i):
        label = np.zeros((32, 32, 32), np.uint8)
        label[8:20, 8:18, 10:22] = 2
        label[11:16, 11:15, 13:18] = 3
        images = np.where(label > 0, 0.5, -0.5)[None].repeat(4, 0) + rng.normal(0, 0.1, (4, 32, 32, 32))
        return PreparedCase(f"c{i}", images.astype(np.float32), label, np.eye(4), {"site": "SSA", "grade": "HGG"})

    config = BenchConfig(steps=2, val_every=1, batch=2, decoder_channels=(16, 16, 8, 8, 8), amp=amp)
    result = run_job(tmp_path, "real", 0, config, [case(0), case(1)], [case(2)], [case(3)], None)
    assert result["amp"] == (auto_amp("auto", "cpu") if amp == "auto" else amp)
    assert all(np.isfinite(point["train_loss"]) for point in result["curve"])
    assert json.loads((tmp_path / "arms" / "real" / "seed0" / "result.json").read_text())["amp"] == result["amp"]


def _one_tumour_case():
    """A 32^3 SSA case with one oedema block, its images bright inside it."""
    from augment3d.data.preprocess import PreparedCase

    label = np.zeros((32, 32, 32), np.uint8)
    label[8:20, 8:18, 10:22] = 2
    return PreparedCase(
        "c0",
        np.where(label > 0, 0.5, -0.5)[None].repeat(4, 0).astype(np.float32),
        label,
        np.eye(4),
        {"site": "SSA", "grade": "HGG"},
    )


@pytest.mark.parametrize("schedule", ["constant", "poly"])
def test_a_job_trains_at_the_scheduled_learning_rate(tmp_path, monkeypatch, schedule):
    """``lr_schedule = "poly"`` (nnU-Net's) decays every optimiser step's rate from ``lr`` towards 0
    by the last step; ``constant`` keeps ``lr``. The job records which it used."""
    import segbench.train as train
    from segbench.config import BenchConfig

    rates, real_step = [], train.train_step

    def spy(model, optimizer, *args):
        rates.append(optimizer.param_groups[0]["lr"])
        return real_step(model, optimizer, *args)

    monkeypatch.setattr(train, "train_step", spy)
    case = _one_tumour_case()
    config = BenchConfig(steps=8, val_every=8, batch=1, lr=1e-3, lr_schedule=schedule, decoder_channels=(16, 16, 8, 8, 8))
    result = train.run_job(tmp_path, "real", 0, config, [case], [case], [case], None)
    assert len(rates) == 8 and rates[0] == pytest.approx(1e-3)
    if schedule == "constant":
        assert rates == pytest.approx([1e-3] * 8)
    else:
        assert all(a > b for a, b in zip(rates, rates[1:])) and rates[-1] < 0.2e-3
        assert rates[4] == pytest.approx(1e-3 * 0.5**0.9)
    assert result["lr_schedule"] == schedule


def _weight_spies(monkeypatch):
    """Lists that fill as segbench jobs run: the weights after each training step, the weights scored
    on the test cases, and each step's loss."""
    import segbench.train as train

    trained, tested, losses = [], [], []
    real_step, real_score = train.train_step, train.score_cases

    def step_spy(model, *args):
        losses.append(real_step(model, *args))
        trained.append({k: v.detach().clone() for k, v in model.named_parameters()})
        return losses[-1]

    def score_spy(model, *args):
        tested.append({k: v.detach().clone() for k, v in model.named_parameters()})
        return real_score(model, *args)

    monkeypatch.setattr(train, "train_step", step_spy)
    monkeypatch.setattr(train, "score_cases", score_spy)
    return trained, tested, losses


@pytest.mark.parametrize("decay", [0.0, 0.8])
def test_a_job_tests_the_moving_average_of_its_weights(tmp_path, monkeypatch, decay):
    """``ema_decay`` > 0: the weights validated and tested are the exponential moving average of
    the trained ones (first step copied, then decay x average + (1 - decay) x weights), while the
    training itself is the same as without it; 0 tests the trained weights."""
    import segbench.train as train
    from segbench.config import BenchConfig

    trained, tested, losses = _weight_spies(monkeypatch)
    case = _one_tumour_case()
    config = BenchConfig(steps=4, val_every=4, batch=1, lr=1e-2, ema_decay=decay, decoder_channels=(16, 16, 8, 8, 8))
    result = train.run_job(tmp_path, "real", 0, config, [case], [case], [case], None)
    average = dict(trained[0])
    for weights in trained[1:]:
        average = {k: decay * average[k] + (1 - decay) * w for k, w in weights.items()}
    assert result["ema_decay"] == decay and len(tested) == 1
    for name, value in tested[0].items():
        torch.testing.assert_close(value, average[name], rtol=1e-5, atol=1e-6)
    if decay:
        assert any(not torch.equal(tested[0][k], trained[-1][k]) for k in trained[-1])
        losses_with = list(losses)
        losses.clear()
        train.run_job(tmp_path / "raw", "real", 0, replace(config, ema_decay=0.0), [case], [case], [case], None)
        assert losses == losses_with  # averaging leaves the training alone


@pytest.mark.parametrize("steps, anneal", [(6, 0), (4, 2)])
def test_a_job_tests_the_uniform_average_of_its_last_steps(tmp_path, monkeypatch, steps, anneal):
    """``average_steps``: the weights validated at the end and tested are the plain mean of the weights
    after each of the job's last ``average_steps`` steps (over the anneal too), the training itself
    unchanged; an average whose window the plateau rule could not know in advance is refused."""
    import segbench.train as train
    from segbench.config import BenchConfig

    trained, tested, losses = _weight_spies(monkeypatch)
    case = _one_tumour_case()
    config = BenchConfig(
        steps=steps, anneal_steps=anneal, average_steps=3, val_every=2, batch=1, lr=1e-2, decoder_channels=(16, 16, 8, 8, 8)
    )
    result = train.run_job(tmp_path, "real", 0, config, [case], [case], [case], None)
    assert len(trained) == 6 and len(tested) == 1 and result["best_step"] == 6 and result["average_steps"] == 3
    for name, value in tested[0].items():
        torch.testing.assert_close(value, sum(w[name] for w in trained[3:]) / 3, rtol=1e-5, atol=1e-6)
    losses_with = list(losses)
    losses.clear()
    train.run_job(tmp_path / "raw", "real", 0, replace(config, average_steps=0), [case], [case], [case], None)
    assert losses == losses_with
    with pytest.raises(ValueError, match="end known in advance"):
        replace(config, patience=2, anneal_steps=2)
    with pytest.raises(ValueError, match="set one of them"):
        replace(config, ema_decay=0.9)


def test_a_job_stops_on_its_plateau_then_anneals_and_tests_its_last_weights(tmp_path, monkeypatch):
    """With `patience`, a job whose validation curve goes flat stops learning there (not at the cap),
    then runs `anneal_steps` more steps at a rate falling linearly to 0, and tests the weights it
    ends with; the result says why it stopped. A curve that keeps rising runs to the cap and says so."""
    import segbench.train as train
    from segbench.config import BenchConfig

    rates, real_step = [], train.train_step

    def step_spy(model, optimizer, *args):
        rates.append(optimizer.param_groups[0]["lr"])
        return real_step(model, optimizer, *args)

    scripted = iter([0.2, 0.4, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1])  # flat from the 3rd validation on
    monkeypatch.setattr(train, "train_step", step_spy)
    monkeypatch.setattr(train, "_validation_dice", lambda *a: next(scripted))
    case = _one_tumour_case()
    config = BenchConfig(
        steps=40,
        val_every=2,
        batch=1,
        lr=1e-3,
        patience=2,
        plateau_window=1,
        min_delta=0.0,
        anneal_steps=4,
        decoder_channels=(16, 16, 8, 8, 8),
    )
    result = train.run_job(tmp_path, "real", 0, config, [case], [case], [case], None)
    assert result["stop"] == {"reason": "plateau", "step": 10, "anneal_steps": 4, "trained_steps": 14}
    assert rates[:10] == pytest.approx([1e-3] * 10)
    assert rates[10:] == pytest.approx([1e-3, 0.75e-3, 0.5e-3, 0.25e-3])
    assert result["best_step"] == 14 and result["best_val_dice"] == pytest.approx(0.1)  # the last weights, not the best
    assert [c["step"] for c in result["curve"]] == [2, 4, 6, 8, 10, 12, 14]

    monkeypatch.setattr(train, "_validation_dice", lambda *a, _v=iter(np.linspace(0.1, 0.9, 50)): next(_v))
    rising = train.run_job(tmp_path / "rising", "real", 0, replace(config, steps=8, anneal_steps=0), [case], [case], [case], None)
    assert rising["stop"]["reason"] == "cap" and rising["stop"]["trained_steps"] == 8


_JOBS_IN_ONE_PROCESS = """
import json, sys
import numpy as np
from augment3d.data.preprocess import PreparedCase
from segbench.config import BenchConfig
from segbench.train import run_job

rng = np.random.default_rng(0)
label = np.zeros((16, 16, 16), np.uint8)
label[4:10, 5:11, 4:12] = 2
label[6:8, 7:9, 6:9] = 3
cases = [PreparedCase(f"c{i}", (np.where(label > 0, 0.5, -0.5)[None] + rng.normal(0, 0.1, (4, 16, 16, 16))).astype(np.float32),
                      label, np.diag([2.0, 2.0, 2.0, 1.0]), {"site": "HIC", "grade": "HGG"}) for i in range(3)]
config = BenchConfig(steps=3, val_every=3, batch=2, decoder_channels=(16, 16, 8, 8, 8), synthetic="cohort",
                     synthetic_ratio=1.0, synthetic_condition={"site": "SSA"})
out = sys.argv[2]
def job(seed, folder):
    result = run_job(f"{out}/{folder}", "real+classic+synthetic", seed, config, cases[:2], cases[2:], cases[2:], sys.argv[1])
    return [result["curve"], result["cases"]]
print(json.dumps([job(1, "first"), job(0, "other"), job(1, "again")]))
"""


def test_a_job_gives_the_same_result_first_in_a_process_and_after_another_job(tiny_run, tmp_path):
    """A job is a function of its (arm, seed): first in a fresh process (where the segmentation
    library and the generator are loaded, and both once drew from torch's global random stream)
    or after another job, the training losses and test scores are identical. `augment3d bench`
    runs every job in one process, `--arm A --seed S` runs one; both must give the same figures."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _JOBS_IN_ONE_PROCESS, str(tiny_run), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    first, other, again = json.loads(done.stdout.splitlines()[-1])
    assert first == again
    assert first[0] != other[0]  # the seed matters: another seed trains differently


@pytest.mark.parametrize("channels", [16, 64])
def test_bf16_weight_gradients_are_right_where_the_volume_is_two_voxels_deep(channels):
    """A 32^3 case reaches 2^3 four levels down the net. There the CPU's bf16 weight gradient of a
    padded 3x3x3 convolution was garbage (up to 1e37 or NaN, on every call), so a bf16 job trained
    on noise; the bench's convolutions must give fp32's gradient to bf16 precision."""
    from segbench.config import BenchConfig
    from segbench.model import BenchConv3d, build_model

    assert all(type(m) is not torch.nn.Conv3d for m in build_model(BenchConfig(decoder_channels=(16, 16, 8, 8, 8))).modules())
    torch.manual_seed(0)
    conv = BenchConv3d(channels, channels, 3, padding=1, bias=False)
    x, grad_out = torch.randn(2, channels, 2, 2, 2), torch.randn(2, channels, 2, 2, 2)
    weight64 = conv.weight.detach().double().requires_grad_(True)
    torch.nn.functional.conv3d(x.double(), weight64, None, 1, 1).backward(grad_out.double())
    expected = weight64.grad
    for _ in range(3):
        conv.weight.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
        out.backward(grad_out.to(out.dtype))
        error = (conv.weight.grad.double() - expected).abs().max() / expected.abs().max()
        assert error < 0.05


def _cohort_results(seed_shifts, base, noise, rng, site="SSA"):
    """A cohort's `real` and `real+synthetic` jobs: per seed, the synthetic arm's scores are `real`'s
    plus that seed's shift plus per-case noise."""

    def result(seed, scores):
        return {
            "seed": seed,
            "cases": [
                {"subject_id": f"c{i}", "site": site, "scores": {r: {"dice": d} for r in ("WT", "TC", "ET")}}
                for i, d in enumerate(scores)
            ],
        }

    real = [result(s, base) for s in range(len(seed_shifts))]
    synth = [result(s, base + shift + rng.normal(0, noise, base.size)) for s, shift in enumerate(seed_shifts)]
    return synth, real


def test_the_pooled_interval_counts_a_cohort_that_disagrees():
    """Three cohorts that agree (+0.02 on every seed) pool to an interval above 0; when one cohort
    shows the reverse (-0.04 on every seed), each cohort's own interval over seeds and cases still
    excludes 0, but the pooled interval, which resamples cohorts, includes it."""
    from segbench.stats import bootstrap_ci_hierarchical, bootstrap_ci_two_level, paired_comparison, pooled_comparison

    rng = np.random.default_rng(1)
    agree = {f"cohort {c}": _cohort_results([0.02, 0.02, 0.02], rng.uniform(0.3, 0.7, 40), 0.01, rng) for c in range(3)}
    pooled = pooled_comparison(agree, "dice", "mean", "SSA", 4000)
    low, high = pooled.ci95_cohorts_seeds_and_cases
    assert pooled.cohorts == 3 and pooled.difference == pytest.approx(0.02, abs=0.003) and 0.01 < low < high < 0.03

    disagree = dict(agree)
    disagree["cohort 2"] = _cohort_results([-0.04, -0.04, -0.04], rng.uniform(0.3, 0.7, 40), 0.01, rng)
    for synth, real in disagree.values():
        own = paired_comparison(synth, real, "dice", "mean", "SSA", 4000).ci95_seeds_and_cases
        assert own[0] > 0 or own[1] < 0  # every cohort alone looks decided
    pooled = pooled_comparison(disagree, "dice", "mean", "SSA", 4000)
    low, high = pooled.ci95_cohorts_seeds_and_cases
    assert pooled.difference == pytest.approx((0.02 + 0.02 - 0.04) / 3, abs=0.003)
    assert low < 0 < high and high - low > 0.04
    assert pooled.per_cohort["cohort 2"] == pytest.approx(-0.04, abs=0.003)
    # one cohort: the interval over seeds and cases of that cohort
    matrix = np.array([[0.01, 0.03, 0.02], [0.0, 0.05, 0.01]])
    assert bootstrap_ci_hierarchical([matrix], 2000, seed=3) == pytest.approx(bootstrap_ci_two_level(matrix, 2000, seed=3))


def test_the_pooled_difference_weighs_cohorts_alike_and_names_empty_ones():
    """A cohort of 10 cases counts as much as one of 40: the pooled difference is the mean of the
    cohorts' means, by hand; a cohort with no test case of the site is named, not averaged in."""
    from segbench.stats import pooled_comparison

    rng = np.random.default_rng(2)
    cohorts = {
        "a": _cohort_results([0.10, 0.10], rng.uniform(0.3, 0.7, 10), 0.0, rng),
        "b": _cohort_results([0.00, 0.02], rng.uniform(0.3, 0.7, 40), 0.0, rng),
        "c": _cohort_results([0.05, 0.05], rng.uniform(0.3, 0.7, 5), 0.0, rng, site="HIC"),
    }
    pooled = pooled_comparison(cohorts, "dice", "mean", "SSA", 2000)
    assert pooled.difference == pytest.approx((0.10 + 0.01) / 2)
    assert pooled.per_cohort == {"a": pytest.approx(0.10), "b": pytest.approx(0.01)}
    assert pooled.cases == [10, 40] and pooled.seeds == [2, 2] and pooled.without_cases == ["c"]


def _two_arm_recipe(tmp_path):
    """The ci recipe with only the arms that need no GAN and two seeds: a whole bench in seconds."""
    import tomllib

    from augment3d.config.recipe import load_recipe, recipe_toml

    raw = tomllib.loads(load_recipe("ci").path.read_text())
    raw["bench"].update(arms=["real", "real+classic"], seeds=[0, 1])
    path = tmp_path / "ci2.toml"
    path.write_text(recipe_toml(raw))
    return path


def test_a_bench_over_cohorts_runs_each_cohort_whole_and_pools_them(tmp_path):
    """`--cohorts 0,1,2`: each cohort its own phantom cohort, split and jobs, under the recipe with its
    three seeds set to the cohort; one pooled report with a forest plot. The same cohort run job by
    job (`--cohort C --arm A --seed S`, as a job array would) gives the same results, and
    bench-report merges them."""
    from augment3d.config.recipe import load_recipe

    recipe = _two_arm_recipe(tmp_path)
    out = tmp_path / "pooled"
    result = _invoke("bench", "--recipe", recipe, "--out", out, "--cohorts", "0,1,2")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["cohorts"] == [0, 1, 2] and report["cohorts_with_results"] == ["0", "1", "2"] and not report["missing"]
    pooled = report["pooled"]["all"]["real+classic"]
    assert pooled["cohorts"] == 3 and pooled["seeds"] == [2, 2, 2]
    assert pooled["difference"] == pytest.approx(np.mean(list(pooled["per_cohort"].values())))
    assert (out / "forest.png").read_bytes()[:4] == b"\x89PNG" and (out / "learning_curves.png").is_file()
    md = (out / "report.md").read_text()
    assert md.splitlines()[2].startswith("**Did it help?** real+classic vs real") and "![Forest plot](forest.png)" in md
    for c in (0, 1, 2):
        r = load_recipe(out / f"cohort-{c}.toml")
        assert (r.phantom.seed, r.train.seed, r.bench["split_seed"]) == (c, c, c)
        assert r.phantom.cases == load_recipe(recipe).phantom.cases and "cohorts" not in r.bench
        assert json.loads((out / f"cohort-{c}" / "cohort" / "phantom.json").read_text())["config"]["seed"] == c
        assert (out / f"cohort-{c}" / "report.md").is_file()
    splits = [json.loads((out / f"cohort-{c}" / "splits.json").read_text()) for c in (0, 1, 2)]
    assert splits[0]["seed"] == 0 and splits[1]["seed"] == 1 and splits[0]["train"] != splits[1]["train"]

    array = tmp_path / "array"
    for arm, seed in (("real", 0), ("real+classic", 0)):
        one = _invoke(
            "bench", "--recipe", recipe, "--out", array, "--cohorts", "0,1,2", "--cohort", 1, "--arm", arm, "--seed", seed
        )
        assert one.exit_code == 0, one.output
    for arm in ("real", "real+classic"):
        job = f"cohort-1/arms/{arm}/seed0/result.json"
        ours, whole = json.loads((array / job).read_text()), json.loads((out / job).read_text())
        assert ours["cases"] == whole["cases"] and ours["curve"] == whole["curve"]
    assert not (array / "cohort-0" / "arms").exists()
    merged = _invoke("bench-report", array)
    assert merged.exit_code == 0, merged.output
    partial = json.loads((array / "report.json").read_text())
    assert partial["cohorts_with_results"] == ["1"] and "cohort 0 real seed 0" in partial["missing"]
    assert "not finished yet" in merged.output

    refused = _invoke(
        "bench", "--recipe", recipe, "--out", tmp_path / "x", "--cohorts", "0,1", "--data", out / "cohort-0" / "cohort"
    )
    assert refused.exit_code == 2 and "--cohorts" in refused.output
    other = _invoke("bench", "--recipe", recipe, "--out", out, "--cohorts", "0,1")
    assert other.exit_code == 2 and "different cohorts" in other.output
    bad = _invoke("bench", "--recipe", recipe, "--out", tmp_path / "y", "--cohorts", "0,zero")
    assert bad.exit_code == 2 and "--cohorts" in bad.output
    unknown = _invoke("bench", "--recipe", recipe, "--out", out, "--cohorts", "0,1,2", "--cohort", 7)
    assert unknown.exit_code == 2 and "--cohort 7" in unknown.output


def test_a_bench_grows_by_arms_seeds_and_cohorts_keeping_finished_jobs(tmp_path):
    """A recipe that only adds [bench] arms or seeds (or a pooled bench more cohorts) continues the
    folder: the new jobs run, the finished ones are kept; any other change, or dropping a seed, is
    refused as before."""
    import tomllib

    from augment3d.config.recipe import recipe_toml

    base = _two_arm_recipe(tmp_path)

    def variant(name, **bench):
        raw = tomllib.loads(base.read_text())
        raw["bench"].update(bench)
        (tmp_path / name).mkdir()
        path = tmp_path / name / base.name  # the same recipe name, edited
        path.write_text(recipe_toml(raw))
        return path

    out = tmp_path / "grows"
    first = _invoke("bench", "--recipe", variant("one", arms=["real"], seeds=[0]), "--out", out, "--cohorts", "0")
    assert first.exit_code == 0, first.output
    done = out / "cohort-0" / "arms" / "real" / "seed0" / "result.json"
    before = done.stat().st_mtime_ns
    more = variant("more", arms=["real", "real+classic"], seeds=[0])
    grown = _invoke("bench", "--recipe", more, "--out", out, "--cohorts", "0,1")
    assert grown.exit_code == 0, grown.output
    assert done.stat().st_mtime_ns == before and "finished earlier, kept" in grown.output
    report = json.loads((out / "report.json").read_text())
    assert report["cohorts"] == [0, 1] and not report["missing"]
    assert (out / "cohort-0" / "arms" / "real+classic" / "seed0" / "result.json").is_file()
    assert (out / "recipe.toml").read_text() == more.read_text()
    assert json.loads((out / "bench.json").read_text())["cohorts"] == [0, 1]
    for name, changes in (("steps", {"arms": ["real", "real+classic"], "steps": 6}), ("fewer", {"arms": ["real"], "seeds": [0]})):
        refused = _invoke("bench", "--recipe", variant(name, **changes), "--out", out, "--cohorts", "0,1")
        assert refused.exit_code == 2 and "a bench with a different" in refused.output, (name, refused.output)
    assert (out / "recipe.toml").read_text() == more.read_text()


def test_lesion_wise_scores_made_under_older_rules_are_left_out_not_compared(ci_bench, tmp_path):
    """A job scored before the lesion-wise metric followed the BraTS-2023 scorer (no `lesion_rules`
    in its result.json) keeps its Dice and HD95 but shows no lesion-wise figures, and no arm is
    compared with it lesion-wise; the report names it."""
    import shutil

    source, _ = ci_bench
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    job = out / "arms" / "real" / "seed0" / "result.json"
    result = json.loads(job.read_text())
    assert result["lesion_rules"] == "brats2023-scorer"
    del result["lesion_rules"]
    job.write_text(json.dumps(result))
    merged = _invoke("bench-report", out)
    assert merged.exit_code == 0, merged.output
    report = json.loads((out / "report.json").read_text())
    real, classic = report["summary"]["all"]["real"]["mean"], report["summary"]["all"]["real+classic"]["mean"]
    assert real["lesion_dice"]["mean"] is None and real["dice"]["mean"] is not None
    assert classic["lesion_dice"]["mean"] is not None  # its own scores follow today's rules
    assert report["vs_real"]["all"]["real+classic"]["mean"]["lesion_dice"]["difference"] is None
    assert report["lesion_rules_older"] == ["real seed 0"]
    assert "Lesion-wise scores of 1 job(s) were made under rules older" in (out / "report.md").read_text()


def test_the_pooled_report_puts_the_gan_against_copy_paste_per_cohort_and_pooled(tmp_path):
    """real+synthetic vs real+paste, paired per case in each cohort and pooled over cohorts like the
    comparisons with `real`: hand-built cohorts where the GAN leads by +0.03 and by -0.01."""
    import tomllib

    from augment3d.config.recipe import load_recipe, recipe_toml
    from segbench.pooled_report import build_pooled_report, write_pooled_report

    raw = tomllib.loads(load_recipe("ci").path.read_text())
    raw["bench"].update(arms=["real", "real+synthetic", "real+paste"], seeds=[0, 1])
    (tmp_path / "recipe.toml").write_text(recipe_toml(raw))
    (tmp_path / "bench.json").write_text(json.dumps({"recipe": "ci", "cohorts": [0, 1]}))
    rng = np.random.default_rng(4)
    for cohort, lead in ((0, 0.03), (1, -0.01)):
        base = rng.uniform(0.3, 0.7, 20)
        (tmp_path / f"cohort-{cohort}").mkdir()
        (tmp_path / f"cohort-{cohort}" / "recipe.toml").write_text(recipe_toml(raw))
        (tmp_path / f"cohort-{cohort}" / "bench.json").write_text(json.dumps({"recipe": "ci"}))
        for arm, shift in (("real", 0.0), ("real+paste", 0.02), ("real+synthetic", 0.02 + lead)):
            for seed in (0, 1):
                folder = tmp_path / f"cohort-{cohort}" / "arms" / arm / f"seed{seed}"
                folder.mkdir(parents=True)
                cases = [
                    {
                        "subject_id": f"c{i}",
                        "site": "SSA",
                        "scores": {
                            r: {"dice": d + shift, "hd95": 1.0, "lesion_dice": 0.0, "lesion_hd95": 1.0}
                            for r in ("WT", "TC", "ET")
                        },
                    }
                    for i, d in enumerate(base)
                ]
                (folder / "result.json").write_text(
                    json.dumps(
                        {
                            "arm": arm,
                            "seed": seed,
                            "cases": cases,
                            "steps": 4,
                            "stop": {"reason": "plateau", "step": 4},
                            "curve": [{"step": 4, "val_dice": 0.5}],
                            "seconds": 1.0,
                            "lesion_rules": "brats2023-scorer",
                        }
                    )
                )
    report = build_pooled_report(tmp_path)
    pair = report["head_to_head"]["SSA"]["real+synthetic vs real+paste"]
    assert pair.per_cohort == {"0": pytest.approx(0.03), "1": pytest.approx(-0.01)}
    assert pair.difference == pytest.approx(0.01) and pair.cohorts == 2
    low, high = pair.ci95_cohorts_seeds_and_cases
    assert low <= -0.01 + 1e-9 and high >= 0.03 - 1e-9  # two cohorts that disagree: the interval spans both
    write_pooled_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert (
        "## The generators against copy-paste" in md
        and "| SSA | real+synthetic vs real+paste | 0: +0.030, 1: -0.010 | +0.010 |" in md
    )
