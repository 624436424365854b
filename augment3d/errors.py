"""Exceptions that users can cause, each naming the file and the problem."""

from __future__ import annotations

import os

__all__ = ["Augment3DError", "DataError", "CheckpointError", "RecipeError"]


class Augment3DError(Exception):
    """Base class for errors caused by user input; the CLI prints them as one line."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(self.path, problem)

    def __str__(self) -> str:
        return self.problem if self.path is None else f"{self.path}: {self.problem}"


class DataError(Augment3DError):
    """A data file or folder is missing, damaged or inconsistent."""


class CheckpointError(Augment3DError):
    """A checkpoint is missing, damaged, not ours, or does not match the data."""


class RecipeError(Augment3DError):
    """A recipe (TOML configuration) is missing or malformed."""
