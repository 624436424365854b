"""How much memory this process may still take, to refuse inputs that cannot fit before allocating.

The smallest of: the system's available memory (``MemAvailable``), the cgroup's limit less its
usage (containers, cluster jobs), and the address-space limit (``ulimit -v``) less what the
process has mapped. Each is skipped where the system does not say.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from .errors import DataError

__all__ = ["available_bytes", "check_fits", "human_bytes"]


def _meminfo(key: str, path: str = "/proc/meminfo") -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """cgroup v2 ``memory.max`` less ``memory.current`` for this process's group."""
    try:
        group = Path("/proc/self/cgroup").read_text().strip().splitlines()[0].split(":", 2)[2]
        base = Path("/sys/fs/cgroup") / group.lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((base / "memory.current").read_text())
    except (OSError, ValueError, IndexError):
        return None


def _address_space_room() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    mapped = _meminfo("VmSize", "/proc/self/status") or 0
    return soft - mapped


def available_bytes() -> int | None:
    """Bytes this process can still allocate, as far as the system says (None: unknown)."""
    rooms = [r for r in (_meminfo("MemAvailable"), _cgroup_room(), _address_space_room()) if r is not None]
    return max(0, min(rooms)) if rooms else None


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def check_fits(needed: int, where: str | os.PathLike | None, what: str) -> None:
    """Raise :class:`DataError` naming ``where`` when ``needed`` bytes cannot be allocated now."""
    room = available_bytes()
    if room is not None and needed > room:
        raise DataError(
            where,
            f"{what} needs {human_bytes(needed)}, more than this process can still allocate "
            f"({human_bytes(room)}); refused before allocating",
        )
