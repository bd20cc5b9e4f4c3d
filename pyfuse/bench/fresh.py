"""The fresh-process condition: a new Python process per side and call.

The reference's time depends on the live heap (CPython's full collections run
less often when more long-lived objects exist, and the reference allocates with
the collector on while pyfuse pauses it), so every figure is taken in a named
condition; this is the usual call, a process that traces a model and fuses it
once, paying the first-use costs (torch kernels run for the first time, pattern
compilation). The other condition is :mod:`~pyfuse.bench.heap`.

The child (``python -m pyfuse.bench.fresh CASE-JSON SIDE``) imports torch, the
reference's module and pyfuse, builds or traces the model, collects garbage,
times ONE fusion call (wall and process CPU time), reads its resident-set
high-water mark, and reports JSON on its last stdout line; ``warm`` moves the
first-use costs into an untimed call on a one-block workload first. The floors
(:mod:`~pyfuse.bench.floors`) are timed in one more process per repeat (fold
first, then an untimed pyfuse call whose output is recompiled).

Memory: the high-water mark is reset (``/proc/self/clear_refs``) after the model
is built, so ``peak - RSS before the call`` is what the call needed at its peak
over the traced model; the model's own RSS (after it was built, over the process
after imports) is reported beside it. Outputs are compared across processes by
their :func:`~pyfuse.bench.digests.digest`.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from .. import compileworker
from . import workloads as W
from .cases import SIDES, Case, fuse_fn, warm_up
from .digests import compare_digests, count_errors, digest
from .floors import codegen_floor, fold_floor, fold_pairs
from .memory import peak_bytes, reset_peak, rss_bytes
from .samples import Sample, Samples, rotations, timed_call

__all__ = ["measure_fresh", "run_child"]


def _weak_snapshot(gm: GraphModule) -> dict[str, weakref.ref[nn.Module]]:
    """:func:`W.module_snapshot` through weak references: the check must not
    keep the input's modules alive (that would change the call's peak memory)."""
    return {k: weakref.ref(m) for k, m in W.module_snapshot(gm).items()}


def _count_fusions_weak(
    out: GraphModule, before: dict[str, weakref.ref[nn.Module]]
) -> int:
    alive = {k: m for k, r in before.items() if (m := r()) is not None}
    return W.count_fusions(out, alive)


def run_child(
    case: Case, side: str, gc_off: bool = False, warm: bool = False
) -> dict[str, Any]:
    """What a fresh child process does (JSON-able result).

    ``side`` ``ref`` / ``pyfuse`` / ``lazy``: build, time one call, read the peak
    RSS, check. ``floors``: build, time the fold floor on its pairs, fuse with
    pyfuse (untimed), time ``recompile()`` of the output. ``warm``: first one
    :func:`warm_up` call (by default the timed call is the process's first)."""
    # Every side's process has the reference's module loaded before the timed
    # call, as a program that used the reference has: pyfuse's first call would
    # otherwise pay for importing torch.ao.quantization.fx (~30 ms), which the
    # reference's side imported before its call.
    import torch.ao.quantization.fx.fuse

    fn = fuse_fn("pyfuse" if side == "floors" else side)
    if warm:
        warm_up(case, "pyfuse" if side == "floors" else side)
    gc.collect()
    rss0 = rss_bytes()
    built = case.build()
    nodes = len(built.gm.graph.nodes)
    result: dict[str, Any] = {"nodes": nodes, "threads": torch.get_num_threads()}
    if side == "floors":
        pairs = fold_pairs(built.gm) if not case.qat else []
        gc.collect()
        result["fold_floor"] = fold_floor(pairs)
        result["pairs"] = len(pairs)
        del pairs
        _, _, out = timed_call(fn, built, case.qat, gc_off)
        gc.collect()
        result["codegen_floor"] = codegen_floor(out)
        return result
    before = _weak_snapshot(built.gm)
    gc.collect()
    rss1 = rss_bytes()
    exact_peak = reset_peak()
    base = rss1 if exact_peak else peak_bytes()
    compileworker.PEAK_KIB[0] = 0
    wall, cpu, out = timed_call(fn, built, case.qat, gc_off)
    # (a compile worker's whole resident set counts on top: a bound on what
    # both processes held at once)
    worker = compileworker.PEAK_KIB[0] * 1024
    peak = peak_bytes() + worker
    n = _count_fusions_weak(out, before)
    result.update(
        wall=wall,
        cpu=cpu,
        peak_bytes=None if base is None else max(0, peak - base),
        model_bytes=None if rss0 is None or rss1 is None else rss1 - rss0,
        worker_bytes=worker,
        exact_peak=exact_peak,
        fusions=n,
        errors=count_errors(side, built, n, W.node_count(out)),
        digest=digest(out),
    )
    return result


def _spawn(
    case: Case,
    side: str,
    gc_off: bool,
    warm: bool,
    timeout: float | None = None,
    threads: int = 0,
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pyfuse.bench.fresh", case.to_json(), side]
    if gc_off:
        cmd.append("--gc-off")
    if warm:
        cmd.append("--warm")
    if threads:
        cmd.append(f"--threads={threads}")
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise _Timeout(f"stopped after {timeout:g} s") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"child exited with {proc.returncode}: {tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class _Timeout(Exception):
    pass


def measure_fresh(
    case: Case,
    repeats: int,
    *,
    sides: Sequence[str] = SIDES,
    floors: bool = True,
    gc_off: bool = False,
    warm: bool = False,
    ref_timeout: float | None = None,
    threads: int = 0,
    log: Callable[[str], None] = lambda _m: None,
) -> Samples:
    """``repeats`` fresh processes per side, interleaved (the floors in one more
    process per repeat); ``warm``: see :func:`run_child`. A reference process
    that runs longer than ``ref_timeout`` seconds is stopped, and the reference
    is skipped for the case (noted in the table; pyfuse's outputs then only meet
    the fusion and node count checks)."""
    res = Samples(case, "fresh")
    ref_digest: dict[str, Any] | None = None
    pending: list[tuple[str, dict[str, Any]]] = []
    failed: set[str] = set()
    for rep, order in rotations(repeats, sides):
        for side in [*order, "floors"] if floors else order:
            if side in failed:
                continue
            try:
                r = _spawn(
                    case,
                    side,
                    gc_off,
                    warm,
                    ref_timeout if side == "ref" else None,
                    threads,
                )
            except _Timeout as e:
                res.notes.append(f"{case.label}: reference {e}, skipped")
                failed.add(side)
                log(f"  {side}: {e}")
                continue
            except (RuntimeError, ValueError) as e:
                res.errors.append(f"{side}: {e}")
                failed.add(side)
                log(f"  {side}: {e}")
                continue
            res.nodes = r["nodes"]
            if side == "floors":
                res.pairs = r["pairs"]
                res.add(
                    side,
                    Sample(
                        0.0,
                        0.0,
                        codegen_floor=r["codegen_floor"],
                        fold_floor=r["fold_floor"],
                    ),
                )
                log(
                    f"  fresh floors repeat {rep + 1}: codegen {r['codegen_floor']:.4f} s, "
                    f"fold {r['fold_floor']:.4f} s"
                )
                continue
            res.errors.extend(r["errors"])
            if not r["exact_peak"]:
                res.notes.append("peak memory: process-lifetime ru_maxrss")
            res.add(
                side,
                Sample(
                    r["wall"],
                    r["cpu"],
                    r["peak_bytes"],
                    r["model_bytes"],
                    worker_bytes=r["worker_bytes"],
                ),
            )
            if side == "ref":
                res.fusions = r["fusions"]
                if ref_digest is None:
                    ref_digest = r["digest"]
                else:
                    res.errors.extend(
                        compare_digests("reference (repeat)", ref_digest, r["digest"])
                    )
            else:
                if res.fusions is None:
                    res.fusions = r["fusions"]
                pending.append((side, r["digest"]))
            log(f"  fresh {side:6s} repeat {rep + 1}: {r['wall']:.4f} s")
    if ref_digest is not None:
        for side, d in pending:
            res.errors.extend(compare_digests(side, ref_digest, d))
    elif "ref" in sides and pending and "ref" not in failed:
        res.errors.append("no reference output to compare with")
    res.errors = sorted(set(res.errors))
    res.notes = sorted(set(res.notes))
    return res


# ---------------------------------------------------------------------------
# child entry point


def _child_main(argv: list[str]) -> int:
    case = Case.from_json(argv[0])
    side = argv[1]
    if side not in (*SIDES, "floors"):
        print(f"unknown side {side!r}", file=sys.stderr)
        return 2
    for arg in argv[2:]:
        if arg.startswith("--threads="):
            torch.set_num_threads(int(arg.split("=", 1)[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        result = run_child(
            case, side, gc_off="--gc-off" in argv[2:], warm="--warm" in argv[2:]
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
