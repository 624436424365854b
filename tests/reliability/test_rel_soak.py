"""Soak: the augmenter through SubjectsLoader(num_workers=2) for 500 subjects, without errors and
without memory growth beyond 10% after warm-up (slow: `make test-slow`)."""

import os

import numpy as np
import pytest
import torch


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))


def _tree_rss(pid: int) -> int:
    """RSS of a process and its children (the DataLoader workers), in KiB."""
    total = _rss_kib(pid)
    children = f"/proc/{pid}/task/{pid}/children"
    if os.path.exists(children):
        for child in open(children).read().split():
            try:
                total += _rss_kib(int(child))
            except (FileNotFoundError, StopIteration):
                pass
    return total


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_augmenter_soak_500_subjects(tiny_run):
    import torchio as tio

    from augment3d import SyntheticAugmenter

    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    subjects = []
    for i in range(20):
        images = {
            k: tio.ScalarImage(tensor=torch.from_numpy(rng.normal(size=(1, 24, 24, 24)).astype(np.float32)), affine=affine)
            for k in ("t1n", "t1c", "t2w", "t2f")
        }
        label = tio.LabelMap(tensor=torch.zeros(1, 24, 24, 24, dtype=torch.int64), affine=affine)
        subjects.append(tio.Subject(**images, seg=label, site="SSA" if i % 3 else "HIC", grade="HGG"))
    transform = SyntheticAugmenter(tiny_run, p=0.7, seed=0)
    dataset = tio.SubjectsDataset(subjects, transform=transform)
    loader = tio.SubjectsLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True)
    seen, samples = 0, []
    while seen < 500:
        for batch in loader:
            labels = batch["seg"][tio.DATA]
            assert set(torch.unique(labels).tolist()) <= {0, 1, 2, 3}
            seen += labels.shape[0]
            if seen >= 100:  # warm-up: generators loaded, caches filled
                samples.append(_tree_rss(os.getpid()))
            if seen >= 500:
                break
    growth = (max(samples[len(samples) // 2 :]) - samples[0]) / samples[0]
    print(
        f"soak: {seen} subjects, RSS (main + workers) after warm-up {samples[0] / 1024:.0f} MiB, "
        f"peak in the second half {max(samples[len(samples) // 2 :]) / 1024:.0f} MiB, growth {growth:+.1%}"
    )
    assert growth < 0.10, f"RSS grew {growth:.1%} after warm-up ({samples[0]} -> {max(samples)} KiB)"
