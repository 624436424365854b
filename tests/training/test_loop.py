"""Training runs: exact resume, the NaN guard, early stopping, batching, EMA, precision, conditioning."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import generator_weights, learning_train, weights_apart

from augment3d.synthesis.sampling import load_generator
from augment3d.training.loop import TrainingData, TrainingLoop
from augment3d.training.trainer import TrainingDiverged, train_gan


@pytest.mark.parametrize(
    "options, model",
    [
        ({"ada_target": 0.0}, {}),
        (
            {
                "condition_swap": 0.5,
                "terms": {
                    "mode_seeking": {"weight": 1.0},
                    "label_consistency": {"weight": 1.0, "warmup": 2},
                    "texture_match": {"weight": 1.0},
                    "contrast_match": {"weight": 1.0},
                },
            },
            {},
        ),
        (
            {"style_mixing": 0.5, "terms": {"label_consistency": {"weight": 1.0, "warmup": 2}}},
            {"d_spectral_norm": True, "style_mode": "adain"},
        ),
    ],
    ids=["labels", "mode-seeking+label-consistency+condition-swap+texture+contrast", "mixing+spectral+adain"],
)
def test_resume_continues_exactly(tiny, tmp_path, options, model):
    data = tiny.data()
    train, model = replace(tiny.train, **options), replace(tiny.model, **model)
    train_gan(tmp_path / "straight", data, model, train, tiny.encoder)
    train_gan(tmp_path / "split", data, model, replace(train, steps=3), tiny.encoder)
    with (tmp_path / "split" / "log.jsonl").open("a") as log:  # as if killed after logging step 4
        log.write(json.dumps({"step": 4, "d_loss": 0.0, "g_loss": 0.0}) + "\n")
    train_gan(tmp_path / "split", data, model, train, tiny.encoder, resume=True)
    a, b = generator_weights(tmp_path / "straight"), generator_weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    straight = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    split = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in split] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(straight, split):  # every logged figure, the terms' and ADA's included
        assert {k: v for k, v in x.items() if k != "seconds"} == {k: v for k, v in y.items() if k != "seconds"}
    if options.get("ada_target") == 0.0:  # D's augmentation switches on (r_t above the target), and resumes exactly
        assert any(r["ada_p"] > 0 for r in split)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_on_a_gpu_continues_the_same_run(tiny, tmp_path):
    """On a GPU (noise drawn there from the loop's seeded stream, copies that do not wait), a
    resumed run ends within ten times a second straight run's distance from the straight run:
    some of the GPU's backward kernels add with atomics, so two straight runs need not be
    bit-equal, and Adam magnifies that; a resume that lost the random stream's place would be
    far off."""
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    data = tiny.data()
    train = replace(tiny.train, style_mixing=0.5, terms={"label_consistency": {"weight": 1.0, "warmup": 2}})
    for name in ("straight", "again"):
        train_gan(tmp_path / name, data, tiny.model, train, tiny.encoder, device="cuda")
    train_gan(tmp_path / "split", data, tiny.model, replace(train, steps=3), tiny.encoder, device="cuda")
    train_gan(tmp_path / "split", data, tiny.model, train, tiny.encoder, resume=True, device="cuda")
    logs = {
        name: [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        for name in ("straight", "again", "split")
    }

    def apart(name: str) -> tuple[float, float]:
        """(largest weight difference, largest logged loss difference) from the straight run"""
        dl = max(abs(x[k] - y[k]) for x, y in zip(logs["straight"], logs[name]) for k in ("d_loss", "g_loss"))
        return weights_apart(tmp_path / "straight", tmp_path / name), dl

    spread, resumed = apart("again"), apart("split")
    assert [r["step"] for r in logs["split"]] == [r["step"] for r in logs["straight"]]
    assert resumed[0] <= 10 * spread[0] + 1e-6 and resumed[1] <= 10 * spread[1] + 1e-6, (
        f"resumed run (weights, losses) {resumed} from the straight run; a second straight run {spread}"
    )


def test_nan_guard_stops_without_poisoning_the_checkpoint(tiny, tmp_path):
    data = tiny.data()
    run = tmp_path / "run"
    train_gan(run, data, tiny.model, replace(tiny.train, steps=3), tiny.encoder)
    before = generator_weights(run)
    data.images[:] = float("nan")
    with pytest.raises(TrainingDiverged, match="non-finite loss at step 4"):
        train_gan(run, data, tiny.model, tiny.train, tiny.encoder, resume=True)
    after = generator_weights(run)
    assert json.loads((run / "generator.json").read_text())["step"] == 3
    for key in before:
        assert torch.equal(before[key], after[key])
        assert torch.isfinite(after[key]).all()


def test_early_stopping_keeps_the_best_generator(tiny, tmp_path):
    run = tmp_path / "run"
    # G frozen (lr 0): the metric cannot improve after the first evaluation, so patience 1 stops at the second
    config = replace(tiny.train, steps=20, g_lr=0.0, eval_every=2, patience=1, checkpoint_every=100, eval_samples=4)
    last = train_gan(run, tiny.data(), tiny.model, config, tiny.encoder)
    assert last["step"] == 4 and last["early_stop"] is True
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "val_swd" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert json.loads((run / "generator.json").read_text())["step"] == 2
    assert json.loads((run / "train_state.json").read_text())["step"] == 4


def test_batch_must_split_into_micro_batches(tiny, tmp_path):
    with pytest.raises(ValueError, match="does not split"):
        train_gan(tmp_path / "r", tiny.data(), tiny.model, replace(tiny.train, batch=3, accumulate=2), tiny.encoder)


def test_accumulation_matches_one_big_micro_batch_per_step_count(tiny):
    """accumulate=2 of micro-batches of 2 sees the same draws as one process would cut them: the
    step's statistics are the mean of the micro-batches, so D's loss is on the same scale."""
    data = tiny.data(8)
    one = TrainingLoop(data, tiny.model, replace(tiny.train, batch=4, accumulate=1), "cpu")
    two = TrainingLoop(data, tiny.model, replace(tiny.train, batch=4, accumulate=2), "cpu")
    a, b = one.step(1), two.step(1)
    assert a.keys() == b.keys()
    assert abs(a["d_loss"] - b["d_loss"]) < 0.5 * abs(a["d_loss"])  # the same scale, not twice it


def test_ema_ramps_up_early(tiny):
    loop = TrainingLoop(tiny.data(), tiny.model, replace(tiny.train, batch=4, ema_images=2000, ema_rampup=0.05), "cpu")
    assert loop.ema_beta(10) < 0.95  # after 40 images the EMA follows quickly
    assert loop.ema_beta(100000) == pytest.approx(0.5 ** (4 / 2000))


def test_bf16_steps_move_the_weights_as_fp32_does(tiny):
    """One step under bf16 autocast changes G and D in the same directions as the fp32 step from
    the same seed (Adam's first step is about lr x sign(gradient), so a sign agreement is the
    measure): a wrong bf16 path (a dropped term, a layout mix-up) would decorrelate them."""
    data = tiny.data(4)
    moves = {}
    for amp in ("none", "bf16"):
        loop = TrainingLoop(data, tiny.model, replace(tiny.train, amp=amp, g_lr=1e-3, d_lr=1e-3), "cpu")
        start = {k: v.clone() for k, v in [*loop.G.state_dict().items(), *loop.D.state_dict().items()]}
        figures = loop.step(1)
        now = dict([*loop.G.state_dict().items(), *loop.D.state_dict().items()])
        moves[amp] = torch.cat([(now[k] - start[k]).flatten() for k in sorted(start)])
        assert all(v.dtype == torch.float32 for v in now.values())
        moves[amp + "_loss"] = figures["g_loss"]
    moved = (moves["none"] != 0) | (moves["bf16"] != 0)
    agree = (torch.sign(moves["none"][moved]) == torch.sign(moves["bf16"][moved])).float().mean()
    assert agree > 0.9, float(agree)
    assert moves["bf16_loss"] == pytest.approx(moves["none_loss"], rel=0.05)


def test_conditioned_samples_follow_their_condition(tiny, tmp_path):
    """HIC subjects bright, SSA subjects dark: a short run draws each site as the data shows it."""
    g = torch.Generator().manual_seed(0)
    sign = torch.tensor([1.0, -1.0] * 4)
    images = (0.1 * torch.randn(8, 4, 16, 16, 16, generator=g) + 0.5 * sign[:, None, None, None, None]).clamp(-1, 1)
    conds = torch.from_numpy(tiny.encoder.encode([{"site": "HIC"}, {"site": "SSA"}] * 4))
    data = TrainingData(images, torch.zeros(8, 16, 16, 16, dtype=torch.long), conds)
    cfg = learning_train(tiny.train, log_every=10)
    run = tmp_path / "run"
    train_gan(run, data, tiny.model, cfg, tiny.encoder)
    gen = load_generator(run)
    hic, _ = gen.generate(condition={"site": "HIC"}, seeds=range(8))
    ssa, _ = gen.generate(condition={"site": "SSA"}, seeds=range(8))
    assert hic.mean() - ssa.mean() > 0.3, (hic.mean(), ssa.mean())


def test_training_data_from_prepared_cases(tiny):
    from augment3d.data.preprocess import PreparedCase

    cases = [
        PreparedCase(
            f"s{i}", np.full((4, 16, 16, 16), i, np.float32), np.full((16, 16, 16), i, np.uint8), np.eye(4), {"site": site}
        )
        for i, site in enumerate(["SSA", "HIC"])
    ]
    data = TrainingData.from_cases(cases, tiny.encoder)
    assert data.images.shape == (2, 4, 16, 16, 16) and data.labels.dtype == torch.int64
    assert float(data.images[1].mean()) == 1.0 and int(data.labels[1, 0, 0, 0]) == 1
    assert data.conditions.tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_condition_swap_renders_the_maps_under_every_condition_equally_often(tiny):
    """The restyle the augmenter asks for (a HIC subject's map under SSA) is trained for: with
    ``condition_swap`` the fakes' conditions are drawn apart from their maps, each combination
    equally often, however scarce it is among the training subjects."""
    data = tiny.data(8)
    data.conditions = torch.from_numpy(tiny.encoder.encode([{"site": "HIC"}] * 7 + [{"site": "SSA"}]))
    ssa = torch.from_numpy(tiny.encoder.encode([{"site": "SSA"}]))[0]

    def ssa_share(loop, draws=200):
        rows = torch.cat([loop._draw().slice(0, 4).cond for _ in range(draws)])
        return (rows == ssa).all(1).float().mean().item()

    own = TrainingLoop(data, tiny.model, replace(tiny.train, batch=4), "cpu")
    swapped = TrainingLoop(data, tiny.model, replace(tiny.train, batch=4, condition_swap=1.0), "cpu")
    assert ssa_share(own) == pytest.approx(1 / 8, abs=0.05)
    assert ssa_share(swapped) == pytest.approx(1 / 2, abs=0.06)
    figures = swapped.step(1)
    assert np.isfinite(figures["d_loss"]) and np.isfinite(figures["g_loss"])
    with pytest.raises(ValueError, match="condition_swap must be in"):
        replace(tiny.train, condition_swap=1.5)


def test_joint_generators_load_and_sample_but_are_not_trained(tiny, tmp_path):
    """The joint mode (images and labels from noise) is kept for runs trained before labels to
    images (tests/test_sampling.py samples one); training one is refused with the reason."""
    with pytest.raises(ValueError, match="loaded and sampled but no longer trained"):
        TrainingLoop(tiny.data(), replace(tiny.model, mode="joint"), tiny.train, "cpu")
