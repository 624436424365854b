"""``Running``: how a bench runs, as against what it measures (the recipe's ``[bench]``).

Where the networks train, how many worker processes share the jobs, whether unreadable cases
are skipped, where prepared cases are cached, and what the user is told on the way. One object
carries these through the bench's stages (set-up, GAN, jobs, cohorts, workers) so that each
stage takes it whole and none repeats the list.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from augment3d.errors import DataError

__all__ = ["Running"]


def _quiet(message: str) -> None:
    """Says nothing (the default; a module-level function, so it pickles into worker processes)."""


@dataclass(frozen=True)
class Running:
    #: where networks train (``cpu``, ``cuda``, ``cuda:1``)
    device: str = "cpu"
    #: processes the jobs (and GANs) run in side by side (:mod:`segbench.parallel`)
    workers: int = 1
    #: leave out cases that fail validation instead of stopping
    skip_bad: bool = False
    #: where prepared cases are cached (None: the default cache)
    cache_dir: str | os.PathLike | None = None
    #: one line of news at a time (the CLI prints it with the time since the start)
    say: Callable[[str], None] = _quiet
    #: ``progress(name, total)`` gives an ``update(step, total, metrics)`` for a progress bar, or None
    progress: Callable | None = None

    def __post_init__(self):
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise DataError(None, f"--workers must be a whole number >= 1, got {self.workers!r}")

    @property
    def side_by_side(self) -> bool:
        return self.workers > 1

    def saying(self, prefix: str) -> Running:
        """The same, each message said after ``prefix`` (e.g. ``"cohort 101: "``)."""
        say = self.say
        return replace(self, say=lambda message: say(f"{prefix}{message}"))

    def in_worker(self) -> Running:
        """What a worker process gets: no callbacks to the main process, one process."""
        return replace(self, say=_quiet, progress=None, workers=1)
