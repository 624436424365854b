"""Progress for the command line: a rich bar with an ETA on a terminal, and where there is no
terminal (a pipe, a cluster job's log) one plain line per task at a steady interval.

The interval is ``AUGMENT3D_LOG_EVERY`` seconds (default 30); a task's last update (when its
total is known) is always printed, so short tasks print one line.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["Progress"]


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """``with Progress() as bar: task = bar.add_task(name, total); bar.update(task, completed=...)``."""

    def __init__(self, stream=None):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress as RichProgress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.stream = stream or sys.stderr
        console = Console(file=self.stream, highlight=False, soft_wrap=True)
        self.lines = not console.is_terminal
        self.every = float(os.environ.get("AUGMENT3D_LOG_EVERY", "30"))
        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=self.lines,
        )
        self._tasks: dict[int, dict] = {}

    def __enter__(self) -> Progress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.__exit__(*exc)

    def add_task(self, name: str, total: int | None = None) -> int:
        task = self._bar.add_task(name, total=total)
        now = time.monotonic()
        self._tasks[task] = {"name": name, "total": total, "start": now, "printed": now}
        return task

    def update(self, task: int, completed: int, description: str | None = None, total: int | None = None) -> None:
        self._bar.update(
            task,
            completed=completed,
            description=description or self._tasks[task]["name"],
            **({"total": total} if total is not None else {}),
        )
        if self.lines:
            self._line(task, completed, description, total)

    def _line(self, task: int, completed: int, description: str | None, total: int | None) -> None:
        state = self._tasks[task]
        state["total"] = total if total is not None else state["total"]
        now, done = time.monotonic(), state["total"] is not None and completed >= state["total"]
        if not done and now - state["printed"] < self.every:
            return
        state["printed"] = now
        elapsed = now - state["start"]
        text = f"[{state['name']}] {completed}"
        if state["total"]:
            rate = completed / elapsed if elapsed > 0 else 0.0
            eta = (state["total"] - completed) / rate if rate > 0 else float("nan")
            text += (
                f"/{state['total']} ({100 * completed / state['total']:.0f}%), {rate:.3g}/s, "
                f"elapsed {_clock(elapsed)}, ETA {_clock(eta) if eta == eta else '?'}"
            )
        if description and description != state["name"]:
            text += f": {description}"
        print(text, file=self.stream, flush=True)
