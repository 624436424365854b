"""Packaging promises: light import, bundled recipes, recipe validation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from augment3d.config import load_recipe
from augment3d.errors import RecipeError


def test_import_is_light():
    code = (
        "import sys, augment3d; "
        "heavy = [m for m in ('torch', 'matplotlib', 'segbench', 'segmentation_models_pytorch_3d', 'sklearn', 'nibabel') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", ["ci", "quick", "phantom", "brats_africa_128"])
def test_bundled_recipes_load(name):
    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.data.preprocess().shape[0] >= 16


def test_recipe_typos_are_refused(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("[data]\nshap = 32\n")
    with pytest.raises(RecipeError, match=r"unknown key\(s\) in \[data\]: shap"):
        load_recipe(path)
    path.write_text("[data]\nshape = 2\n")
    with pytest.raises(RecipeError, match="shape must be"):
        load_recipe(path)
    path.write_text("[data\n")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(path)


def test_integer_hyperparameters_are_accepted(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("[data]\nshape = 16\n[train]\nbeta1 = 0\nr1_gamma = 1\n")
    recipe = load_recipe(path)
    assert recipe.train.beta1 == 0.0 and isinstance(recipe.train.beta1, float)
