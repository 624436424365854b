"""Atomic file writes: temp file in the same folder, fsync, rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "fsync_dir", "refuse_existing", "remove_stale_temporaries",
           "staged_folder"]


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry so a rename inside it survives a crash (no-op where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temp files a killed :func:`atomic_write_bytes` left in ``folder``; returns how many."""
    removed = 0
    for leftover in Path(folder).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()
            removed += 1
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def refuse_existing(out: str | os.PathLike, force: bool = False) -> None:
    """Raise ``DataError`` when ``out`` exists and ``force`` is not set (call before long work)."""
    from .errors import DataError

    out = Path(out)
    if out.exists() and not force:
        raise DataError(out, "already exists; choose another folder or pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise DataError(out, "exists and is not a folder")


@contextlib.contextmanager
def staged_folder(out: str | os.PathLike, force: bool = False):
    """Build a folder under a hidden temporary name and move it to ``out`` only when complete.

    An existing ``out`` is refused unless ``force``; with ``force`` it is replaced only after the
    new folder is complete. If the block raises (or is interrupted), the partial folder is removed
    and ``out`` is left as it was.
    """
    import shutil

    out = Path(out)
    refuse_existing(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield work
        os.chmod(work, 0o777 & ~_umask())
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / out.name)
            os.replace(work, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(work, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
