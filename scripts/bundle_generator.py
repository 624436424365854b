"""Copy a trained run's generator into the package as a bundled generator (maintainers only).

    python scripts/bundle_generator.py RUN NAME --command "augment3d bench --recipe phantom ..."

writes ``augment3d/pretrained/NAME/``: the run's ``generator.safetensors`` + ``generator.json``,
its training label maps (``label_maps.*``), ``subjects.json`` (the training subjects, so a bench
can check that none of its test cases was trained on), ``recipe.toml`` and ``pretrained.json``
(recipe name and SHA-256, the phantom cohort's settings, the command, the commit). Nothing else
of the run (no optimiser state, no discriminator) ships.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from augment3d.io.atomic import atomic_write_text
from augment3d.config.recipe import load_recipe
from augment3d.pretrained import PRETRAINED_DIR, PROVENANCE

FILES = ("generator.safetensors", "generator.json", "label_maps.safetensors", "label_maps.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="trained run folder (augment3d train, or a bench's gan/)")
    parser.add_argument("name", help="bundled name, e.g. phantom")
    parser.add_argument("--command", required=True, help="the command that trained the run")
    parser.add_argument("--recipe-name", help="the recipe's name (default: the run's recipe.toml's)")
    parser.add_argument(
        "--source",
        type=Path,
        help="the recipe file the run's recipe.toml was derived from "
        "(a bench over cohorts writes one per cohort); its SHA-256 is recorded too",
    )
    args = parser.parse_args(argv)
    missing = [f for f in (*FILES, "recipe.toml", "subjects.json") if not (args.run / f).is_file()]
    if missing:
        sys.exit(f"{args.run}: not a finished run folder (missing {', '.join(missing)})")
    recipe = load_recipe(args.run / "recipe.toml")
    target = PRETRAINED_DIR / args.name
    staging = PRETRAINED_DIR / f".{args.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name in FILES:
        shutil.copyfile(args.run / name, staging / name)
    recipe_text = (args.run / "recipe.toml").read_text(encoding="utf-8")
    (staging / "recipe.toml").write_text(recipe_text, encoding="utf-8")
    subjects = json.loads((args.run / "subjects.json").read_text(encoding="utf-8"))
    subjects["data"] = "phantom"  # the run's absolute cohort path means nothing on another machine
    (staging / "subjects.json").write_text(json.dumps(subjects, indent=1) + "\n", encoding="utf-8")
    phantom = recipe.phantom
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    atomic_write_text(
        staging / PROVENANCE,
        json.dumps(
            {
                "recipe": args.recipe_name or recipe.name,
                "recipe_sha256": hashlib.sha256(recipe_text.encode()).hexdigest(),
                **({"source_recipe_sha256": hashlib.sha256(args.source.read_bytes()).hexdigest()} if args.source else {}),
                "phantom": {k: getattr(phantom, k) for k in ("cases", "seed", "spacing", "ssa_fraction")},
                "train_subjects": len(subjects.get("train", [])),
                "command": args.command,
                "commit": commit,
                "generator_sha256": hashlib.sha256((args.run / "generator.safetensors").read_bytes()).hexdigest(),
            },
            indent=1,
        )
        + "\n",
    )
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    print(f"bundled {args.run} as {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
