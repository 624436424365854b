"""Packaging promises: a light ``import augment3d``, recipes readable without torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_import_is_light():
    code = (
        "import sys, augment3d; "
        "heavy = [m for m in ('torch', 'matplotlib', 'segbench', 'segmentation_models_pytorch_3d', 'sklearn', 'nibabel', 'monai') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_reading_a_recipe_needs_no_torch_and_no_segbench():
    """``augment3d.config`` loads every bundled recipe with torch made unimportable."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'segbench'):\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import augment3d.config\n"
        "for name in ('ci', 'quick', 'phantom', 'brats_africa_128'):\n"
        "    recipe = augment3d.config.load_recipe(name)\n"
        "    recipe.model_config(cond_dim=4)\n"
        "print('ok', recipe.train.steps)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")


def test_a_project_with_its_own_recipes_package_still_finds_ours(tmp_path):
    """augment3d installs nothing under generic top-level names: a user's own ``recipes`` (or
    ``cli``) module does not shadow the bundled recipes."""
    for name in ("recipes", "cli"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('the user project module was imported')\n")
    code = "from augment3d.config.recipe import load_recipe; print(load_recipe('ci').name)"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ci"


def test_the_wheel_holds_only_augment3d_and_segbench_and_leaves_the_source_clean(tmp_path):
    import shutil
    import zipfile

    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "augment3d", "segbench"):
        if (root / name).is_dir():
            shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(root / name, source / name)
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "wheel"),
            "-q",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr
    assert not (source / "build").exists() and not list(source.glob("*.egg-info"))  # the source tree stays clean
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"augment3d", "segbench"}
    assert {f"augment3d/recipes/{r}.toml" for r in ("ci", "quick", "phantom", "brats_africa_128")} <= set(names)
    bundled = {
        f"augment3d/pretrained/phantom/{f}"
        for f in (
            "generator.safetensors",
            "generator.json",
            "label_maps.safetensors",
            "label_maps.json",
            "pretrained.json",
            "subjects.json",
            "recipe.toml",
        )
    }
    assert bundled <= set(names)  # `make demo` and `augment3d sample phantom` from an installed wheel
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "augment3d = augment3d.cli:main" in entry
