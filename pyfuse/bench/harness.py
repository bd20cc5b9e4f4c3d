"""The timed harness of ``pyfuse bench``: pyfuse against the reference fusion pass.

For every workload (see :mod:`pyfuse.bench.workloads`) and every repeat, three fusion
runs are timed, interleaved (the order rotates from one repeat to the next):

* the reference ``torch.ao.quantization.fx.fuse.fuse``,
* ``pyfuse.fuse`` (eager: the output's code is generated),
* ``pyfuse.fuse(..., lazy=True)`` (code generated on first use),

each on its own freshly built input (fusion consumes its input; building is not
timed).  After the eager run, ``out.recompile()`` is timed: the *codegen floor*,
what generating the output's code alone costs.  Medians of the repeats are
reported.  T1 times flatten + match alone: ``pyfuse.engine.matching.find_matches`` against
the reference's ``_find_matches`` on the same (unmodified) input.

Garbage collector: by default it is left as it is, and ``gc.collect()`` runs
before every timed call (on both sides).  ``--gc off`` disables it during every
timed call, on both sides alike.

Duration (2-core machine, otherwise idle): ``--sizes standard`` about 12-14
minutes with the default 3 repeats (the timed fusion calls themselves are about
5 minutes of it, building the inputs about 3, ``gc.collect()`` ~2: a full
collection costs ~1.4 s with a 100k-node graph alive); ``--repeats 1`` about 5.  ``--sizes huge`` about 35 minutes: building a 1M-node
input takes ~3 minutes (done 4 times), the reference ~5 minutes, peak memory
~13 GB.

Every output is checked: the fusion count (fused modules, see
:func:`pyfuse.bench.workloads.count_fusions`) and node count must be the expected
ones, and pyfuse's ``.code`` must equal the reference's.  A mismatch or an
exception is shown in the table and makes the exit status 1.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from torch.fx import GraphModule

from . import workloads as W
from .tables import Row, median

__all__ = ["default_repeats", "log_to_stderr", "run"]


class _Timeout(Exception):
    pass


# ---------------------------------------------------------------------------
# timing


@contextlib.contextmanager
def _gc_mode(off: bool) -> Iterator[None]:
    was = gc.isenabled()
    if off:
        gc.disable()
    try:
        yield
    finally:
        if off and was:
            gc.enable()


@contextlib.contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise :class:`_Timeout` in the main thread after ``seconds`` (POSIX only)."""
    if not seconds or not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(_signum: int, _frame: object) -> None:
        raise _Timeout

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _timed(fn: Callable[[], Any], gc_off: bool) -> tuple[float, Any]:
    gc.collect()
    with _gc_mode(gc_off):
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
    return dt, result


# ---------------------------------------------------------------------------
# the fusion entry points


def _reference_fuse() -> Callable[..., GraphModule]:
    from torch.ao.quantization.fx.fuse import fuse

    return fuse


def _pyfuse_fuse() -> Callable[..., GraphModule]:
    import pyfuse

    fuse: Callable[..., GraphModule] = pyfuse.fuse
    return fuse


def _reference_handlers(backend_config: Any) -> dict[Any, Any]:
    """The reference's priority-ordered {pattern: fuse handler class} dict (its
    keys, in order, are the pattern list ``find_matches`` takes)."""
    from torch.ao.quantization.fx.fuse_handler import (
        _get_fusion_pattern_to_fuse_handler_cls,
    )
    from torch.ao.quantization.fx.pattern_utils import _sorted_patterns_dict

    handlers: dict[Any, Any] = _sorted_patterns_dict(
        _get_fusion_pattern_to_fuse_handler_cls(backend_config)
    )
    return handlers


def _check(
    row: Row,
    what: str,
    wl: W.Workload,
    out: GraphModule,
    before: dict[str, Any],
    expected_code: tuple[str, str] | None,
) -> int:
    """Check one output; record problems in ``row.errors``; return its fusions."""
    n = W.count_fusions(out, before)
    if n != wl.expected_fusions:
        row.errors.append(f"{what}: {n} fusions, expected {wl.expected_fusions}")
    nodes = W.node_count(out)
    if nodes != wl.expected_nodes_after:
        row.errors.append(
            f"{what}: {nodes} nodes after fusion, expected {wl.expected_nodes_after}"
        )
    if expected_code is not None and out.code != expected_code[1]:
        row.errors.append(f"{what}: .code differs from {expected_code[0]}'s")
    return n


def _expected(ref_code: str | None, py_code: str | None) -> tuple[str, str] | None:
    if ref_code is not None:
        return ("the reference", ref_code)
    if py_code is not None:
        return ("pyfuse eager", py_code)
    return None


# ---------------------------------------------------------------------------
# one workload


def _run_workload(
    wl: W.Workload,
    repeats: int,
    gc_off: bool,
    *,
    run_reference: bool,
    ref_repeats: int,
    ref_timeout: float | None,
    log: Callable[[str], None],
) -> Row:
    ref_fuse = _reference_fuse()
    row = Row(workload=wl.label, kind=wl.kind, nodes=wl.nodes)
    try:
        py_fuse: Callable[..., GraphModule] | None = _pyfuse_fuse()
    except (ImportError, AttributeError) as e:
        py_fuse = None
        row.errors.append(f"pyfuse.fuse unavailable: {e!r}")

    # build once (timed separately), and use that input for T1 (matching only)
    t0 = time.perf_counter()
    gm = wl.fresh()
    row.build_s = time.perf_counter() - t0
    log(f"  built {wl.label} in {row.build_s:.2f} s")
    _measure_match(row, wl, gm, repeats, gc_off)
    # matching left it untouched: it is the first fusion run's input
    spare: GraphModule | None = gm
    del gm

    ref_code: str | None = None
    py_code: str | None = None
    samples: dict[str, list[float]] = {
        "ref": [],
        "pyfuse": [],
        "lazy": [],
        "codegen": [],
    }
    sides = ["ref", "pyfuse", "lazy"]
    disabled: set[str] = set()
    if not run_reference:
        disabled.add("ref")
    if py_fuse is None:
        disabled.update(("pyfuse", "lazy"))
    for rep in range(repeats):
        order = sides[rep % 3 :] + sides[: rep % 3]
        for side in order:
            if side in disabled or (
                side == "ref" and len(samples["ref"]) >= ref_repeats
            ):
                continue
            inp = spare if spare is not None else wl.fresh()
            spare = None
            before = W.module_snapshot(inp)
            cfg = wl.backend_config()
            fn = ref_fuse if side == "ref" else py_fuse
            assert fn is not None
            kwargs = {"lazy": True} if side == "lazy" else {}
            call = functools.partial(fn, inp, wl.is_qat, None, cfg, **kwargs)
            del inp
            try:
                with _deadline(ref_timeout if side == "ref" else None):
                    dt, out = _timed(call, gc_off)
            except _Timeout:
                row.ref_note = f"skipped (> {ref_timeout:g} s)"
                disabled.add("ref")
                log(f"  reference: stopped after {ref_timeout:g} s")
                del call, before
                gc.collect()
                continue
            except Exception as e:  # noqa: BLE001 (a crash is a result: report it)
                row.errors.append(f"{side}: raised {type(e).__name__}: {e}")
                log(f"  {side}: raised {type(e).__name__}: {e}")
                disabled.add(side)
                del call, before
                gc.collect()
                continue
            del call
            samples[side].append(dt)
            if side == "ref":
                row.fusions = _check(row, "reference", wl, out, before, None)
                if ref_code is None:
                    ref_code = out.code
            elif side == "pyfuse":
                cg, _ = _timed(out.recompile, gc_off)
                samples["codegen"].append(cg)
                n = _check(row, "pyfuse", wl, out, before, _expected(ref_code, py_code))
                py_code = py_code or out.code
                if row.fusions is None:
                    row.fusions = n
            else:
                # (without a reference output: lazy is compared with eager)
                n = _check(
                    row, "pyfuse lazy", wl, out, before, _expected(ref_code, py_code)
                )
                py_code = py_code or out.code
                if row.fusions is None:
                    row.fusions = n
            log(f"  {side:7s} repeat {rep + 1}: {dt:.4f} s")
            # (their garbage is collected by the gc.collect() before the next
            # timed call: one collection between runs, not two)
            del out, before
    del spare
    row.ref_s = median(samples["ref"])
    row.pyfuse_s = median(samples["pyfuse"])
    row.lazy_s = median(samples["lazy"])
    row.codegen_s = median(samples["codegen"])
    row.samples.update({k: v for k, v in samples.items() if v})
    row.errors = sorted(set(row.errors))
    if not samples["ref"] and not row.ref_note:
        row.ref_note = "skipped"
    return row


def _measure_match(
    row: Row, wl: W.Workload, gm: GraphModule, repeats: int, gc_off: bool
) -> None:
    """T1: flatten + match, reference ``_find_matches`` vs pyfuse ``find_matches``
    on the same input (matching does not modify it)."""
    from torch.ao.quantization.fx.fuse import _find_matches

    handlers = _reference_handlers(wl.backend_config())
    patterns = list(handlers)
    find_matches: Callable[..., dict[str, Any]] | None
    try:
        from ..engine.matching import find_matches as _fm

        find_matches = _fm
    except ImportError as e:
        row.errors.append(f"pyfuse.engine.matching.find_matches unavailable: {e!r}")
        find_matches = None
    ref_t: list[float] = []
    py_t: list[float] = []
    ref_res: Any = None
    py_res: Any = None
    if find_matches is not None:
        try:  # compile the patterns (cached by pyfuse) outside the timing
            find_matches(gm, W.build(wl.spec, 1).graph, patterns)
        except Exception as e:  # noqa: BLE001
            row.errors.append(f"find_matches: raised {type(e).__name__}: {e}")
            find_matches = None
    for rep in range(repeats):
        for side in ("ref", "pyfuse") if rep % 2 == 0 else ("pyfuse", "ref"):
            if side == "ref":
                ref_call = functools.partial(_find_matches, gm, gm.graph, handlers)
                dt, ref_res = _timed(ref_call, gc_off)
                ref_t.append(dt)
            elif find_matches is not None:
                py_call = functools.partial(find_matches, gm, gm.graph, patterns)
                try:
                    dt, py_res = _timed(py_call, gc_off)
                except Exception as e:  # noqa: BLE001
                    row.errors.append(f"find_matches: raised {type(e).__name__}: {e}")
                    find_matches = None
                    continue
                py_t.append(dt)
    if ref_res is not None:
        roots = {v[0] for v in ref_res.values()}
        if len(roots) != wl.expected_fusions:
            row.errors.append(
                f"reference _find_matches: {len(roots)} matches, "
                f"expected {wl.expected_fusions}"
            )
    # (the reference's values hold two more fields: handler and its data)
    if (
        ref_res is not None
        and py_res is not None
        and {k: v[:3] for k, v in ref_res.items()} != py_res
    ):
        row.errors.append("find_matches: result differs from the reference's")
    row.match_ref_s = median(ref_t)
    row.match_pyfuse_s = median(py_t)
    if ref_t:
        row.samples["match_ref"] = ref_t
    if py_t:
        row.samples["match_pyfuse"] = py_t


# ---------------------------------------------------------------------------
# driver


def default_repeats(sizes: str) -> int:
    """Timed runs per side: 5 (small), 3 (standard), 1 (huge)."""
    return {"small": 5, "standard": 3, "huge": 1}.get(sizes, 3)


def run(
    sizes: str = "standard",
    *,
    repeats: int | None = None,
    qat: bool = False,
    gc_off: bool = False,
    kinds: Sequence[str] | None = None,
    ref_timeout: float | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Row]:
    """Measure every workload of the size set; return one :class:`Row` each."""
    if log is None:
        log = log_to_stderr
    sets = W.size_set(sizes)
    huge = sizes == "huge"
    if repeats is None:
        repeats = default_repeats(sizes)
    if huge and ref_timeout is None:
        ref_timeout = 900.0
    if huge:
        _warn_memory(sets, log)
    rows: list[Row] = []
    for kind, ns in sets.items():
        if kinds and kind not in kinds:
            continue
        for n in ns:
            wl = W.make_workload(kind, n, qat=qat and not huge)
            log(f"{wl.label}: {wl.n_blocks} blocks, {wl.nodes:,} nodes")
            rows.append(
                _run_workload(
                    wl,
                    repeats,
                    gc_off,
                    run_reference=True,
                    ref_repeats=1 if huge else repeats,
                    ref_timeout=ref_timeout,
                    log=log,
                )
            )
            gc.collect()
    return rows


#: peak resident memory of a fusion run, per node (input + output + codegen),
#: measured roughly on 140k-280k-node graphs
_BYTES_PER_NODE = 16_000


def _warn_memory(sets: dict[str, list[int]], log: Callable[[str], None]) -> None:
    try:
        with Path("/proc/meminfo").open() as fh:
            info = dict(line.split(":", 1) for line in fh)
        avail = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return
    nodes = max((7 * n + 2 for ns in sets.values() for n in ns), default=0)
    need = nodes * _BYTES_PER_NODE
    if avail < need:
        log(
            f"warning: {avail / 1e9:.1f} GB of memory available; a {nodes:,}-node "
            f"run may need about {need / 1e9:.0f} GB"
        )


def log_to_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
