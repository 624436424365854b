"""The documentation's examples run."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).parent.parent / "docs"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_augmenter_training_loop_runs(tiny_run, cohort, capsys):
    (code,) = python_blocks(DOCS / "AUGMENTER.md")
    code = code.replace('cohort_dir, run_dir = "cohort", "runs/quick"', f'cohort_dir, run_dir = "{cohort}", "{tiny_run}"')
    code = code.replace("SIZE, EPOCHS = 64, 5", "SIZE, EPOCHS = 32, 1")
    assert str(tiny_run) in code and "SIZE, EPOCHS = 32, 1" in code
    exec(compile(code, "AUGMENTER.md", "exec"), {})
    assert re.search(r"epoch 0: loss \d+\.\d+", capsys.readouterr().out)
