"""Recipes: the bundled ones load, typos and wrong types are refused with the key named."""

from __future__ import annotations

import pytest

from augment3d.config.recipe import load_recipe
from augment3d.errors import RecipeError


@pytest.mark.parametrize("name", ["ci", "quick", "phantom", "brats_africa_128"])
def test_bundled_recipes_load(name):
    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.data.preprocess().shape[0] >= 16
    assert recipe.model_config(cond_dim=4).shape == recipe.data.preprocess().shape


def _recipe(tmp_path, text: str):
    path = tmp_path / "r.toml"
    path.write_text(text)
    return load_recipe(path)


def test_recipe_typos_are_refused(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown key\(s\) in \[data\]: shap"):
        _recipe(tmp_path, "[data]\nshap = 32\n")
    with pytest.raises(RecipeError, match="shape must be"):
        _recipe(tmp_path, "[data]\nshape = 2\n")
    with pytest.raises(RecipeError, match="not valid TOML"):
        _recipe(tmp_path, "[data\n")
    with pytest.raises(RecipeError, match=r"unknown section\(s\): trian"):
        _recipe(tmp_path, "[trian]\nsteps = 2\n")


def test_integer_hyperparameters_are_accepted(tmp_path):
    recipe = _recipe(tmp_path, "[data]\nshape = 16\n[train]\nbeta1 = 0\nr1_gamma = 1\n")
    assert recipe.train.beta1 == 0.0 and isinstance(recipe.train.beta1, float)


@pytest.mark.parametrize(
    "section, key", [("train", "lecam"), ("train", "cond_loss"), ("train", "seg_augment"), ("model", "noise_style")]
)
def test_removed_options_are_named_as_removed(tmp_path, section, key):
    with pytest.raises(RecipeError, match=f"\\[{section}\\] {key}: removed from augment3d after measured runs"):
        _recipe(tmp_path, f"[{section}]\n{key} = 1\n")


def test_the_bench_section_is_segbench_s_to_check(tmp_path):
    from segbench.config import bench_config

    recipe = _recipe(tmp_path, "[bench]\nsteps = 3\nencoder = 'resnet18'\n")  # augment3d keeps it as a table
    assert recipe.bench == {"steps": 3, "encoder": "resnet18"}
    assert bench_config(recipe).steps == 3  # segbench reads it (tests/bench/test_bench.py: what it refuses)


@pytest.mark.parametrize("name", ["ci", "quick", "phantom", "brats_africa_128"])
def test_bundled_bench_sections_are_valid(name):
    from segbench.config import bench_config

    assert bench_config(load_recipe(name)).seeds
