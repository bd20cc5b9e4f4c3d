"""The large-heap condition: every side in this one process, with extra live
copies of the model (two by default), which makes the reference's full
collections rarer; every side is warmed up first (only a process's first call
pays the first-use costs). The floors are timed right after pyfuse's call, and
outputs are compared in-process (:func:`~pyfuse.bench.digests.digest`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import workloads as W
from .cases import SIDES, Case, fuse_fn, warm_up
from .digests import compare_digests, count_errors, digest
from .floors import codegen_floor, fold_floor, fold_pairs
from .samples import Sample, Samples, rotations, timed_call

__all__ = ["measure_heap"]


def measure_heap(
    case: Case,
    repeats: int,
    *,
    copies: int = 2,
    sides: Sequence[str] = SIDES,
    gc_off: bool = False,
    log: Callable[[str], None] = lambda _m: None,
) -> Samples:
    """All sides in this process, with ``copies`` extra copies of the model alive
    (each side warmed up first: only the process's first call would pay the
    first-use costs)."""
    res = Samples(case, "heap")
    for side in sides:
        warm_up(case, side)
    alive = [case.build() for _ in range(copies)]
    ref_digest: dict[str, Any] | None = None
    failed: set[str] = set()
    for rep, order in rotations(repeats, sides):
        for side in order:
            if side in failed:
                continue
            built = case.build()
            res.nodes = len(built.gm.graph.nodes)
            before = W.module_snapshot(built.gm)
            pairs = fold_pairs(built.gm) if not case.qat else []
            res.pairs = len(pairs)
            try:
                wall, cpu, out = timed_call(fuse_fn(side), built, case.qat, gc_off)
            except Exception as e:  # noqa: BLE001 (a crash is a result: report it)
                res.errors.append(f"{side}: raised {type(e).__name__}: {e}")
                failed.add(side)
                log(f"  {side}: raised {type(e).__name__}: {e}")
                continue
            s = Sample(wall, cpu)
            if side == "pyfuse":
                s.codegen_floor = codegen_floor(out)
                s.fold_floor = fold_floor(pairs)
            res.add(side, s)
            n = W.count_fusions(out, before)
            res.errors.extend(count_errors(side, built, n, W.node_count(out)))
            d = digest(out)
            if side == "ref":
                res.fusions = n
                if ref_digest is None:
                    ref_digest = d
                else:
                    res.errors.extend(
                        compare_digests("reference (repeat)", ref_digest, d)
                    )
            else:
                res.fusions = n if res.fusions is None else res.fusions
                if ref_digest is not None:
                    res.errors.extend(compare_digests(side, ref_digest, d))
                elif "ref" in sides:
                    res.errors.append(f"{side}: no reference output to compare with")
            log(f"  heap  {side:6s} repeat {rep + 1}: {wall:.4f} s")
            del out, before, pairs, built
    del alive
    res.errors = sorted(set(res.errors))
    return res
