"""A dataset's own label numbers (its nnU-Net ``dataset.json``) read as BraTS classes.

nnU-Net datasets number the tumour classes their own way: augment3d's export writes NETC 1,
SNFH 2, ET 3; nnU-Net's BraTS 2021 conversion writes edema 1, non-enhancing 2, enhancing 3 and
declares regions (whole tumour, tumour core, enhancing tumour) instead of classes. This module
needs neither nnU-Net nor torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..brats import LABEL_NAMES

__all__ = ["brats_classes", "CLASS_ALIASES"]

#: label names (lower case, letters only) that mean each BraTS class
CLASS_ALIASES: dict[str, tuple[str, ...]] = {
    "NETC": (
        "netc",
        "ncr",
        "ncrnet",
        "necrosis",
        "necrotic",
        "necroticcore",
        "nonenhancing",
        "nonenhancingtumor",
        "nonenhancingtumour",
        "nonenhancingtumorcore",
        "nonenhancingtumourcore",
        "necroticnonenhancingtumorcore",
    ),
    "SNFH": (
        "snfh",
        "ed",
        "edema",
        "oedema",
        "peritumoraledema",
        "peritumouraloedema",
        "peritumoraledemaed",
        "surroundingnonenhancingflairhyperintensity",
    ),
    "ET": ("et", "enhancing", "enhancingtumor", "enhancingtumour"),
}
_CLASS_VALUE = {name: value for value, name in LABEL_NAMES.items()}


def _plain(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def brats_classes(
    labels: Mapping[str, int | list[int]], override: Mapping[str, int] | None = None, source: str = "dataset.json"
) -> dict[int, int]:
    """{dataset label value: BraTS class (1 NETC, 2 SNFH, 3 ET)} for a ``dataset.json`` ``labels``.

    Classes are read from the label names (NETC / necrosis / non-enhancing, SNFH / edema, ET /
    enhancing); region-based datasets (``"whole tumor": [1, 2, 3], "tumor core": [2, 3],
    "enhancing tumor": [3]``) from the nesting of the regions. ``override`` (``{"NETC": 2, "SNFH":
    1, "ET": 3}``) names the values directly. Values it cannot place raise a ValueError that says
    how to name them.
    """
    if override:
        unknown = set(override) - set(_CLASS_VALUE)
        if unknown:
            raise ValueError(f"labels= names {sorted(unknown)}; the BraTS classes are NETC, SNFH and ET")
        return {int(v): _CLASS_VALUE[k] for k, v in override.items()}
    regions = {k: v for k, v in labels.items() if isinstance(v, (list, tuple))}
    if regions:
        return _from_regions(regions, source)
    out: dict[int, int] = {}
    for name, value in labels.items():
        assert not isinstance(value, (list, tuple))  # regions were handled above
        if int(value) == 0 or _plain(name) in ("background", "ignore"):
            continue
        cls = next((c for c, aliases in CLASS_ALIASES.items() if _plain(name) in aliases), None)
        if cls is not None:
            out[int(value)] = _CLASS_VALUE[cls]
    if sorted(set(out.values())) != [1, 2, 3]:
        raise ValueError(
            f"{source}: cannot tell the BraTS classes (NETC, SNFH, ET) from the labels {dict(labels)}; "
            "name their values, e.g. labels={'NETC': 2, 'SNFH': 1, 'ET': 3}"
        )
    return out


def _from_regions(regions: Mapping[str, list[int] | tuple[int, ...]], source: str) -> dict[int, int]:
    """WT contains TC contains ET: ET is the innermost region, NETC what TC adds to it, SNFH what
    WT adds to TC."""
    sets = sorted((frozenset(int(v) for v in r) for r in regions.values()), key=len)
    nested = len(sets) == 3 and sets[0] < sets[1] < sets[2]
    if not nested:
        raise ValueError(
            f"{source}: the regions {dict(regions)} are not three nested BraTS regions (WT > TC > ET); "
            "name the class values, e.g. labels={'NETC': 2, 'SNFH': 1, 'ET': 3}"
        )
    et, tc, wt = sets
    return {**{v: 2 for v in wt - tc}, **{v: 1 for v in tc - et}, **{v: 3 for v in et}}
