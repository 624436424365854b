"""Which arithmetic to use where: bf16 on hardware that has it, fp32 elsewhere.

bf16 autocast is about twice as fast as fp32 on CPUs with bf16 instructions (AVX512-BF16, AMX)
and on GPUs, and far slower on CPUs without them, where oneDNN emulates it: on an AVX2-only
2-core CPU a 32^3 Conv3d ran at 100 GFLOP/s in fp32 and under 1 GFLOP/s in bf16
(docs/PERFORMANCE.md). ``auto`` picks by the hardware.
"""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["cpu_has_bf16", "auto_amp", "auto_precision"]


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def _fast_bf16(device) -> bool:
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return kind == "cpu" and cpu_has_bf16()


def auto_amp(amp: str, device) -> str:
    """A training autocast setting with ``auto`` resolved: ``bf16`` where it is fast, else ``none``."""
    if amp != "auto":
        return amp
    return "bf16" if _fast_bf16(device) else "none"


def auto_precision(precision: str, device) -> str:
    """A generation precision with ``auto`` resolved: ``bf16`` where it is fast, else ``fp32``."""
    if precision != "auto":
        return precision
    return "bf16" if _fast_bf16(device) else "fp32"
