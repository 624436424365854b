"""The extra terms of G's loss (mode seeking, label consistency, texture, contrast), style mixing
and spectral norm in the training step."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from augment3d.models.segmenter import one_hot
from augment3d.training import loop as loop_module
from augment3d.training.terms.contrast_match import ContrastMatch, class_contrasts
from augment3d.training.terms.label_consistency import LabelConsistency
from augment3d.training.loop import TrainingLoop
from augment3d.training.terms.base import Fakes
from augment3d.training.terms.mode_seeking import ModeSeeking, mode_seeking_loss, real_pair_ratio
from augment3d.training.terms.texture_match import TextureMatch, condition_rows, texture_statistic


def test_terms_are_built_from_the_config(tiny):
    plain = TrainingLoop(tiny.data(8), tiny.model, replace(tiny.train, batch=4), "cpu")
    assert plain.terms == []
    both = TrainingLoop(
        tiny.data(8),
        tiny.model,
        replace(tiny.train, batch=4, terms={"mode_seeking": {"weight": 0.2}, "label_consistency": {"weight": 1.0}}),
        "cpu",
    )
    assert [type(t) for t in both.terms] == [ModeSeeking, LabelConsistency]
    assert [t.weight for t in both.terms] == [0.2, 1.0]
    state = both.state()  # the segmenter and its optimiser are saved with the run
    assert "S" in state.modules and "S" in state.optimizers


def test_mode_seeking_loss_rewards_different_subjects_for_different_latents():
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


def test_real_pair_ratio_compares_subjects_of_one_condition(tiny):
    subjects = torch.tensor([0.0, 0.0, 10.0, 11.0])[:, None].expand(4, 10)  # HIC 0 and 0, SSA 10 and 11
    conds = torch.from_numpy(tiny.encoder.encode([{"site": "HIC"}, {"site": "HIC"}, {"site": "SSA"}, {"site": "SSA"}]))
    ratio = real_pair_ratio(lambda i: subjects[i], conds, torch.Generator().manual_seed(0), pairs=200)
    # the SSA pair differs by 1, the HIC pair by 0, about half the pairs drawn are SSA; an HIC
    # subject against an SSA one (10 or more) never
    assert 0.3 < ratio * 2 / np.sqrt(np.pi) < 0.7
    one_each = conds[1:3]  # no condition with two subjects: any two are compared
    assert real_pair_ratio(lambda i: subjects[1:3][i], one_each, torch.Generator()) == pytest.approx(10 * np.sqrt(np.pi) / 2)
    assert real_pair_ratio(lambda i: subjects[i], conds[:1], torch.Generator()) == float("inf")


def _watch_mapping(loop: TrainingLoop) -> list:
    calls = []
    loop.G.mapping.register_forward_pre_hook(lambda m, args: calls.append((args[0].clone(), args[1].clone())))
    return calls


def test_mode_seeking_pairs_share_condition_and_noise(tiny):
    loop = TrainingLoop(
        tiny.data(8), tiny.model, replace(tiny.train, batch=4, accumulate=2, terms={"mode_seeking": {"weight": 1.0}}), "cpu"
    )
    mapped, noises = _watch_mapping(loop), []
    loop.G.blocks[0].layer1.noise.register_forward_pre_hook(lambda m, args: noises.append(args[1].clone()))
    figures = loop.step(1)
    assert figures["mode_seeking"] > 0
    assert len(mapped) == len(noises) == 4  # D phase, then G phase: two micro-batches of two each
    for (z, c), noise in zip(mapped[2:], noises[2:]):
        assert not torch.equal(z[0], z[1])  # a pair differs in z ...
        assert torch.equal(c[0], c[1]) and torch.equal(noise[0], noise[1])  # ... only
    with pytest.raises(ValueError, match="mode_seeking needs pairs"):
        TrainingLoop(
            tiny.data(), tiny.model, replace(tiny.train, batch=2, accumulate=2, terms={"mode_seeking": {"weight": 1.0}}), "cpu"
        )


def test_label_consistency_segmenter_learns_from_reals_only(tiny):
    data = tiny.data(8)
    data.labels[:] = 0
    data.labels[:, 4:12, 4:12, 4:12] = 2  # a cube of oedema the segmenter can learn to find
    data.images[:, :, 4:12, 4:12, 4:12] = 0.9
    loop = TrainingLoop(
        data,
        tiny.model,
        replace(tiny.train, batch=4, terms={"label_consistency": {"weight": 1.0, "warmup": 1, "lr": 1e-2}}),
        "cpu",
    )
    (term,) = loop.terms
    seen = []  # every input S sees: the real batch (trains S), then G's subjects (S judges them, frozen)
    term.S.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    grads = []  # S's weights get a gradient once a step: from its loss on the reals, never from G's loss
    term.S.head.weight.register_hook(lambda g: grads.append(1))
    log = [loop.step(step) for step in range(1, 41)]
    assert len(grads) == 40
    assert "seg_fake" not in log[0] and log[1]["seg_fake"] > 0  # G's term waits for its warmup
    assert np.mean([m["seg_real"] for m in log[-5:]]) < 0.6 * log[0]["seg_real"]
    reals = {tuple(x.flatten()[:8].tolist()) for x in data.images}
    assert len(seen) == 1 + 2 * 39
    assert all(tuple(x[0].flatten()[:8].tolist()) in reals for x in [seen[0], *seen[1::2]])
    assert not any(tuple(x[0].flatten()[:8].tolist()) in reals for x in seen[2::2])
    assert all(p.requires_grad for p in term.S.parameters())  # unfrozen after G's phase
    with pytest.raises(ValueError, match=r"train.terms.label_consistency\] weight must be >= 0"):
        replace(tiny.train, terms={"label_consistency": {"weight": -1.0}})


@pytest.mark.parametrize("seg_autocast", [False, True])
def test_label_consistency_segmenter_runs_in_the_loop_s_precision_and_layout_on_request(tiny, seg_autocast):
    """autocast: S runs as G and D do (bf16 autocast, channels_last_3d; 1.4-2.6 s less of a
    64^3 step, docs/PERFORMANCE.md); off, as before (fp32 channels-first). Its loss stays fp32."""
    loop = TrainingLoop(
        tiny.data(4),
        tiny.model,
        replace(
            tiny.train,
            batch=4,
            amp="bf16",
            channels_last=True,
            terms={"label_consistency": {"weight": 1.0, "warmup": 0, "autocast": seg_autocast}},
        ),
        "cpu",
    )
    (term,) = loop.terms
    seen = []
    term.S.register_forward_hook(
        lambda m, args, out: seen.append((args[0].is_contiguous(memory_format=torch.channels_last_3d), out.dtype))
    )
    log = loop.step(1)
    expected = (True, torch.bfloat16) if seg_autocast else (False, torch.float32)
    assert seen == [expected] * 2  # the real batch, then G's subjects
    assert np.isfinite(log["seg_real"]) and np.isfinite(log["seg_fake"])


def test_label_consistency_pulls_the_labels_and_the_images(tiny):
    """The term's gradient reaches G's images (through S) and G's label logits (through the soft Dice)."""
    term = LabelConsistency(1.0, 4, 4, 4, 1e-3, 0, "cpu")
    images = torch.randn(2, 4, 8, 8, 8, requires_grad=True)
    logits = torch.randn(2, 4, 8, 8, 8, requires_grad=True)
    term.loss(Fakes(images, logits.softmax(1), torch.zeros(2, 4))).backward()
    assert images.grad.abs().sum() > 0 and logits.grad.abs().sum() > 0


def test_style_mixing_in_training_mixes_two_latents_of_one_condition(tiny):
    loop = TrainingLoop(tiny.data(8), tiny.model, replace(tiny.train, batch=4, style_mixing=1.0), "cpu")
    num_ws, given = loop.G.num_ws, []
    from_w = loop.G.from_w
    loop.G.from_w = lambda w, noise, maps=None: given.append(w.detach().clone()) or from_w(w, noise, maps)
    loop.step(1)
    assert len(given) == 2  # D's phase and G's phase both see mixed subjects
    for ws in given:
        assert ws.shape == (4, num_ws, tiny.model.w_dim)
        for subject in ws:
            change = [i for i in range(1, num_ws) if not torch.equal(subject[i], subject[i - 1])]
            assert len(change) == 1  # one latent up to a cutoff in [1, num_ws), the other after it
    plain = TrainingLoop(tiny.data(8), tiny.model, replace(tiny.train, batch=4), "cpu")
    unmixed, from_w_plain = [], plain.G.from_w
    plain.G.from_w = lambda w, noise, maps=None: unmixed.append(w.dim()) or from_w_plain(w, noise, maps)
    plain.step(1)
    assert unmixed == [2, 2]  # without mixing, one w per subject for every layer
    with pytest.raises(ValueError, match="style_mixing must be in"):
        replace(tiny.train, style_mixing=1.5)


def test_spectral_norm_estimate_moves_once_a_step_however_the_batch_is_split(tiny, monkeypatch):
    calls = []
    real = loop_module.power_iteration
    monkeypatch.setattr(loop_module, "power_iteration", lambda module: calls.append(module) or real(module))
    loop = TrainingLoop(
        tiny.data(8), replace(tiny.model, d_spectral_norm=True), replace(tiny.train, batch=4, accumulate=2), "cpu"
    )
    before = loop.D.state_dict()["fc.spectral.u"].clone()
    loop.step(1)
    loop.step(2)  # with R1 (r1_interval 2): one more backward through D, no more iterations
    assert calls == [loop.D, loop.D]
    assert not torch.equal(before, loop.D.state_dict()["fc.spectral.u"])


def _sharp_and_blurred(n: int = 2, side: int = 16):
    """``n`` noisy-textured heads and the same heads smoothed (an older scanner), with their masks."""
    g = torch.Generator().manual_seed(0)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, side)] * 3, indexing="ij"))
    mask = ((grid**2).sum(0) < 0.8).expand(n, side, side, side)
    sharp = torch.rand(n, 4, side, side, side, generator=g) * 0.8 - 0.4
    blurred = torch.nn.functional.avg_pool3d(sharp, 3, stride=1, padding=1, count_include_pad=False)
    inside = mask[:, None].expand_as(sharp)
    return sharp.where(inside, torch.tensor(-1.0)), blurred.where(inside, torch.tensor(-1.0)), mask


def test_texture_statistic_sees_blur_inside_the_brain_only():
    sharp, blurred, mask = _sharp_and_blurred()
    s, b = texture_statistic(sharp, mask), texture_statistic(blurred, mask)
    assert s.shape == (2, 4) and (b < s - 0.5).all()  # smoothing removes most high-frequency energy
    outside = sharp.clone()
    outside[:, :, :2] = 5.0  # a corner outside the brain
    assert torch.allclose(texture_statistic(outside, mask), s)


def test_texture_term_pulls_each_subject_towards_its_own_condition_s_real_texture(tiny):
    sharp, blurred, mask = _sharp_and_blurred()
    conditions = torch.from_numpy(tiny.encoder.encode([{"site": "HIC"}, {"site": "SSA"}]))
    term = TextureMatch(1.0, torch.cat([sharp[:1], blurred[1:]]), mask, conditions, "cpu")
    # a real subject under its own condition is at its reference; a sharp one under the blurry site is not
    at_home = term.loss(Fakes(torch.cat([sharp[:1], blurred[1:]]), None, None, conditions))
    assert at_home.item() == pytest.approx(0.0, abs=1e-8)
    restyled = sharp[1:].clone().requires_grad_(True)
    ssa = conditions[1:]
    before = term.loss(Fakes(restyled, None, None, ssa))
    assert before.item() > 0.25
    optimizer = torch.optim.Adam([restyled], lr=0.02)
    for _ in range(30):  # G's gradient through the term smooths the image
        optimizer.zero_grad()
        term.loss(Fakes(restyled, None, None, ssa)).backward()
        optimizer.step()
    assert term.loss(Fakes(restyled, None, None, ssa)).item() < 0.2 * before.item()
    with pytest.raises(ValueError, match="needs the conditions"):
        term.loss(Fakes(sharp, None, None))
    with pytest.raises(ValueError, match="none of the real training subjects has"):
        term.loss(Fakes(sharp[:1], None, None, torch.ones(1, conditions.shape[1])))


@pytest.mark.parametrize(
    "option, term, logged", [("texture_match", TextureMatch, "texture"), ("contrast_match", ContrastMatch, "contrast")]
)
def test_a_statistic_term_joins_g_s_loss_from_the_config(tiny, option, term, logged):
    loop = TrainingLoop(tiny.data(8), tiny.model, replace(tiny.train, batch=4, terms={option: {"weight": 2.0}}), "cpu")
    assert [(type(t), t.weight) for t in loop.terms] == [(term, 2.0)]
    figures = loop.step(1)
    assert np.isfinite(figures[logged]) and figures[logged] >= 0
    with pytest.raises(ValueError, match=rf"train.terms.{option}\] weight must be >= 0"):
        replace(tiny.train, terms={option: {"weight": -1.0}})


def test_an_unconditional_run_trains_with_the_swap_and_texture_terms_on(tiny):
    """No condition columns: one combination (the empty one), one texture reference."""
    data = tiny.data(4)
    data.conditions = torch.zeros(4, 0)
    train = replace(tiny.train, batch=2, condition_swap=0.5, terms={"texture_match": {"weight": 1.0}})
    loop = TrainingLoop(data, replace(tiny.model, cond_dim=0), train, "cpu")
    assert loop.combos.shape == (1, 0) and loop.terms[0].reference.shape == (1, 4)
    figures = loop.step(1)
    assert np.isfinite(figures["g_loss"]) and np.isfinite(figures["texture"])


def _heads_with_tumours(et_t1: list[float], side: int = 16, seed: int = 0):
    """Noisy heads (healthy brain about 0) with a tumour: SNFH around an ET core whose T1 lies
    ``et_t1[i]`` above the healthy brain in subject i; returns images, labels, masks."""
    n = len(et_t1)
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, side)] * 3, indexing="ij"))
    mask = ((grid**2).sum(0) < 0.8).expand(n, side, side, side)
    r2 = ((grid - 0.2) ** 2).sum(0)
    labels = torch.zeros(n, side, side, side, dtype=torch.long)
    labels[:, r2 < 0.2] = 2
    labels[:, r2 < 0.06] = 3
    labels[~mask] = 0
    images = 0.05 * torch.randn(n, 4, side, side, side, generator=g)
    for i, value in enumerate(et_t1):
        images[i, 0][labels[i] == 3] += value
        images[i, 1][labels[i] == 3] += 0.6  # enhancing on T1Gd in every subject
        images[i, 3][labels[i] == 2] += 0.7  # oedema bright on FLAIR
    images = images.where(mask[:, None].expand_as(images), torch.tensor(-1.0))
    return images, labels, mask


def test_class_contrasts_measure_each_tumour_class_against_the_healthy_brain():
    images, labels, mask = _heads_with_tumours([-0.2, 0.4])
    contrast, present = class_contrasts(images, one_hot(labels, 4), mask)
    assert contrast.shape == (2, 3, 4) and present[:, 1:].all() and not present[:, 0].any()  # no NETC voxels
    assert contrast[:, 2, 0].tolist() == pytest.approx([-0.2, 0.4], abs=0.02)  # ET on T1
    assert contrast[:, 2, 1].tolist() == pytest.approx([0.6, 0.6], abs=0.02)  # ET on T1Gd
    assert contrast[:, 1, 3].tolist() == pytest.approx([0.7, 0.7], abs=0.02)  # SNFH on FLAIR
    # the background outside the brain (-1) is not healthy brain
    assert float(contrast[:, 1, 0].abs().max()) < 0.02


def test_contrast_term_pulls_a_tumour_class_into_its_condition_s_real_range(tiny):
    # real HIC subjects' ET is about as bright as the brain on T1, SSA ones' 0.5 brighter
    images, labels, mask = _heads_with_tumours([0.0, 0.05, -0.05, 0.5, 0.55, 0.45])
    conditions = torch.from_numpy(tiny.encoder.encode([{"site": "HIC"}] * 3 + [{"site": "SSA"}] * 3))
    term = ContrastMatch(1.0, images, labels, mask, conditions, 4, "cpu", prior=0.0)
    rows = condition_rows(conditions[[0, 3]], term.combos, "contrast")
    assert term.reference[rows, 2, 0].tolist() == pytest.approx([0.0, 0.5], abs=0.02)  # ET on T1: HIC, SSA
    # a real subject is within its condition's spread; the same subject rendered as SSA is not
    hic = Fakes(images[:1], one_hot(labels[:1], 4), None, conditions[:1])
    assert term.loss(hic).item() == pytest.approx(0.0, abs=1e-6)
    restyled = images[:1].clone().requires_grad_(True)
    ssa = conditions[3:4]
    before = term.loss(Fakes(restyled, one_hot(labels[:1], 4), None, ssa))
    assert before.item() > 5
    optimizer = torch.optim.Adam([restyled], lr=0.01)
    for _ in range(60):  # G's gradient through the term brightens the ET on T1 and nothing else much
        optimizer.zero_grad()
        term.loss(Fakes(restyled, one_hot(labels[:1], 4), None, ssa)).backward()
        optimizer.step()
    after, _ = class_contrasts(restyled.detach(), one_hot(labels[:1], 4), mask[:1])
    assert term.loss(Fakes(restyled, one_hot(labels[:1], 4), None, ssa)).item() < 0.05 * before.item()
    assert float(after[0, 2, 0]) > 0.4
    with pytest.raises(ValueError, match="contrast term needs the conditions"):
        term.loss(Fakes(images, one_hot(labels, 4), None))
    with pytest.raises(ValueError, match="needs the label maps"):
        term.loss(Fakes(images, None, None, conditions))


def test_a_condition_with_few_real_subjects_borrows_the_pooled_contrast(tiny):
    images, labels, mask = _heads_with_tumours([0.0, 0.0, 0.0, 0.6])  # one SSA subject
    conditions = torch.from_numpy(tiny.encoder.encode([{"site": "HIC"}] * 3 + [{"site": "SSA"}]))
    own, shrunk = (ContrastMatch(1.0, images, labels, mask, conditions, 4, "cpu", prior=prior) for prior in (0.0, 2.0))
    ssa = condition_rows(conditions[3:], own.combos, "contrast")
    own, shrunk = own.reference[ssa, 2, 0], shrunk.reference[ssa, 2, 0]
    assert float(own) == pytest.approx(0.6, abs=0.02)
    assert float(shrunk) == pytest.approx((0.6 + 2 * 0.15) / 3, abs=0.02)  # pooled mean 0.15
