"""Training runs, checkpoints, resume, the NaN guard, untrusted files and sampling."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from augment3d.data import ConditionEncoder
from augment3d.errors import CheckpointError
from augment3d.models import ModelConfig
from augment3d.sampling import load_generator
from augment3d.training.trainer import TrainConfig, TrainingData, TrainingDiverged, train_gan
from cli import app

ENC = ConditionEncoder({"site": ["HIC", "SSA"]})
MODEL = ModelConfig(shape=16, cond_dim=2, z_dim=16, w_dim=16, channel_max=8, d_channel_max=8, mapping_layers=2)
TRAIN = TrainConfig(steps=6, batch=2, loss="nonsaturating", g_lr=2.5e-4, d_lr=2.5e-4, r1_interval=2,
                    checkpoint_every=3, log_every=1, ada_interval=1, ada_images=50)


def tiny_data(n=4):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 4, 16, 16, 16, generator=g) * 2 - 1
    labels = torch.randint(0, 4, (n, 16, 16, 16), generator=g)
    conds = torch.from_numpy(ENC.encode([{"site": "HIC"}, {"site": "SSA"}] * (n // 2)))
    return TrainingData(images, labels, conds)


def weights(run):
    return {k: v.clone() for k, v in load_generator(run).network.state_dict().items()}


@pytest.mark.parametrize("regularisers, model", [
    ({}, {}),
    ({"mode_seeking": 1.0, "lecam": 0.3, "seg_consistency": 1.0, "seg_warmup": 2}, {}),
    ({"style_mixing": 0.5, "seg_consistency": 1.0, "seg_warmup": 2, "seg_augment": True, "seg_label_pull": 0.5,
      "seg_pull_on": "tumour"},
     {"d_spectral_norm": True}),
], ids=["plain", "ms-lecam-seg", "mixing-spectral-segaug"])
def test_resume_continues_exactly(tmp_path, regularisers, model):
    data = tiny_data()
    train, model = replace(TRAIN, **regularisers), replace(MODEL, **model)
    train_gan(tmp_path / "straight", data, model, train, ENC, {})
    train_gan(tmp_path / "split", data, model, replace(train, steps=3), ENC, {})
    with (tmp_path / "split" / "log.jsonl").open("a") as log:  # as if killed after logging step 4
        log.write(json.dumps({"step": 4, "d_loss": 0.0, "g_loss": 0.0}) + "\n")
    train_gan(tmp_path / "split", data, model, train, ENC, {}, resume=True)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert any(r["ada_p"] > 0 for r in log)  # D is confident on the reals: augmentation switches on


def test_nan_guard_stops_without_poisoning_the_checkpoint(tmp_path):
    data = tiny_data()
    run = tmp_path / "run"
    train_gan(run, data, MODEL, replace(TRAIN, steps=3), ENC, {})
    before = weights(run)
    data.images[:] = float("nan")
    with pytest.raises(TrainingDiverged, match="non-finite loss at step 4"):
        train_gan(run, data, MODEL, TRAIN, ENC, {}, resume=True)
    after = weights(run)
    assert json.loads((run / "generator.json").read_text())["step"] == 3
    for key in before:
        assert torch.equal(before[key], after[key])
        assert torch.isfinite(after[key]).all()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_forged_pickle_is_refused_without_running_it(tmp_path):
    run = tmp_path / "run"
    train_gan(run, tiny_data(), MODEL, replace(TRAIN, steps=1), ENC, {})
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"weights": _Payload(str(marker))})
    (run / "generator.safetensors").write_bytes(blob)
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_generator(run)
    # even with the hash forged to match, the file is parsed as safetensors and refused
    meta = json.loads((run / "generator.json").read_text())
    import hashlib

    meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    (run / "generator.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_generator(run)
    assert not marker.exists()


def test_untrusted_and_damaged_checkpoints(tmp_path):
    run = tmp_path / "run"
    train_gan(run, tiny_data(), MODEL, replace(TRAIN, steps=1), ENC, {})
    meta_path = run / "generator.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(CheckpointError, match="newer than this augment3d reads"):
        load_generator(run)
    meta_path.write_text(json.dumps({**meta, "format": "someone.else"}))
    with pytest.raises(CheckpointError, match="not an augment3d generator"):
        load_generator(run)
    meta_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not a JSON file"):
        load_generator(run)
    meta_path.write_text(json.dumps({**meta, "model": {**meta["model"], "channel_max": 32}}))
    with pytest.raises(CheckpointError, match="does not describe a usable generator"):
        load_generator(run)
    with pytest.raises(CheckpointError, match="not a run folder"):
        load_generator(tmp_path / "absent")


def test_a_seed_names_a_subject(tmp_path):
    run = tmp_path / "run"
    train_gan(run, tiny_data(), MODEL, replace(TRAIN, steps=2), ENC, {})
    gen = load_generator(run)
    a_img, a_lab = gen.generate(condition={"site": "SSA"}, seeds=[5, 6], psi=0.7)
    again_img, again_lab = gen.generate(condition={"site": "SSA"}, seeds=[5, 6], psi=0.7)
    np.testing.assert_array_equal(a_img, again_img)  # same call, same bytes
    np.testing.assert_array_equal(a_lab, again_lab)
    # in another batch the same seed gives the same subject up to float rounding of batched convs
    b_img, b_lab = gen.generate(condition={"site": "SSA"}, seeds=[6], psi=0.7)
    np.testing.assert_allclose(a_img[1], b_img[0], atol=1e-5)
    assert (a_lab[1] == b_lab[0]).mean() > 0.999
    assert not np.array_equal(a_img[0], a_img[1])
    assert a_img.min() >= -1 and a_img.max() <= 1 and set(np.unique(a_lab)) <= {0, 1, 2, 3}
    assert gen.conditions == {"site": ["HIC", "SSA"]} and gen.shape == (16, 16, 16)


def test_cli_train_resume_sample(cohort, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(cohort), "--recipe", "ci", "--out", str(run), "--steps", "3"])
    assert result.exit_code == 0, result.output
    for name in ("generator.safetensors", "generator.json", "log.jsonl", "curves.png", "samples_latest.png"):
        assert (run / name).is_file(), name
    again = runner.invoke(app, ["train", str(cohort), "--recipe", "ci", "--out", str(run)])
    assert again.exit_code == 2 and "already exists; use --resume" in again.stderr
    resumed = runner.invoke(app, ["train", str(cohort), "--recipe", "ci", "--out", str(run), "--resume"])
    assert resumed.exit_code == 0 and "step 6" in resumed.stdout
    info = runner.invoke(app, ["info", str(run)])
    assert info.exit_code == 0 and "generator at step 6" in info.stdout and "site {HIC, SSA}" in info.stdout
    out = tmp_path / "nn"
    result = runner.invoke(app, ["sample", str(run), str(out), "--n", "2", "--condition", "site=SSA",
                                 "--condition", "grade=LGG", "--seed", "3", "--format", "nnunet"])
    assert result.exit_code == 0, result.output
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["numTraining"] == 2 and dataset["labels"]["ET"] == 3
    assert sorted(p.name for p in (out / "imagesTr").iterdir())[:4] == [f"BraTS-SYN-000003-000_{k:04d}.nii.gz" for k in range(4)]
    assert len(os.listdir(out / "labelsTr")) == 2
    bad = runner.invoke(app, ["sample", str(run), str(tmp_path / "x"), "--condition", "site=EU", "--condition", "grade=LGG"])
    assert bad.exit_code == 2 and f"{run}: unknown site 'EU' (known: HIC, SSA)" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_early_stopping_keeps_the_best_generator(tmp_path):
    run = tmp_path / "run"
    # G frozen (lr 0): the metric cannot improve after the first evaluation, so patience 1 stops at the second
    config = replace(TRAIN, steps=20, g_lr=0.0, eval_every=2, patience=1, checkpoint_every=100, eval_samples=4)
    last = train_gan(run, tiny_data(), MODEL, config, ENC, {})
    assert last["step"] == 4 and last["early_stop"] is True
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "val_swd" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert json.loads((run / "generator.json").read_text())["step"] == 2
    assert json.loads((run / "train_state.json").read_text())["step"] == 4


def test_batch_must_split_into_micro_batches(tmp_path):
    with pytest.raises(ValueError, match="does not split"):
        train_gan(tmp_path / "r", tiny_data(), MODEL, replace(TRAIN, batch=3, accumulate=2), ENC, {})


def test_bf16_autocast_trains(tmp_path):
    run = tmp_path / "run"
    last = train_gan(run, tiny_data(), MODEL, replace(TRAIN, steps=2, amp="bf16"), ENC, {})
    assert np.isfinite(last["d_loss"]) and np.isfinite(last["g_loss"])
    for value in weights(run).values():
        assert value.dtype == torch.float32 and torch.isfinite(value).all()


def test_ema_ramps_up_early():
    from augment3d.training.trainer import _Loop
    from augment3d.training.distributed import World

    loop = _Loop(tiny_data(), MODEL, replace(TRAIN, batch=4, ema_images=2000, ema_rampup=0.05), "cpu", World())
    assert loop.ema_beta(10) < 0.95  # after 40 images the EMA follows quickly
    assert loop.ema_beta(100000) == pytest.approx(0.5 ** (4 / 2000))


def test_conditioned_samples_follow_their_condition(tmp_path):
    """HIC subjects bright, SSA subjects dark: a short run draws each site as the data shows it."""
    g = torch.Generator().manual_seed(0)
    sign = torch.tensor([1.0, -1.0] * 4)
    images = (0.1 * torch.randn(8, 4, 16, 16, 16, generator=g) + 0.5 * sign[:, None, None, None, None]).clamp(-1, 1)
    conds = torch.from_numpy(ENC.encode([{"site": "HIC"}, {"site": "SSA"}] * 4))
    data = TrainingData(images, torch.zeros(8, 16, 16, 16, dtype=torch.long), conds)
    cfg = replace(TRAIN, steps=150, batch=4, g_lr=2e-3, d_lr=2e-3, r1_interval=16, checkpoint_every=1000,
                  log_every=10, ada_interval=4, ada_images=5000, cond_loss=1.0)
    run = tmp_path / "run"
    train_gan(run, data, MODEL, cfg, ENC, {})
    gen = load_generator(run)
    hic, _ = gen.generate(condition={"site": "HIC"}, seeds=range(8))
    ssa, _ = gen.generate(condition={"site": "SSA"}, seeds=range(8))
    assert hic.mean() - ssa.mean() > 0.3, (hic.mean(), ssa.mean())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["d_cond"] < 0.5 * log[0]["d_cond"]  # D's classifier learns the sites of real subjects


def test_generators_saved_before_the_condition_bypass_still_load(tmp_path):
    from augment3d.models import Generator3D
    from augment3d.sampling import save_generator

    old = Generator3D(replace(MODEL, cond_bypass=False))
    save_generator(tmp_path, old, ENC, {}, step=1)
    meta_path = tmp_path / "generator.json"
    meta = json.loads(meta_path.read_text())
    del meta["model"]["cond_bypass"]  # as written by augment3d before the option existed
    meta_path.write_text(json.dumps(meta))
    gen = load_generator(tmp_path)
    assert gen.network.mapping.bypass is None
    images, _ = gen.generate(condition={"site": "SSA"}, seeds=[0])
    assert images.shape == (1, 4, 16, 16, 16)


def test_mode_seeking_loss_rewards_different_subjects_for_different_latents():
    from augment3d.training.losses import mode_seeking_loss

    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 16, generator=g)
    same = torch.randn(2, 4, 8, 8, 8, generator=g).repeat(2, 1, 1, 1, 1)  # pairs (0, 2), (1, 3) identical
    apart = same.clone()
    apart[2:] += 0.5 * torch.randn(2, 4, 8, 8, 8, generator=g)
    assert mode_seeking_loss(same, z) > 100 * mode_seeking_loss(apart, z)
    assert float(mode_seeking_loss(same[:1], z[:1])) == 0.0  # no pair in a batch of one
    # its gradient moves the two subjects of a pair apart
    out = apart.clone().requires_grad_(True)
    mode_seeking_loss(out, z).backward()
    moved = (out - 0.1 * out.grad).detach()
    assert (moved[:2] - moved[2:]).abs().mean() > (apart[:2] - apart[2:]).abs().mean()
    # ... until they differ as much as the cap allows: past it, no pull
    out.grad = None
    mode_seeking_loss(out, z, cap=0.01).backward()
    assert float(out.grad.abs().max()) == 0.0


def test_real_pair_ratio_compares_subjects_of_one_condition():
    from augment3d.training.losses import real_pair_ratio

    subjects = torch.tensor([0.0, 0.0, 10.0, 11.0])[:, None].expand(4, 10)  # HIC 0 and 0, SSA 10 and 11
    conds = torch.from_numpy(ENC.encode([{"site": "HIC"}, {"site": "HIC"}, {"site": "SSA"}, {"site": "SSA"}]))
    ratio = real_pair_ratio(lambda i: subjects[i], conds, torch.Generator().manual_seed(0), pairs=200)
    # the SSA pair differs by 1, the HIC pair by 0, about half the pairs drawn are SSA; an HIC
    # subject against an SSA one (10 or more) never
    assert 0.3 < ratio * 2 / np.sqrt(np.pi) < 0.7
    one_each = conds[1:3]  # no condition with two subjects: any two are compared
    assert real_pair_ratio(lambda i: subjects[1:3][i], one_each, torch.Generator()) == pytest.approx(10 * np.sqrt(np.pi) / 2)
    assert real_pair_ratio(lambda i: subjects[i], conds[:1], torch.Generator()) == float("inf")


def test_mode_seeking_pairs_share_condition_and_noise():
    from augment3d.training.distributed import World
    from augment3d.training.trainer import _Loop

    loop = _Loop(tiny_data(8), MODEL, replace(TRAIN, batch=4, accumulate=2, mode_seeking=1.0), "cpu", World())
    mapped, synthesised = [], []
    mapping, from_w = loop.G.mapping.forward, loop.G.from_w
    loop.G.mapping.forward = lambda z, c: mapped.append((z.clone(), c.clone())) or mapping(z, c)
    loop.G.from_w = lambda w, noise: synthesised.append([n.clone() for n in noise]) or from_w(w, noise)
    metrics = loop.step(0)
    assert metrics["mode_seeking"] > 0
    assert len(mapped) == len(synthesised) == 4  # D phase, then G phase: two micro-batches of two each
    for (z, c), noise in zip(mapped[2:], synthesised[2:]):
        assert not torch.equal(z[0], z[1])  # a pair differs in z ...
        assert torch.equal(c[0], c[1]) and all(torch.equal(n[0], n[1]) for n in noise)  # ... only
    with pytest.raises(ValueError, match="mode_seeking is a loss weight"):
        replace(TRAIN, mode_seeking=-1.0)
    with pytest.raises(ValueError, match="mode_seeking needs pairs"):
        _Loop(tiny_data(), MODEL, replace(TRAIN, batch=2, accumulate=2, mode_seeking=1.0), "cpu", World())


def test_segmentation_loss_pulls_generated_labels_onto_what_the_segmenter_sees():
    from augment3d.models.segmenter import one_hot, segmentation_loss

    seen = torch.zeros(1, 4, 8, 8, 8)
    seen[:, 0] = 4.0
    seen[:, 0, 2:6, 2:6, 2:6], seen[:, 2, 2:6, 2:6, 2:6] = 0.0, 4.0  # the segmenter sees oedema in a cube
    logits = torch.randn(1, 4, 8, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=0.3)
    for _ in range(60):
        probs = logits.softmax(1)
        hard = one_hot(probs.argmax(1), 4)
        loss = segmentation_loss(seen, hard + probs - probs.detach())  # G's straight-through labels
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(logits.argmax(1), seen.argmax(1))
    agree = one_hot(seen.argmax(1), 4)
    assert segmentation_loss(seen, agree) < segmentation_loss(seen, torch.roll(agree, 3, 2))


def test_seg_consistency_segmenter_learns_the_real_labels_only():
    from augment3d.training.distributed import World
    from augment3d.training.trainer import _Loop

    data = tiny_data(8)
    data.labels = (data.images[:, 0] > 0.6).long() * 2  # a label the images show
    loop = _Loop(data, MODEL, replace(TRAIN, batch=4, seg_consistency=1.0, seg_warmup=1, seg_lr=1e-2), "cpu", World())
    seen = []
    forward = loop.S.forward
    loop.S.forward = lambda x: seen.append(x.detach().clone()) or forward(x)
    grads = []  # S's weights get a gradient once a step: from its loss on the reals, never from G's loss
    loop.S.head.weight.register_hook(lambda g: grads.append(1))
    log = [loop.step(step) for step in range(1, 41)]
    assert len(grads) == 40
    assert log[0]["seg_fake"] is None and log[1]["seg_fake"] > 0  # G's term waits for seg_warmup
    assert np.mean([m["seg_real"] for m in log[-5:]]) < 0.6 * log[0]["seg_real"]
    reals = {tuple(x.flatten()[:8].tolist()) for x in data.images}
    # step 1: the real batch (trains S); then per step the real batch and G's subjects (S judges them, frozen)
    assert len(seen) == 1 + 2 * 39
    assert all(tuple(x[0].flatten()[:8].tolist()) in reals for x in [seen[0], *seen[1::2]])
    assert not any(tuple(x[0].flatten()[:8].tolist()) in reals for x in seen[2::2])
    assert all(p.requires_grad for p in loop.S.parameters())
    with pytest.raises(ValueError, match="seg_consistency is a loss weight"):
        replace(TRAIN, seg_consistency=-1.0)


@pytest.mark.parametrize("pull", [1.0, 0.3, 0.0])
def test_seg_label_pull_zero_leaves_the_labels_to_d(monkeypatch, pull):
    """The term's gradient reaches G's images always, its labels only with ``seg_label_pull`` above 0."""
    from augment3d.training import trainer
    from augment3d.training.distributed import World

    loop = trainer._Loop(tiny_data(8), MODEL, replace(TRAIN, batch=4, seg_consistency=1.0, seg_warmup=0,
                                                      seg_label_pull=pull), "cpu", World())
    calls = []  # (image gets a gradient, labels get a gradient) for the term on G's subjects
    real_loss = trainer.segmentation_loss
    monkeypatch.setattr(trainer, "segmentation_loss",
                        lambda logits, onehot: calls.append((logits.requires_grad, onehot.requires_grad)) or real_loss(logits, onehot))
    loop.step(1)
    fake_calls = calls[1:]  # the first call is S's own loss on the real batch
    assert fake_calls and all(image for image, _ in fake_calls)
    assert all(labels is (pull > 0) for _, labels in fake_calls)
    with pytest.raises(ValueError, match="seg_label_pull must be in"):
        replace(TRAIN, seg_label_pull=1.5)


def test_tumour_pull_moves_the_whole_tumour_not_its_classes(monkeypatch):
    """``seg_pull_on = "tumour"``: the labels' gradient is the same for every tumour class at a
    voxel (it moves where the tumour is, not what it is made of); the class-wise loss only
    reaches the images."""
    from augment3d.models.segmenter import one_hot, tumour_dice_loss
    from augment3d.training import trainer
    from augment3d.training.distributed import World

    logits = torch.randn(2, 4, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = one_hot(torch.randint(0, 4, (2, 8, 8, 8), generator=torch.Generator().manual_seed(1)), 4).requires_grad_(True)
    tumour_dice_loss(logits, labels).backward()
    grad = labels.grad
    assert torch.equal(grad[:, 0], torch.zeros_like(grad[:, 0]))
    assert torch.equal(grad[:, 1], grad[:, 2]) and torch.equal(grad[:, 2], grad[:, 3]) and grad.abs().sum() > 0
    same = one_hot(logits.argmax(1), 4) * 1.0
    assert tumour_dice_loss(logits * 100, same) < 0.01  # the segmenter's own tumour: (almost) no pull

    loop = trainer._Loop(tiny_data(8), MODEL, replace(TRAIN, batch=4, seg_consistency=1.0, seg_warmup=0,
                                                      seg_pull_on="tumour"), "cpu", World())
    calls = []
    real_seg, real_tumour = trainer.segmentation_loss, trainer.tumour_dice_loss
    monkeypatch.setattr(trainer, "segmentation_loss",
                        lambda lg, oh: calls.append(("classes", lg.requires_grad, oh.requires_grad)) or real_seg(lg, oh))
    monkeypatch.setattr(trainer, "tumour_dice_loss",
                        lambda lg, oh: calls.append(("tumour", lg.requires_grad, oh.requires_grad)) or real_tumour(lg, oh))
    loop.step(1)
    assert sorted(calls[1:]) == [("classes", True, False), ("tumour", False, True)]  # after S's own loss on the reals
    with pytest.raises(ValueError, match="seg_pull_on must be one of"):
        replace(TRAIN, seg_pull_on="edges")


def test_scale_gradient_keeps_values_and_scales_the_gradient():
    from augment3d.training.losses import scale_gradient

    x = torch.tensor([0.0, 1.0, 0.5], requires_grad=True)
    for factor in (1.0, 0.3, 0.0):
        x.grad = None
        y = scale_gradient(x, factor)
        assert torch.equal(y, x)
        if factor:
            (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
            torch.testing.assert_close(x.grad, factor * torch.tensor([1.0, 2.0, 3.0]))
        else:
            assert not y.requires_grad


@pytest.mark.parametrize("seg_augment", [False, True])
def test_seg_augment_trains_the_segmenter_on_what_d_sees(seg_augment):
    from augment3d.training.distributed import World
    from augment3d.training.trainer import _Loop

    data = tiny_data(8)
    loop = _Loop(data, MODEL, replace(TRAIN, batch=4, seg_consistency=1.0, seg_augment=seg_augment), "cpu", World())
    loop.augment.p.fill_(1.0)  # every augmentation on: D's view of the reals differs from the data
    seen = {}  # the first input each network gets in the step: S's real batch, D's reals
    loop.S.register_forward_pre_hook(lambda m, args: None if "S" in seen else seen.update(S=args[0].clone()))
    loop.D.register_forward_pre_hook(lambda m, args: None if "D" in seen else seen.update(D=args[0].clone()))
    loop.step(1)
    as_loaded = any(torch.allclose(seen["S"][0], data.images[i]) for i in range(len(data.images)))
    assert as_loaded is not seg_augment
    assert torch.allclose(seen["S"], seen["D"]) is seg_augment


def test_style_mixing_in_training_mixes_two_latents_of_one_condition():
    from augment3d.training.distributed import World
    from augment3d.training.trainer import _Loop

    loop = _Loop(tiny_data(8), MODEL, replace(TRAIN, batch=4, style_mixing=1.0), "cpu", World())
    num_ws, given = loop.G.num_ws, []
    from_w = loop.G.from_w
    loop.G.from_w = lambda w, noise: given.append(w.detach().clone()) or from_w(w, noise)
    loop.step(1)
    assert len(given) == 2  # D's phase and G's phase both see mixed subjects
    for ws in given:
        assert ws.shape == (4, num_ws, MODEL.w_dim)
        for subject in ws:
            change = [i for i in range(1, num_ws) if not torch.equal(subject[i], subject[i - 1])]
            assert len(change) == 1  # one latent up to a cutoff in [1, num_ws), the other after it
    assert "z_mix" not in _Loop(tiny_data(8), MODEL, replace(TRAIN, batch=4), "cpu", World())._draw()
    with pytest.raises(ValueError, match="style_mixing is a probability"):
        replace(TRAIN, style_mixing=1.5)


def test_spectral_norm_estimate_moves_once_a_step_however_the_batch_is_split(monkeypatch):
    from augment3d.training import trainer
    from augment3d.training.distributed import World

    calls = []
    real = trainer.power_iteration
    monkeypatch.setattr(trainer, "power_iteration", lambda module: calls.append(module) or real(module))
    loop = trainer._Loop(tiny_data(8), replace(MODEL, d_spectral_norm=True), replace(TRAIN, batch=4, accumulate=2),
                         "cpu", World())
    before = loop.D.state_dict()["fc.spectral.u"].clone()
    loop.step(1)
    loop.step(2)  # with R1 (r1_interval 2): one more backward through D, no more iterations
    assert calls == [loop.D, loop.D]
    assert not torch.equal(before, loop.D.state_dict()["fc.spectral.u"])


def test_style_mixing_when_sampling(tmp_path):
    run = tmp_path / "run"
    train_gan(run, tiny_data(), MODEL, replace(TRAIN, steps=2, style_mixing=0.9), ENC, {})
    gen = load_generator(run)
    ssa = {"site": "SSA"}
    plain, _ = gen.generate(condition=ssa, seeds=[3, 4])
    unmixed, _ = gen.generate(condition=ssa, seeds=[3, 4], mix_seeds=[8, 9], mix_cutoff=gen.network.num_ws)
    np.testing.assert_array_equal(plain, unmixed)  # a cutoff past the last style input mixes nothing
    mixed, _ = gen.generate(condition=ssa, seeds=[3, 4], mix_seeds=[8, 9], mix_cutoff=2)
    again, _ = gen.generate(condition=ssa, seeds=[3, 4], mix_seeds=[8, 9], mix_cutoff=2)
    donor, _ = gen.generate(condition=ssa, seeds=[8, 9])
    np.testing.assert_array_equal(mixed, again)
    assert not np.allclose(mixed, plain, atol=1e-3) and not np.allclose(mixed, donor, atol=1e-3)
    with pytest.raises(ValueError, match="both mix_seeds and mix_cutoff"):
        gen.generate(condition=ssa, seeds=[3], mix_seeds=[8])
    with pytest.raises(ValueError, match="one per subject"):
        gen.generate(condition=ssa, seeds=[3, 4], mix_seeds=[8], mix_cutoff=2)
    with pytest.raises(ValueError, match="mix_cutoff must be between 0 and"):
        gen.generate(condition=ssa, seeds=[3], mix_seeds=[8], mix_cutoff=gen.network.num_ws + 1)
