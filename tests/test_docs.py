"""The documentation's examples run."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).parent.parent / "docs"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_augmenter_training_loop_runs(tiny_run, cohort, capsys):
    (code,) = [block for block in python_blocks(DOCS / "AUGMENTER.md") if "EPOCHS" in block]
    code = code.replace('cohort_dir, run_dir = "cohort", "runs/quick"', f'cohort_dir, run_dir = "{cohort}", "{tiny_run}"')
    code = code.replace("SIZE, EPOCHS = 64, 5", "SIZE, EPOCHS = 32, 1")
    assert str(tiny_run) in code and "SIZE, EPOCHS = 32, 1" in code
    exec(compile(code, "AUGMENTER.md", "exec"), {})
    assert re.search(r"epoch 0: loss \d+\.\d+", capsys.readouterr().out)


QUEUE_SCRIPT = """
import sys, torchio as tio
cohort, run = sys.argv[1], sys.argv[2]
{snippet}
transform = transform  # the README's pipeline, as documented (run: unused, the README names the bundled generator)
sys.path.insert(0, sys.argv[3])
from helpers import cohort_subjects
subjects = cohort_subjects(cohort)
queue = tio.Queue(tio.SubjectsDataset(subjects, transform=transform), max_length=4, samples_per_volume=2,
                  sampler=tio.UniformSampler((8, 8, 8)), num_workers=2)
patches = sum(b["t1n"][tio.DATA].shape[0] for b in tio.SubjectsLoader(queue, batch_size=2))
whole = sum(b["t1n"][tio.DATA].shape[0] for b in tio.SubjectsLoader(tio.SubjectsDataset(subjects, transform=transform),
                                                                       batch_size=1, num_workers=2))
print("patches", patches, "subjects", whole)
"""


def test_the_readme_pipeline_runs_in_a_queue_and_a_loader_with_workers(tiny_run, cohort):
    """The README's torchio pipeline (with the augmenter) through ``tio.Queue(num_workers=2)`` and
    ``SubjectsLoader(num_workers=2)``: with a lambda as the mask it waited forever (the workers
    cannot pickle it back); a timeout turns such a hang into a failure."""
    import subprocess
    import sys

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    (snippet,) = [block for block in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "SyntheticAugmenter" in block]
    assert 'SyntheticAugmenter("phantom", p=' in snippet  # the bundled generator, as a user runs it
    done = subprocess.run(
        [sys.executable, "-c", QUEUE_SCRIPT.format(snippet=snippet), str(cohort), str(tiny_run), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(cohort).parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["patches", "6", "subjects", "3"]


def test_augmenter_gpu_restyle_example_runs_here_on_the_cpu(tiny_run, cohort):
    """The guide's main-process restyle for a large generator: its arguments are the augmenter's
    and torchio's own (run here with the CPU in place of the GPU)."""
    import torchio as tio
    from helpers import cohort_subjects

    from augment3d import SyntheticAugmenter

    (code,) = [block for block in python_blocks(DOCS / "AUGMENTER.md") if 'device="cuda"' in block]
    code = code.replace('"runs/africa128"', repr(str(tiny_run))).replace('device="cuda"', 'device="cpu"')
    subjects = cohort_subjects(cohort)
    scope = {"tio": tio, "SyntheticAugmenter": SyntheticAugmenter, "subjects": subjects}
    exec(compile(code, "AUGMENTER.md", "exec"), scope)
    batches = list(scope["loader"])
    assert sum(b["t1n"][tio.DATA].shape[0] for b in batches) == len(subjects) == 3
