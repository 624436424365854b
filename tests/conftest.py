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
    from helpers import write_case, write_metadata

    root = tmp_path / "cohort"
    rows = []
    for i, (site, grade) in enumerate([("HIC", "HGG"), ("HIC", "LGG"), ("SSA", "HGG")]):
        sid = f"BraTS-TST-{i:05d}-000"
        write_case(root, sid, seed=i)
        rows.append({"subject_id": sid, "site": site, "grade": grade})
    write_metadata(root, rows)
    return root


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory):
    """A small phantom cohort (6 mm voxels), built once per test session."""
    from augment3d.data.phantom import PhantomConfig, make_phantom_cohort

    out = tmp_path_factory.mktemp("phantom") / "cohort"
    return make_phantom_cohort(out, PhantomConfig(cases=6, seed=3, spacing=6.0, ssa_fraction=0.5))


os.environ.setdefault("MPLBACKEND", "Agg")
