import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Keep the prepared-case cache inside each test's temp folder."""
    monkeypatch.setenv("AUGMENT3D_CACHE", str(tmp_path / "cache"))
    yield


@pytest.fixture
def cohort(tmp_path):
    """Three valid BraTS-2023 cases with metadata."""
    from helpers import write_cohort

    return write_cohort(tmp_path / "cohort")


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory):
    """A small phantom cohort (6 mm voxels), built once per test session."""
    from augment3d.data.phantom import PhantomConfig, make_phantom_cohort

    out = tmp_path_factory.mktemp("phantom") / "cohort"
    return make_phantom_cohort(out, PhantomConfig(cases=6, seed=3, spacing=6.0, ssa_fraction=0.5))


os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def tiny():
    """The tiny GAN set-up (``tests/helpers.py``): ``encoder``, ``model``, ``train``, ``data(n)``."""
    from types import SimpleNamespace

    import helpers

    return SimpleNamespace(
        encoder=helpers.TINY_ENCODER, model=helpers.TINY_MODEL, train=helpers.TINY_TRAIN, data=helpers.tiny_data
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny trained generator (16^3, conditioned on site and grade), made once per test session."""
    from dataclasses import replace

    import torch
    from helpers import TINY_MODEL

    from augment3d.data import ConditionEncoder
    from augment3d.data.preprocess import PreprocessConfig
    from augment3d.training.trainer import TrainConfig, TrainingData, train_gan

    enc = ConditionEncoder({"site": ["HIC", "SSA"], "grade": ["HGG", "LGG"]})
    g = torch.Generator().manual_seed(0)
    data = TrainingData(
        torch.rand(4, 4, 16, 16, 16, generator=g) * 2 - 1,
        torch.randint(0, 4, (4, 16, 16, 16), generator=g),
        torch.from_numpy(enc.encode(enc.all_conditions())),
    )
    run = tmp_path_factory.mktemp("tiny") / "run"
    train_gan(
        run,
        data,
        replace(TINY_MODEL, cond_dim=enc.dim),
        TrainConfig(steps=2, batch=2, checkpoint_every=2),
        enc,
        PreprocessConfig(shape=16),
        generator_info={"voxel_mm": 2.0},
    )
    return run
