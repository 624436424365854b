"""Output folders that are safe to replace: ours, not an input, not in use.

Every command that writes a folder (``train``, ``bench``, ``sample``, ``evaluate``, ``phantom``)
marks it as ours with ``.augment3d.json`` (its kind) and, while it writes, holds ``.lock``
(an exclusive ``flock`` with the writer's PID inside). ``--force`` replaces a folder only when

* it is recognisably ours: the marker of the same kind, or the JSON that kind always writes
  (folders from before the marker), and nothing in it that the kind does not write;
* it is neither an input of the command nor a parent of one;
* no live process holds its lock.

Everything is checked before anything is deleted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write_text, fsync_dir, umask
from ..errors import DataError
from .run_files import GENERATOR, LABEL_MAPS, LOG, RECIPE, SUBJECTS, TRAIN_STATE

__all__ = [
    "MARKER",
    "LOCK",
    "KINDS",
    "FolderKind",
    "check_not_an_input",
    "check_replaceable",
    "claim_output",
    "staged_output",
    "folder_lock",
    "mark",
    "set_aside",
    "remove_stale_siblings",
]

MARKER = ".augment3d.json"
LOCK = ".lock"
#: written by every kind: the marker, the lock, temporaries of atomic writes and checkpoint commits
_COMMON = (MARKER, LOCK, ".*.tmp", "*.next")


@dataclass(frozen=True)
class FolderKind:
    """What a command writes at the top of its output folder."""

    name: str
    #: a file this kind always writes, that identifies folders written before the marker existed
    signature: tuple[str, ...]
    #: glob patterns of every top-level entry it may write
    entries: tuple[str, ...]

    def foreign(self, folder: Path) -> list[str]:
        """Top-level entries of ``folder`` this kind does not write."""
        patterns = self.entries + _COMMON
        return sorted(p.name for p in folder.iterdir() if not any(fnmatch.fnmatchcase(p.name, g) for g in patterns))


KINDS = {
    "run": FolderKind(
        "run",
        (f"{GENERATOR}.json", f"{TRAIN_STATE}.json", SUBJECTS),
        (
            *(f"{b}.{e}" for b in (GENERATOR, TRAIN_STATE, LABEL_MAPS) for e in ("safetensors", "json")),
            LOG,
            "curves.png",
            "samples_latest.png",
            RECIPE,
            SUBJECTS,
        ),
    ),
    "bench": FolderKind(
        "bench",
        ("bench.json",),
        (
            "bench.json",
            "recipe.toml",
            "cohort",
            "splits.json",
            "gan",
            "gan_eval",
            "arms",
            "report.json",
            "report.md",
            "*.png",
            "cohort-*",
        ),
    ),
    "samples": FolderKind(
        "samples",
        ("dataset.json", "metadata.csv"),
        ("BraTS-SYN-*", "metadata.csv", "README.txt", "imagesTr", "labelsTr", "dataset.json", "preview.png"),
    ),
    "evaluation": FolderKind("evaluation", ("metrics.json",), ("metrics.json", "report.md", "*.png")),
    "cohort": FolderKind("cohort", ("phantom.json",), ("BraTS-PHN-*", "metadata.csv", "phantom.json", "preview.png")),
}


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_not_an_input(out: str | os.PathLike, inputs=()) -> None:
    """Refuse an output folder that is one of the command's inputs or holds one."""
    target = Path(out).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if _is_within(source, target):
            what = "is" if source == target else f"holds {source}, which is"
            raise DataError(out, f"{what} an input of this command; write the output to another folder")


def _kind_of(folder: Path) -> str | None:
    marker = folder / MARKER
    if marker.is_file():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            return json.loads(marker.read_text(encoding="utf-8")).get("kind")
    return None


def check_replaceable(out: str | os.PathLike, kind: str, inputs=()) -> None:
    """Raise :class:`DataError` unless ``--force`` may delete ``out`` (see the module docstring)."""
    out = Path(out)
    check_not_an_input(out, inputs)
    if not out.exists():
        return
    if not out.is_dir() or out.is_symlink():
        raise DataError(out, "exists and is not a folder; --force replaces only an augment3d output folder")
    spec = KINDS[kind]
    found = _kind_of(out)
    ours = found == kind or (found is None and any((out / s).is_file() for s in spec.signature))
    if not ours and any(out.iterdir()):
        raise DataError(
            out,
            f"is not an augment3d {kind} folder (no {MARKER} of that kind); --force deletes only "
            "folders augment3d wrote; choose another folder or empty this one yourself",
        )
    foreign = spec.foreign(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise DataError(
            out,
            f"holds files augment3d did not write ({shown}); --force will not delete them; "
            "move them out or choose another folder",
        )
    holder = _lock_holder(out)
    if holder is not None:
        raise DataError(out, f"is in use by another augment3d process (PID {holder}); wait for it or stop it")


def mark(folder: str | os.PathLike, kind: str) -> None:
    """Write the marker that makes ``folder`` recognisably an augment3d ``kind`` folder."""
    from .. import __version__

    atomic_write_text(Path(folder) / MARKER, json.dumps({"kind": kind, "augment3d_version": __version__}) + "\n")


def _lock_holder(folder: Path) -> int | None:
    """The PID holding ``folder``'s lock, or None when nobody does."""
    path = folder / LOCK
    if not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        with contextlib.suppress(OSError, ValueError):
            return int(os.read(fd, 32).decode() or 0)
        return 0
    finally:
        os.close(fd)
    return None


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, shared: bool = False):
    """Hold ``folder``'s lock (non-blocking) while writing into it: exclusive, or ``shared`` by
    processes that write apart from each other (a bench's jobs) but must not be replaced.

    Raises :class:`DataError` when another live process holds it in a conflicting way. The
    kernel drops the lock when the holder dies, however it dies, so a killed run never leaves
    the folder locked.
    """
    folder = Path(folder)
    path = folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode().strip() or "unknown"
            raise DataError(folder, f"is in use by another augment3d process (PID {holder}); wait for it or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def set_aside(folder: Path) -> Path:
    """Move ``folder`` to a hidden sibling (same file system: one atomic rename); returns where."""
    trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.replaced-{os.getpid()}-", dir=folder.parent))
    os.replace(folder, trash / folder.name)
    fsync_dir(folder.parent)
    return trash


def remove_stale_siblings(out: str | os.PathLike) -> None:
    """Delete hidden staging and set-aside siblings of ``out`` left by processes that are gone
    (``.<name>.partial-<pid>-*``, ``.<name>.replaced-<pid>-*``, ``.<name>.old-*``)."""
    out = Path(out)
    if not out.parent.is_dir():
        return
    for entry in out.parent.glob(f".{out.name}.*-*"):
        parts = entry.name[len(out.name) + 2 :].split("-")
        if parts[0] not in ("partial", "replaced", "old") or not entry.is_dir():
            continue
        pid = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None
        if pid is not None and _alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def claim_output(out: str | os.PathLike, kind: str, *, force: bool = False, inputs=()) -> None:
    """Check, before any long work, that ``out`` may be written: a missing or empty folder is
    fine; an existing one needs ``force`` and must pass :func:`check_replaceable`."""
    out = Path(out)
    check_not_an_input(out, inputs)
    remove_stale_siblings(out)
    if out.exists() and (not out.is_dir() or out.is_symlink()):
        raise DataError(out, "exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise DataError(out, "already exists; choose another folder or pass --force to replace it")
        check_replaceable(out, kind, inputs)


@contextlib.contextmanager
def staged_output(out: str | os.PathLike, kind: str, *, force: bool = False, inputs=()):
    """Build a ``kind`` folder under a hidden name and move it to ``out`` only when complete.

    ``out`` is claimed first (:func:`claim_output`); an existing one is replaced only after the
    new folder is complete, and checked again then. If the block raises or is interrupted, the
    partial folder is removed and ``out`` is left as it was.
    """
    out = Path(out)
    claim_output(out, kind, force=force, inputs=inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        yield work
        mark(work, kind)
        os.chmod(work, 0o777 & ~umask())
        if out.exists():
            claim_output(out, kind, force=force, inputs=inputs)
            trash = set_aside(out)
            os.replace(work, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(work, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
