"""Packaging promises: a light ``import augment3d``, recipes readable without torch."""

from __future__ import annotations

import subprocess
import sys



def test_import_is_light():
    code = (
        "import sys, augment3d; "
        "heavy = [m for m in ('torch', 'matplotlib', 'segbench', 'segmentation_models_pytorch_3d', 'sklearn', 'nibabel') "
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
