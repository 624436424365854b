"""The package's floor plan: stages as packages, imports that run one way, old import paths kept."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path):
    """(module imported from, names) of every ``from X import ...`` in a file, relative ones resolved."""
    package = path.relative_to(ROOT).with_suffix("").parts
    package = package if path.name == "__init__.py" else package[:-1]
    package = tuple(p for p in package if p != "__init__")
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def _modules(*packages: str):
    for package in packages:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_no_module_imports_a_private_name_from_another():
    """A name starting with ``_`` is its module's business: nobody in augment3d or segbench imports one."""
    bad = [
        f"{path.relative_to(ROOT)}: from {module} import {name}"
        for path in _modules("augment3d", "segbench")
        for module, names in _imports(path)
        if module.split(".")[0] in ("augment3d", "segbench")
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert bad == []


@pytest.mark.parametrize(
    "lower, upper",
    [
        ("augment3d/training", "augment3d.synthesis"),
        ("augment3d/training", "augment3d.transforms"),
        ("augment3d/io", "augment3d.synthesis"),
        ("augment3d/io", "augment3d.transforms"),
        ("augment3d/io", "augment3d.training"),
        ("augment3d/data", "augment3d.synthesis"),
        ("augment3d/data", "augment3d.transforms"),
        ("augment3d/models", "augment3d.synthesis"),
        ("augment3d/config", "augment3d.synthesis"),
        ("augment3d", "segbench"),
    ],
)
def test_imports_run_one_way(lower, upper):
    """Training, the file layer, data and models never import the user-facing synthesis API or the
    transforms built on it; in augment3d only the CLI's ``bench`` commands import the bench."""
    bad = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in _modules(lower)
        for module, _ in _imports(path)
        if (module == upper or module.startswith(upper + ".")) and "cli" not in path.relative_to(ROOT).parts
    ]
    assert bad == []


def test_the_top_level_holds_leaves_and_packages():
    """Beside its stage packages augment3d keeps only leaf modules (and the MONAI plug-in's one file)."""
    modules = sorted(p.stem for p in (ROOT / "augment3d").glob("*.py") if p.stem != "__init__")
    assert modules == ["brats", "errors", "memory", "monai", "precision", "viz"]
    for leaf in ("brats", "errors", "memory", "precision", "viz"):
        inside = [m for m, _ in _imports(ROOT / "augment3d" / f"{leaf}.py") if m.startswith("augment3d.")]
        assert all(m.split(".")[1] in ("errors", "brats", "io") for m in inside), (leaf, inside)


OLD_PATHS = {
    "augment3d.augmenter": ("augment3d.transforms.augmenter", "SyntheticAugmenter"),
    "augment3d.sampling": ("augment3d.synthesis.sampling", "load_generator"),
    "augment3d.tumour_paste": ("augment3d.transforms.tumour_paste", "TumourPaste"),
    "augment3d.checkpoint": ("augment3d.io.checkpoint", "load_bundle"),
    "augment3d.export": ("augment3d.synthesis.export", "export_synthetic"),
    "augment3d.synthetic_dataset": ("augment3d.transforms.synthetic_dataset", "SyntheticSubjectsDataset"),
}


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_old_import_paths_give_the_same_objects(old):
    """Code written against the flat layout keeps working: the old module path is the new module."""
    new, name = OLD_PATHS[old]
    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)
    assert importlib.import_module(old).__spec__.name == new  # one module, its own spec kept


def test_old_paths_work_in_a_fresh_process():
    code = (
        "import sys; from augment3d.config import load_recipe; from augment3d.tumour_paste import TumourPaste; "
        "import augment3d.augmenter as a; import augment3d; "
        "print(a.SyntheticAugmenter is augment3d.SyntheticAugmenter, load_recipe('ci').name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "ci"]
