"""Resident-set probes (Linux ``/proc``, else ``ru_maxrss``) for the peak memory
of one call: reset the high-water mark before it, read it after."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

__all__ = ["mib", "peak_bytes", "reset_peak", "rss_bytes"]

_MiB = 1024 * 1024


def _status_kib(field_name: str) -> int | None:
    try:
        with Path("/proc/self/status").open() as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """Current resident set size (Linux), else ``None``."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def reset_peak() -> bool:
    """Reset the resident-set high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_bytes() -> int:
    """Resident-set high-water mark: VmHWM, else ``ru_maxrss``."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":  # bytes there
            return int(kib)
    return kib * 1024


def mib(x: float | None) -> float | None:
    return None if x is None else x / _MiB
