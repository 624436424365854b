"""Recipes: the bundled ones load, typos and wrong types are refused with the key named."""

from __future__ import annotations

import pytest

from augment3d.config.recipe import load_recipe
from augment3d.errors import RecipeError


@pytest.mark.parametrize("name", ["ci", "quick", "phantom", "brats_africa_128", "phantom_inpaint", "phantom_inpaint32"])
def test_bundled_recipes_load(name):
    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.data.preprocess().shape[0] >= 16
    crop = recipe.model.get("crop", 0)  # an inpainting recipe's generator works on crops of the data grid
    assert recipe.model_config(cond_dim=4).shape == ((crop,) * 3 if crop else recipe.data.preprocess().shape)


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


def test_each_loss_term_takes_its_settings_from_its_own_table(tmp_path):
    recipe = _recipe(
        tmp_path,
        "[train.terms.label_consistency]\nweight = 1\nwarmup = 50\n[train.terms.contrast_match]\nweight = 0.5\n",
    )
    terms = recipe.train.terms
    assert (terms.label_consistency.weight, terms.label_consistency.warmup, terms.label_consistency.width) == (1.0, 50, 8)
    assert [name for name, _ in terms.active()] == ["label_consistency", "contrast_match"]  # the order they join G's loss
    assert not terms.mode_seeking.on and not terms.texture_match.on


def test_flat_term_keys_of_older_recipes_and_run_folders_read_as_the_tables(tmp_path):
    from augment3d.pretrained import bundled_path
    from augment3d.training.run_folder import recipe_changes

    old = tmp_path / "old.toml"
    old.write_text("[train]\nseg_consistency = 1.0\nseg_warmup = 7\nseg_autocast = true\ntexture_match = 2\nmode_seeking = 0.1\n")
    new = tmp_path / "new.toml"
    new.write_text(
        "[train.terms.label_consistency]\nweight = 1.0\nwarmup = 7\nautocast = true\n"
        "[train.terms.texture_match]\nweight = 2.0\n[train.terms.mode_seeking]\nweight = 0.1\n"
    )
    assert load_recipe(old).train == load_recipe(new).train
    assert recipe_changes(load_recipe(old), load_recipe(new)) == []  # a run written with the flat keys resumes
    changed = recipe_changes(load_recipe(old), _recipe(tmp_path, "[train.terms.label_consistency]\nweight = 1.0\n"))
    assert "train.terms.label_consistency.warmup: 7 -> 200" in changed
    # the bundled generator's recipe, written with the flat keys, reads as the phantom recipe's tables
    assert load_recipe(bundled_path("phantom") / "recipe.toml").train.terms == load_recipe("phantom").train.terms


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "[train]\nseg_warmup = 5\n[train.terms.label_consistency]\nwarmup = 6\n",
            r"seg_warmup and \[train.terms.label_consistency\] warmup",
        ),
        ("[train.terms.lecam]\nweight = 1\n", r"unknown term\(s\) in \[train.terms\]: lecam"),
        ("[train.terms.texture_match]\nwieght = 1\n", r"unknown key\(s\) in \[train.terms.texture_match\]: wieght"),
        ("[train.terms.label_consistency]\nwarmup = 2.5\n", r"\[train.terms.label_consistency\] warmup must be a whole number"),
        ("[train.terms.label_consistency]\nwidth = 0\n", r"\[train.terms.label_consistency\] width must be >= 1"),
        ("[train]\nterms = 3\n", r"\[train.terms\] must be a table"),
        ("[train.terms]\nmode_seeking = 1\n", r"\[train.terms.mode_seeking\] must be a table"),
    ],
    ids=["flat-and-table", "unknown-term", "typo", "type", "range", "not-a-table", "term-not-a-table"],
)
def test_term_tables_are_checked_with_the_table_named(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message):
        _recipe(tmp_path, text)
