"""The BraTS conventions, in one place: modalities, label classes, scored regions, file naming.

Everything else in augment3d (reading, the phantom, the model's outputs, metrics, exports, the
augmenter, segbench) takes these names from here.

* Modalities, canonical keys: ``t1n`` (T1), ``t1c`` (T1Gd), ``t2w`` (T2), ``t2f`` (FLAIR); the
  label map's key is ``seg``.
* Labels, BraTS 2023 numbering: 0 background, 1 NETC (necrotic / non-enhancing core), 2 SNFH
  (surrounding FLAIR hyperintensity, oedema), 3 ET (enhancing tumour). BraTS 2021 labels
  enhancing tumour 4, read as 3.
* Regions scored: WT (whole tumour) = {1, 2, 3}, TC (tumour core) = {1, 3}, ET = {3}.
* File names: BraTS 2023+ ``<case>/<case>-t1n.nii.gz`` (BraTS-Africa uses it), BraTS 2021
  ``<case>/<case>_t1.nii.gz``, ``_t1ce``, ``_t2``, ``_flair``, ``_seg``.

Example:
    >>> from augment3d.brats import REGIONS, LABEL_NAMES
    >>> [LABEL_NAMES[v] for v in REGIONS["TC"]]
    ['NETC', 'ET']
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "MODALITIES",
    "MODALITY_TITLES",
    "MODALITY_ALIASES",
    "LABEL_KEY",
    "KEYS",
    "LABEL_NAMES",
    "CLASS_NAMES",
    "LABEL_CLASSES",
    "REGIONS",
    "NamingScheme",
    "BRATS2023",
    "BRATS2021",
    "SCHEMES",
]

MODALITIES: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f")
#: how people name the modalities in figures and nnU-Net's dataset.json
MODALITY_TITLES: dict[str, str] = {"t1n": "T1", "t1c": "T1Gd", "t2w": "T2", "t2f": "FLAIR"}
#: names a torchio subject may give each modality (BraTS 2023 and 2021 names, common aliases)
MODALITY_ALIASES: dict[str, tuple[str, ...]] = {
    "t1n": ("t1n", "t1", "T1"),
    "t1c": ("t1c", "t1ce", "t1gd", "T1Gd", "T1ce"),
    "t2w": ("t2w", "t2", "T2"),
    "t2f": ("t2f", "flair", "FLAIR"),
}
LABEL_KEY = "seg"
KEYS: tuple[str, ...] = (*MODALITIES, LABEL_KEY)

#: tumour classes by label value (BraTS 2023 numbering)
LABEL_NAMES: dict[int, str] = {1: "NETC", 2: "SNFH", 3: "ET"}
#: every class of a label map, background first: index = label value
CLASS_NAMES: tuple[str, ...] = ("background", *LABEL_NAMES.values())
LABEL_CLASSES = len(CLASS_NAMES)
#: the regions BraTS scores: whole tumour, tumour core, enhancing tumour
REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


@dataclass(frozen=True)
class NamingScheme:
    """How one BraTS release names its files and labels."""

    name: str
    separator: str
    suffixes: dict[str, str]
    label_values: frozenset[int]
    label_remap: dict[int, int] = field(default_factory=dict)

    def file_suffix(self, key: str) -> str:
        return f"{self.separator}{self.suffixes[key]}"


BRATS2023 = NamingScheme(
    name="BraTS-2023",
    separator="-",
    suffixes={key: key for key in KEYS},
    label_values=frozenset({0, 1, 2, 3}),
)
BRATS2021 = NamingScheme(
    name="BraTS-2021",
    separator="_",
    suffixes={"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair", "seg": "seg"},
    label_values=frozenset({0, 1, 2, 4}),
    label_remap={4: 3},
)
SCHEMES: tuple[NamingScheme, ...] = (BRATS2023, BRATS2021)
