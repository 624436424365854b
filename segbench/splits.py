"""Subject-level splits, seeded and stratified by site and grade, saved as ``splits.json``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from augment3d.io.atomic import atomic_write_text

__all__ = ["make_splits", "save_splits", "load_splits"]


def make_splits(
    conditions: Mapping[str, Mapping[str, str]],
    seed: int = 0,
    val: float = 0.15,
    test: float = 0.3,
    strata: Sequence[str] = ("site", "grade"),
    test_per_site: int = 0,
    train_per_site: Mapping[str, int] | None = None,
) -> dict[str, list[str]]:
    """Split subject ids into train / val / test, per stratum (e.g. SSA-HGG), seeded.

    Every stratum with at least 3 subjects puts at least one in test, and with at least 4 one in
    val, so the scarce site is represented in every split when it can be. With ``test_per_site``
    each site puts that many in test instead (shared among its grades by their sizes), and
    ``train_per_site`` caps a site's training cases (``{"SSA": 6}`` keeps the scarce site scarce);
    the cases over the cap go to test, where they add power.
    """
    if test_per_site > 0:
        return _per_site(conditions, seed, val, test_per_site, dict(train_per_site or {}), strata)
    groups: dict[tuple, list[str]] = {}
    for sid in sorted(conditions):
        key = tuple(conditions[sid].get(s, "") for s in strata)
        groups.setdefault(key, []).append(sid)
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for key in sorted(groups):
        ids = list(groups[key])
        rng.shuffle(ids)
        n = len(ids)
        n_test = max(1 if n >= 3 else 0, int(round(n * test)))
        n_val = max(1 if n >= 4 else 0, int(round(n * val)))
        n_val = min(n_val, n - n_test - 1) if n - n_test > 1 else 0
        out["test"] += ids[:n_test]
        out["val"] += ids[n_test : n_test + n_val]
        out["train"] += ids[n_test + n_val :]
    return {k: sorted(v) for k, v in out.items()}


def _per_site(
    conditions, seed: int, val: float, test_per_site: int, train_cap: dict[str, int], strata: Sequence[str]
) -> dict[str, list[str]]:
    site_key = strata[0]
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    rng = np.random.default_rng(seed)
    for site in sorted({conditions[s].get(site_key, "") for s in conditions}):
        # a seeded shuffle within each grade, then the grades interleaved: every prefix is stratified
        groups: dict[tuple, list[str]] = {}
        for sid in sorted(s for s in conditions if conditions[s].get(site_key, "") == site):
            groups.setdefault(tuple(conditions[sid].get(k, "") for k in strata[1:]), []).append(sid)
        for ids in groups.values():
            rng.shuffle(ids)
        order = [sid for _, sid in sorted((i / len(ids), sid) for ids in groups.values() for i, sid in enumerate(ids))]
        n_test = min(test_per_site, len(order) - 1)
        rest = order[n_test:]
        n_val = min(max(1 if len(rest) >= 4 else 0, int(round(len(rest) * val))), max(0, len(rest) - 1))
        train = rest[n_val:]
        cap = train_cap.get(site)
        surplus = train[cap:] if cap is not None else []
        out["test"] += order[:n_test] + surplus
        out["val"] += rest[:n_val]
        out["train"] += train[: len(train) - len(surplus)]
    return {k: sorted(v) for k, v in out.items()}


def save_splits(path: str | os.PathLike, splits: dict[str, list[str]], seed: int) -> None:
    atomic_write_text(path, json.dumps({"seed": seed, **splits}, indent=1) + "\n")


def load_splits(path: str | os.PathLike) -> dict[str, list[str]]:
    data = json.loads(Path(path).read_text())
    return {k: list(data[k]) for k in ("train", "val", "test")}
