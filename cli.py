"""The ``augment3d`` command, runnable from a source checkout (``python cli.py --help``).

The command lives in :mod:`augment3d.cli`, which the installed ``augment3d`` console script runs;
nothing is installed under this top-level name.
"""

from augment3d.cli import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
