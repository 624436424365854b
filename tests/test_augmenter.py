"""SyntheticAugmenter and SyntheticSubjectsDataset inside real torchio pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio
from helpers import AFFINE, SHAPE, write_case

from augment3d import SyntheticAugmenter, SyntheticReplacement, SyntheticSubjectsDataset
from augment3d.data import BRATS2021
from augment3d.errors import DataError

KEYS = ("t1n", "t1c", "t2w", "t2f", "seg")


def make_subject(root, sid="BraTS-TST-00000-000", site="SSA", grade="HGG", seed=0):
    folder = write_case(root, sid, seed=seed)
    images = {k: tio.ScalarImage(folder / f"{sid}-{k}.nii.gz") for k in KEYS[:4]}
    return tio.Subject(**images, seg=tio.LabelMap(folder / f"{sid}-seg.nii.gz"), site=site, grade=grade, subject_id=sid)


def tensors(subject):
    return {k: subject[k].data.clone() for k in subject.get_images_names()}


def test_p0_never_and_p1_always(tiny_run, tmp_path):
    subject = make_subject(tmp_path)
    before = tensors(subject)
    never = SyntheticAugmenter(tiny_run, p=0.0)
    for _ in range(5):
        out = never(subject)
        assert all(torch.equal(out[k].data, before[k]) for k in before)
    always = SyntheticAugmenter(tiny_run, p=1.0, seed=0)
    for _ in range(3):
        out = always(subject)
        assert all(not torch.equal(out[k].data, before[k]) for k in KEYS[:4])
        assert set(out["seg"].data.unique().tolist()) <= {0, 1, 2, 3}
        for k in KEYS:  # shapes, affines and keys preserved
            assert out[k].spatial_shape == SHAPE
            np.testing.assert_allclose(out[k].affine, AFFINE)
        assert set(out.get_images_names()) == set(KEYS)
        assert out["site"] == "SSA"
    assert all(torch.equal(subject[k].data, before[k]) for k in before)  # the input is not modified


def test_history_replays_to_identical_tensors(tiny_run, tmp_path):
    subject = make_subject(tmp_path)
    transform = tio.Compose([tio.RandomFlip(axes=(0,)), SyntheticAugmenter(tiny_run, p=1.0, psi=0.8)])
    out = transform(subject)
    names = [t.name for t in out.get_applied_transforms()]
    assert "SyntheticReplacement" in names
    replayed = out.get_composed_history()(subject)
    for k in KEYS:
        assert torch.equal(out[k].data, replayed[k].data), k


def test_same_seed_same_output(tiny_run, tmp_path):
    subject = make_subject(tmp_path)
    a = SyntheticAugmenter(tiny_run, p=1.0, seed=7)(subject)
    b = SyntheticAugmenter(tiny_run, p=1.0, seed=7)(subject)
    c = SyntheticAugmenter(tiny_run, p=1.0, seed=8)(subject)
    assert all(torch.equal(a[k].data, b[k].data) for k in KEYS)
    assert not torch.equal(a["t1n"].data, c["t1n"].data)


def test_loading_the_generator_leaves_the_pipeline_s_random_stream_alone(tiny_run, tmp_path):
    """A seeded augmenter draws the same for the transforms after it (here torch's global stream, as
    torchio's own random transforms use) whether its generator is loaded now or already cached."""
    import augment3d.synthesis.generator_cache as generator_cache

    subject = make_subject(tmp_path)
    draws = []
    for cached in (False, True):
        if not cached:
            generator_cache._GENERATORS.clear()
            generator_cache._BATCHES.clear()
        torch.manual_seed(0)
        SyntheticAugmenter(tiny_run, p=1.0, seed=3)(subject)
        draws.append(torch.rand(8))
    assert torch.equal(draws[0], draws[1])


def test_a_generator_too_large_for_the_cpu_warns_where_it_is_loaded(tiny_run, tmp_path, monkeypatch):
    """A user whose 128^3 generator would render in CPU DataLoader workers (tens of seconds a subject)
    is told so, with the way out; the small generators every CPU recipe trains say nothing."""
    import warnings

    import augment3d.synthesis.generator_cache as generator_cache
    from augment3d import SlowGenerationWarning

    subject = make_subject(tmp_path)
    generator_cache._GENERATORS.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowGenerationWarning)
        SyntheticAugmenter(tiny_run, p=1.0, seed=0)(subject)
    generator_cache._GENERATORS.clear()
    monkeypatch.setattr(generator_cache, "SLOW_GFLOP", 0.01)  # the tiny generator does more than 0.01 GFLOP
    with pytest.warns(
        SlowGenerationWarning, match=r"GFLOP a subject \(16x16x16 grid\) and renders on the CPU.*device='cuda'"
    ) as caught:
        out = SyntheticAugmenter(tiny_run, p=1.0, seed=0)(subject)
    assert str(tiny_run) in str(caught[0].message)
    assert set(out.get_images_names()) == set(KEYS)  # a warning, not a refusal
    generator_cache._GENERATORS.clear()


def test_render_flops_counts_what_a_forward_pass_does():
    """The meta-device count behind the warning equals the count of a real forward pass, per subject."""
    from torch.utils.flop_counter import FlopCounterMode

    from augment3d.models import Generator3D, ModelConfig
    from augment3d.models.generator import render_flops
    from augment3d.models.spatial_conditioning import label_maps

    for mode in ("labels", "joint"):
        config = ModelConfig(shape=16, cond_dim=4, channel_max=16, z_dim=32, w_dim=32, mode=mode)
        net = Generator3D(config).eval().requires_grad_(False)  # torch's counter hooks want no grads
        labels = torch.randint(0, 4, (2, 16, 16, 16))
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():  # batch 2: F.conv3d, which torch's counter sees
            net(torch.randn(2, 32), torch.eye(4)[:2], maps=label_maps(labels, labels >= 0) if mode == "labels" else None)
        assert render_flops(config) == counter.get_total_flops() // 2 > 0, mode


def test_the_warning_threshold_parts_the_cpu_recipes_from_the_gpu_recipe():
    """The recipes that train on a CPU render below the warning's threshold, so their users are
    never warned; the GPU recipe's 128^3 generator renders above it, so its users are."""
    from augment3d.transforms.augmenter import SLOW_GFLOP
    from augment3d.config.recipe import load_recipe
    from augment3d.data import ConditionEncoder
    from augment3d.models.generator import render_flops

    gflop = {}
    for name in ("ci", "quick", "phantom", "brats_africa_128"):
        recipe = load_recipe(name)
        gflop[name] = render_flops(recipe.model_config(ConditionEncoder(recipe.data.categories).dim)) / 1e9
    assert max(gflop["ci"], gflop["quick"], gflop["phantom"]) < SLOW_GFLOP < gflop["brats_africa_128"], gflop


def test_condition_comes_from_the_subject_or_is_fixed(tiny_run, tmp_path):
    subject = make_subject(tmp_path, site="SSA", grade="LGG")
    out = SyntheticAugmenter(tiny_run, p=1.0, seed=1)(subject)
    (replacement,) = [t for t in out.get_applied_transforms() if isinstance(t, SyntheticReplacement)]
    assert replacement.condition == {"site": "SSA", "grade": "LGG"}
    fixed = SyntheticAugmenter(tiny_run, p=1.0, seed=1, condition={"site": "HIC", "grade": "HGG"})(subject)
    (replacement,) = [t for t in fixed.get_applied_transforms() if isinstance(t, SyntheticReplacement)]
    assert replacement.condition == {"site": "HIC", "grade": "HGG"}
    with pytest.raises(DataError, match="unknown site 'EUR' \\(known: HIC, SSA\\)"):
        SyntheticAugmenter(tiny_run, p=1.0)(make_subject(tmp_path / "b", site="EUR"))
    bare = make_subject(tmp_path / "c")
    del bare["grade"]
    with pytest.raises(DataError, match="no 'grade' attribute"):
        SyntheticAugmenter(tiny_run, p=1.0)(bare)


def test_exclude_keeps_the_label(tiny_run, tmp_path):
    subject = make_subject(tmp_path)
    out = SyntheticAugmenter(tiny_run, p=1.0, seed=2, exclude=["seg"])(subject)
    assert torch.equal(out["seg"].data, subject["seg"].data)
    assert not torch.equal(out["t1n"].data, subject["t1n"].data)


def test_brats2021_names_and_labels(tiny_run, tmp_path):
    sid = "BraTS2021_00000"
    folder = write_case(tmp_path, sid, scheme=BRATS2021)
    names = {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair"}
    subject = tio.Subject(
        **{n: tio.ScalarImage(folder / f"{sid}_{n}.nii.gz") for n in names},
        seg=tio.LabelMap(folder / f"{sid}_seg.nii.gz"),
        site="HIC",
        grade="HGG",
    )
    out = SyntheticAugmenter(tiny_run, p=1.0, seed=3, batch_size=1)(subject)
    assert not torch.equal(out["flair"].data, subject["flair"].data)
    assert 3 not in out["seg"].data.unique().tolist()
    assert set(out["seg"].data.unique().tolist()) <= {0, 1, 2, 4}


def test_subjects_loader_workers_and_queue(tiny_run, tmp_path):
    subjects = [make_subject(tmp_path / str(i), sid=f"BraTS-TST-{i:05d}-000", seed=i) for i in range(4)]
    same = [make_subject(tmp_path / "same")] * 4
    transform = tio.Compose([tio.RescaleIntensity((0, 1)), SyntheticAugmenter(tiny_run, p=1.0, seed=11)])
    loader = tio.SubjectsLoader(tio.SubjectsDataset(same, transform=transform), batch_size=1, num_workers=2)
    outputs = [batch["t1n"][tio.DATA] for batch in loader]
    assert len(outputs) == 4
    # items 0 and 1 go to different workers: different synthetic subjects for the same input
    assert not torch.equal(outputs[0], outputs[1])
    queue = tio.Queue(
        tio.SubjectsDataset(subjects, transform=transform),
        max_length=8,
        samples_per_volume=2,
        sampler=tio.UniformSampler((8, 8, 8)),
        num_workers=2,
    )
    patches = list(tio.SubjectsLoader(queue, batch_size=4, num_workers=0))
    assert sum(p["t1n"][tio.DATA].shape[0] for p in patches) == 8
    assert all(p["seg"][tio.DATA].shape[1:] == (1, 8, 8, 8) for p in patches)


def test_synthetic_subjects_dataset(tiny_run, tmp_path):
    data = SyntheticSubjectsDataset(tiny_run, n=5, condition={"site": "SSA", "grade": "HGG"}, seed=100, batch_size=2)
    assert len(data) == 5
    first = data[3]
    assert first["subject_id"] == "synthetic-103" and first["site"] == "SSA"
    assert first["t1n"].spatial_shape == (16, 16, 16)
    again = SyntheticSubjectsDataset(tiny_run, n=5, condition={"site": "SSA", "grade": "HGG"}, seed=100, batch_size=2)[3]
    assert torch.equal(first["t2f"].data, again["t2f"].data)
    cycling = SyntheticSubjectsDataset(tiny_run, n=4, seed=0)
    assert [(s["site"], s["grade"]) for s in cycling] == [("HIC", "HGG"), ("HIC", "LGG"), ("SSA", "HGG"), ("SSA", "LGG")]
    assert [s["seed"] for s in cycling] == [0, 1, 2, 3]
    real = tio.SubjectsDataset([make_subject(tmp_path)], transform=tio.Resize((16, 16, 16)))
    mixed = torch.utils.data.ConcatDataset([real, data])
    batch = next(iter(tio.SubjectsLoader(mixed, batch_size=6)))
    assert batch["t1n"][tio.DATA].shape == (6, 1, 16, 16, 16)


def test_synthetic_subjects_carry_the_attributes_asked_for_so_they_batch_with_real_ones(tiny_run, tmp_path):
    """torchio collates the keys of a batch's first subject: a synthetic subject first, with a
    ``seed`` the real ones lack, raised KeyError('seed') (segbench's cohort arm did)."""
    real = make_subject(tmp_path)
    real["subject_id"], real["site"], real["grade"] = "r0", "HIC", "LGG"
    data = SyntheticSubjectsDataset(
        tiny_run, n=2, condition={"site": "SSA", "grade": "HGG"}, seed=7, attributes=("subject_id", "site", "grade")
    )
    assert "seed" not in data[0] and data[0]["subject_id"] == "synthetic-7" and data[0]["site"] == "SSA"
    mixed = torch.utils.data.ConcatDataset([data, tio.SubjectsDataset([real], transform=tio.Resize((16, 16, 16)))])
    batch = next(iter(tio.SubjectsLoader(mixed, batch_size=3)))
    assert batch["subject_id"] == ["synthetic-7", "synthetic-8", "r0"]
    with pytest.raises(ValueError, match=r"attributes \['age'\] are none of subject_id, seed or the run's condition"):
        SyntheticSubjectsDataset(tiny_run, n=1, attributes=("subject_id", "age"))[0]
    with pytest.raises(ValueError, match="attributes must be a list of names"):
        SyntheticSubjectsDataset(tiny_run, n=1, attributes="subject_id")


def test_grid_to_subject_space_inverts_preprocessing(tmp_path):
    """The augmenter's placement: a prepared case mapped back lands on the subject's own anatomy."""
    from augment3d.synthesis.resampling import resample
    from augment3d.data import PreprocessConfig, discover_cases, preprocess_case, read_case
    from augment3d.data.preprocess import cube_box, to_canonical

    write_case(tmp_path, "BraTS-TST-00000-000")
    (case,) = discover_cases(tmp_path)
    loaded = read_case(case)
    config = PreprocessConfig(shape=16)
    prepared = preprocess_case(loaded, config)
    # the augmenter recomputes the grid from the subject alone
    mask = np.any([v != v.min() for v in loaded.images.values()], axis=0)
    box = cube_box(*to_canonical(mask, loaded.affine), config)
    np.testing.assert_allclose(box.grid_affine, prepared.affine, atol=1e-6)
    label = resample(prepared.label[None].astype(np.float32), prepared.affine, loaded.affine, SHAPE, "nearest")[0]
    tumour, truth = label > 0, loaded.label > 0
    dice = 2 * (tumour & truth).sum() / (tumour.sum() + truth.sum())
    assert dice > 0.8
    image = resample(prepared.images[:1] + 1, prepared.affine, loaded.affine, SHAPE, "bilinear")[0] - 1
    assert np.corrcoef(image[mask], loaded.images["t1n"][mask])[0, 1] > 0.8


def test_bf16_precision_is_recorded_and_replays(tiny_run, tmp_path):
    subject = make_subject(tmp_path)
    out = SyntheticAugmenter(tiny_run, p=1.0, seed=4, precision="bf16")(subject)
    (replacement,) = [t for t in out.get_applied_transforms() if isinstance(t, SyntheticReplacement)]
    assert replacement.precision == "bf16"
    replayed = out.get_composed_history()(subject)
    assert all(torch.equal(out[k].data, replayed[k].data) for k in KEYS)
    fp32 = SyntheticAugmenter(tiny_run, p=1.0, seed=4, precision="fp32")(subject)
    assert not torch.equal(fp32["t1n"].data, out["t1n"].data)  # precision is part of the subject's name
    with pytest.raises(ValueError, match="precision must be one of"):
        SyntheticAugmenter(tiny_run, precision="half")


@pytest.mark.parametrize("has_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_follows_the_cpu_and_replays_what_it_chose(tiny_run, tmp_path, monkeypatch, has_bf16, expected):
    from augment3d import precision

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: has_bf16)
    subject = make_subject(tmp_path)
    out = SyntheticAugmenter(tiny_run, p=1.0, seed=4)(subject)  # precision="auto", the default
    (replacement,) = [t for t in out.get_applied_transforms() if isinstance(t, SyntheticReplacement)]
    assert replacement.precision == expected
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: not has_bf16)  # replayed on another machine
    replayed = out.get_composed_history()(subject)
    assert all(torch.equal(out[k].data, replayed[k].data) for k in KEYS)
    explicit = SyntheticAugmenter(tiny_run, p=1.0, seed=4, precision=expected)(subject)
    assert all(torch.equal(out[k].data, explicit[k].data) for k in KEYS)


def test_restyling_keeps_the_label_map_bit_identical_and_replays(tiny_run, tmp_path):
    """A labels-to-images run restyles: new images for the subject's own label map (after the
    spatial transforms before it), in the subject's space; the label map comes out untouched."""
    subject = make_subject(tmp_path)
    transform = tio.Compose(
        [tio.RandomAffine(degrees=10, p=1.0), SyntheticAugmenter(tiny_run, p=1.0, condition={"site": "SSA"}, seed=3)]
    )
    out = transform(subject)
    affined = tio.Compose(out.get_composed_history().transforms[:1])(subject)  # as the augmenter got it
    assert torch.equal(out["seg"].data, affined["seg"].data)
    assert all(not torch.equal(out[k].data, affined[k].data) for k in KEYS[:4])
    replayed = out.get_composed_history()(subject)
    for k in KEYS:
        assert torch.equal(out[k].data, replayed[k].data), k
    # the brain's outside keeps each image's own background value
    background = affined["t1n"].data == affined["t1n"].data.min()
    assert torch.all(out["t1n"].data[background] == affined["t1n"].data.min())


def test_restyling_renders_the_subject_s_tumour(tiny_run, tmp_path):
    """The generator is given the subject's labels: two subjects whose maps differ get different
    images for the same seed and condition."""
    from augment3d import load_generator

    gen = load_generator(tiny_run)
    assert gen.takes_labels
    a, b = make_subject(tmp_path / "a"), make_subject(tmp_path / "b")
    b["seg"].set_data(torch.zeros_like(b["seg"].data))  # the same images, no tumour in the map
    from augment3d.transforms.augmenter import checkpoint_hash

    augment = SyntheticReplacement(tiny_run, checkpoint_hash(tiny_run), [5], 0, {"site": "SSA", "grade": "HGG"})
    out_a, out_b = augment(a), augment(b)
    assert not torch.equal(out_a["t2f"].data, out_b["t2f"].data)
    assert torch.equal(out_b["seg"].data, b["seg"].data)


@pytest.mark.parametrize(
    "value, dtype, shown",
    [(7, torch.int64, "7"), (-1, torch.int64, "-1"), (300, torch.int16, "300"), (2.5, torch.float32, "2.5")],
)
def test_restyling_refuses_label_values_outside_brats(tiny_run, tmp_path, value, dtype, shown):
    subject = make_subject(tmp_path)
    seg = subject["seg"].data.clone().to(dtype)
    seg[0, 0, 0, 0] = value  # one stray voxel among valid classes
    subject["seg"].set_data(seg)
    with pytest.raises(DataError, match=rf"label values \[{shown}\] are not BraTS classes"):
        SyntheticAugmenter(tiny_run, p=1.0, seed=0)(subject)


def test_a_subject_augmented_in_a_worker_replays_identically_in_the_main_process(tiny_run, tmp_path):
    """Workers run one thread, the main process several; generation runs at one thread in both,
    so the history replays to the same tensors wherever it was made."""
    subject = make_subject(tmp_path)
    transform = tio.Compose([tio.RandomFlip(axes=(0,)), SyntheticAugmenter(tiny_run, p=1.0, seed=5)])
    loader = torch.utils.data.DataLoader(
        tio.SubjectsDataset([subject], transform=transform), batch_size=None, num_workers=1, collate_fn=lambda s: s
    )
    out = next(iter(loader))
    replayed = out.get_composed_history()(subject)
    for k in KEYS:
        assert torch.equal(out[k].data, replayed[k].data), (k, float((out[k].data - replayed[k].data).abs().max()))


def test_synthetic_subjects_on_a_real_subject_s_grid_batch_with_real_subjects(tiny_run, tmp_path):
    real_subject = make_subject(tmp_path)
    data = SyntheticSubjectsDataset(tiny_run, n=3, seed=0, reference=real_subject, conditions_from="cohort")
    first = data[0]
    assert first["t1n"].spatial_shape == SHAPE and np.allclose(first["t1n"].affine, AFFINE)
    assert set(first["seg"].data.unique().tolist()) <= {0, 1, 2, 3}
    assert first["site"] in ("HIC", "SSA") and first["grade"] in ("HGG", "LGG")
    mixed = torch.utils.data.ConcatDataset([tio.SubjectsDataset([real_subject]), data])
    batch = next(iter(tio.SubjectsLoader(mixed, batch_size=4)))
    assert batch["t1n"][tio.DATA].shape == (4, 1, *SHAPE)


def test_keep_matching_leaves_the_scarce_site_s_real_subjects_and_restyles_the_others(tiny_run, tmp_path):
    ssa, hic = make_subject(tmp_path / "a", site="SSA"), make_subject(tmp_path / "b", site="HIC")
    keep = SyntheticAugmenter(tiny_run, p=1.0, seed=0, condition={"site": "SSA"}, keep_matching=True)
    kept = keep(ssa)
    assert all(torch.equal(kept[k].data, ssa[k].data) for k in KEYS)
    assert not any(isinstance(t, SyntheticReplacement) for t in kept.get_applied_transforms())
    restyled = keep(hic)
    (replacement,) = [t for t in restyled.get_applied_transforms() if isinstance(t, SyntheticReplacement)]
    assert replacement.condition["site"] == "SSA" and not torch.equal(restyled["t1n"].data, hic["t1n"].data)
    assert torch.equal(restyled.get_composed_history()(hic)["t1n"].data, restyled["t1n"].data)
    # off by default, and never with condition="subject" (which every subject matches)
    assert not torch.equal(
        SyntheticAugmenter(tiny_run, p=1.0, seed=0, condition={"site": "SSA"})(ssa)["t1n"].data, ssa["t1n"].data
    )
    assert not torch.equal(SyntheticAugmenter(tiny_run, p=1.0, seed=0, keep_matching=True)(ssa)["t1n"].data, ssa["t1n"].data)


def test_a_subject_s_condition_comes_from_the_given_part_and_its_attributes():
    """The augmenter and the inpainter render each subject under the condition given, the columns it
    leaves out read from the subject; a missing attribute or an unknown value is one clear error."""
    from augment3d.data import ConditionEncoder

    encoder = ConditionEncoder({"site": ["HIC", "SSA"], "grade": ["HGG", "LGG"]})
    subject = dict(site="HIC", grade="LGG", subject_id="s1")  # a tio.Subject is a dict
    assert encoder.for_subject(subject, {"site": "SSA"}) == {"site": "SSA", "grade": "LGG"}
    assert encoder.for_subject(subject) == {"site": "HIC", "grade": "LGG"}
    with pytest.raises(DataError, match="subject has no 'grade' attribute"):
        encoder.for_subject(dict(site="HIC", subject_id="s2"), {"site": "SSA"})
    with pytest.raises(DataError, match="s3"):
        encoder.for_subject(dict(site="XYZ", grade="HGG", subject_id="s3"))
