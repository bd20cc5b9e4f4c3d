"""Is the machine quiet enough to measure? The load average around each table.

A table is taken on a *quiet* machine when the 1-minute load average at its
start is at most ``threshold`` per core (0.3 by default: on 2 cores, 0.6).
Before a table, :func:`settle` waits (up to a limit) for the load to drop below
that: the previous table's own process raises the 1-minute average to about 1,
which decays with a one-minute time constant once it sleeps. The load after the
table is recorded too; it includes this benchmark's own process (about 1.0 after
a long table), so only the start figure decides.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Load", "LoadCheck", "cores", "load1", "settle"]


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (not on Linux)
        return os.cpu_count() or 1


def load1() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


@dataclass
class Load:
    """Load averages around one table."""

    before: float
    after: float | None
    cores: int
    threshold: float

    @property
    def limit(self) -> float:
        return self.threshold * self.cores

    @property
    def busy(self) -> bool:
        return self.before > self.limit

    def describe(self) -> str:
        after = "-" if self.after is None else f"{self.after:.2f}"
        verdict = (
            f"BUSY (above {self.limit:.2f})"
            if self.busy
            else f"quiet (<= {self.limit:.2f})"
        )
        return (
            f"1-min load average {self.before:.2f} at start, {after} at end "
            f"(the end includes this run's own process), {self.cores} cores: {verdict}"
        )


class LoadCheck:
    """Records the load around a table: ``with LoadCheck(...) as load: ...``."""

    def __init__(
        self,
        threshold: float = 0.3,
        *,
        wait: float = 0.0,
        log: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self.threshold = threshold
        self.wait = wait
        self.log = log
        self.load: Load | None = None

    def __enter__(self) -> Load:
        n = cores()
        before = settle(self.threshold * n, self.wait, self.log)
        self.load = Load(before, None, n, self.threshold)
        return self.load

    def __exit__(self, *exc: object) -> None:
        if self.load is not None:
            self.load.after = load1()


def settle(
    limit: float,
    wait: float,
    log: Callable[[str], None] = lambda _m: None,
    *,
    poll: float = 5.0,
) -> float:
    """Sleep until the 1-minute load is at most ``limit`` or ``wait`` seconds
    have passed; return the load then."""
    deadline = time.monotonic() + wait
    now = load1()
    if now > limit and wait > 0:
        log(
            f"load {now:.2f} > {limit:.2f}: waiting up to {wait:.0f} s for it to settle"
        )
    while now > limit and time.monotonic() < deadline:
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        now = load1()
    return now
