"""Samples of timed calls, and how one call is timed.

Sides are interleaved (the order rotates per repeat, :func:`rotations`), every
call gets a freshly built input, and ``gc.collect()`` runs before every timed
call on every side; wall and CPU time are both read (the process's, plus its
finished children's: pyfuse's compile worker).
"""

from __future__ import annotations

import contextlib
import gc
import resource
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from torch.fx import GraphModule

from .cases import Built, Case

__all__ = ["Sample", "Samples", "gc_mode", "rotations", "timed_call"]


@dataclass
class Sample:
    """One timed call of one side."""

    wall: float
    cpu: float
    #: peak RSS over the RSS before the call (fresh condition only)
    peak_bytes: int | None = None
    #: the model's own RSS (fresh condition only)
    model_bytes: int | None = None
    #: of ``peak_bytes``, the compile worker's peak RSS (fresh condition only)
    worker_bytes: int | None = None
    codegen_floor: float | None = None
    fold_floor: float | None = None


class BySide:
    """Samples kept per side (``self.by_side``), and their medians."""

    by_side: dict[str, list[Sample]]

    def add(self, side: str, s: Sample) -> None:
        self.by_side.setdefault(side, []).append(s)

    def median(self, side: str, attr: str) -> float | None:
        xs = [
            float(v)
            for s in self.by_side.get(side, [])
            if (v := getattr(s, attr)) is not None
        ]
        return statistics.median(xs) if xs else None


@dataclass
class Samples(BySide):
    """Every sample of one case in one condition, and what went wrong."""

    case: Case
    condition: str
    nodes: int = 0
    fusions: int | None = None
    pairs: int = 0
    by_side: dict[str, list[Sample]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def rotations(repeats: int, sides: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    k = len(sides)
    for rep in range(repeats):
        yield rep, [*sides[rep % k :], *sides[: rep % k]]


@contextlib.contextmanager
def gc_mode(off: bool) -> Iterator[None]:
    was = gc.isenabled()
    if off:
        gc.disable()
    try:
        yield
    finally:
        if off and was:
            gc.enable()


def timed_call(
    fn: Callable[..., GraphModule], built: Built, qat: bool, gc_off: bool
) -> tuple[float, float, GraphModule]:
    args = (built.gm, qat, None, built.backend_config)
    built.gm = None  # type: ignore[assignment]  # (the call consumes its input)
    gc.collect()
    with gc_mode(gc_off):
        w0, c0 = time.perf_counter(), time.process_time() + _children_cpu()
        out = fn(*args)
        w1, c1 = time.perf_counter(), time.process_time() + _children_cpu()
    return w1 - w0, c1 - c0, out


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (pyfuse's compile worker):
    part of a call's process time."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return float(r.ru_utime + r.ru_stime)
