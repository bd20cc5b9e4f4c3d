"""``pyfuse bench``: pyfuse against the reference fusion pass, measured honestly.

Tables, one per heap condition, mode (eval / QAT) and workload group (synthetic
workloads of :mod:`pyfuse.bench.workloads`, real-width models of
:mod:`pyfuse.bench.realwidth`); how each figure is taken is in
:mod:`pyfuse.bench.fresh` and :mod:`pyfuse.bench.heap`:

* conditions: ``fresh`` (a new process per side and call: the usual call) and
  ``heap`` (one process with extra live copies of the model);
* sides interleaved, medians of ``--repeats`` (at least 5 for a result), wall
  and process CPU time;
* floors: codegen (``recompile()`` of pyfuse's output) and fold (torch's
  ``fuse_conv_bn_weights`` over the model's pairs), and pyfuse's ratio to their
  sum;
* peak memory per side in the fresh condition (high-water mark over the traced
  model);
* the 1-minute load average at the start and end of each table: a table started
  above ``--threshold`` per core is marked BUSY (``--strict``: refused);
* every output checked against the reference (code, state_dict bits, module
  tree; fusion and node counts of the synthetic workloads): a wrong result fails
  the run (exit status 1).

``--profile`` instead splits single pyfuse calls into FX code generation, weight
folding and the rest (:mod:`pyfuse.bench.profile`). ``--flow pt2e`` instead
measures the export flow: pyfuse.pt2e's BatchNorm folds against torchao's, and
``prepare_pt2e`` with and without ``pyfuse.pt2e.patched_torchao()``, under the
same conventions (:mod:`pyfuse.bench.export_flow`; needs ``pyfuse[pt2e]``).

Duration, estimated from small runs (2 cores): a fresh-process measurement costs
about 1.5 s of interpreter and torch start-up per process, four processes per
repeat (three sides and the floors), plus building the input in each (~0.08 ms
per node) and the calls. With ``--sizes standard`` and 5 repeats: fresh eval
20-25 minutes, fresh QAT 15-20, large-heap eval 12-18, large-heap QAT 10-15 (the
real-width tables add about 3 minutes each), plus up to ``--settle`` seconds
before each table: the default run (both conditions and modes) about 1-1.3
hours. ``--sizes small --repeats 1``: about 1.5 minutes per condition and mode.
``--sizes huge`` (1M nodes, eval): about 100 s to build each input and ~13 GB
per process; fresh condition only (extra copies do not fit), about 15 minutes
per repeat with the reference (``--ref-timeout`` stops it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from .. import compileworker
from . import load as L
from . import realwidth
from . import workloads as W
from .export_flow import (
    E2E_SIZES,
    FOLD_SIZES,
    TORCHAO_MAX_NODES,
    MissingTorchao,
    require_torchao,
    run_export_tables,
)
from .export_tables import ExportTable, format_export_table
from .harness import LEGEND, block_sizes, cases, parse_blocks, run_tables
from .tables import Table, format_table, tables_json, write_png

__all__ = ["header", "main"]


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def header(args: argparse.Namespace) -> str:
    import torch

    import pyfuse

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"pyfuse bench, {now}: pyfuse {getattr(pyfuse, '__version__', '?')} (commit {_commit()}), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python "
        f"{platform.python_version()}, {L.cores()} cores, gc "
        f"{'disabled during timed calls' if args.gc == 'off' else 'enabled, collected before each timed call'}, "
        f"compile worker {_worker_setting()}."
    )


def _worker_setting() -> str:
    return {
        "always": "on for every graph (PYFUSE_COMPILE_WORKER=always)",
        "on": f"on (graphs of {compileworker.MIN_NODES:,}+ output nodes)",
        "off": "off (the default)",
    }[compileworker.setting()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyfuse bench",
        description="Time pyfuse.fuse against torch.ao.quantization.fx.fuse.fuse "
        "(interleaved, both heap conditions, with floors, memory and load figures).",
    )
    p.add_argument(
        "--flow",
        choices=["fx", "pt2e"],
        default="fx",
        help="fx (default): pyfuse.fuse against torch's FX fusion; pt2e: "
        "pyfuse.pt2e's BatchNorm folds against torchao's, and prepare_pt2e with "
        "and without pyfuse.pt2e.patched_torchao() (needs pyfuse[pt2e]; of the "
        "options below it uses --repeats and the load and output ones)",
    )
    p.add_argument(
        "--fold-sizes",
        default=",".join(map(str, FOLD_SIZES)),
        help="pt2e: approximate node counts of the fold table's graphs",
    )
    p.add_argument(
        "--torchao-max-nodes",
        type=int,
        default=TORCHAO_MAX_NODES,
        help="pt2e: run torchao's folds only up to this many nodes (they are "
        f"quadratic: ~600 s at 42k nodes; default {TORCHAO_MAX_NODES})",
    )
    p.add_argument(
        "--e2e-sizes",
        default=",".join(map(str, E2E_SIZES)),
        help="pt2e: approximate node counts of the prepare_pt2e table ('' skips it)",
    )
    p.add_argument(
        "--condition",
        choices=["fresh", "heap", "both"],
        default="both",
        help="fresh: a new process per side and call; heap: one process with "
        "--heap-copies extra copies of the model alive (default: both)",
    )
    p.add_argument(
        "--mode",
        choices=["eval", "qat", "both"],
        default="both",
        help="eval models, or train-mode models fused with is_qat=True",
    )
    p.add_argument(
        "--qat",
        action="store_const",
        const="qat",
        dest="mode",
        help="same as --mode qat",
    )
    p.add_argument(
        "--sizes",
        choices=sorted(W.SIZE_SETS),
        default="standard",
        help="synthetic sizes: small (a smoke test), standard (~1k-100k nodes), "
        "huge (1M nodes, eval)",
    )
    p.add_argument(
        "--blocks",
        default="",
        help="explicit synthetic sizes instead of --sizes, e.g. 'resnet=2,10;mixed=1'",
    )
    p.add_argument(
        "--workloads",
        default="",
        help="comma-separated subset of resnet,mixed,onednn,huge,real "
        "(real = the real-width models; default: every kind of --sizes/--blocks, "
        "and real)",
    )
    p.add_argument(
        "--models",
        default=",".join(realwidth.MODELS),
        help=f"real-width models (default: all of {', '.join(realwidth.MODELS)})",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="calls per side (median reported; at least 5 for a result)",
    )
    p.add_argument(
        "--warmup",
        action="store_true",
        help="fresh condition: each process first fuses a one-block workload "
        "(untimed), so the timed call does not pay the first-use costs",
    )
    p.add_argument(
        "--ref-timeout",
        type=float,
        default=None,
        help="fresh condition: stop a reference process after this many seconds "
        "and skip the reference for that workload (noted; default: none)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads in every measuring process "
        "(default 0: torch's default)",
    )
    p.add_argument(
        "--heap-copies",
        type=int,
        default=2,
        help="extra live copies of the model in the heap condition",
    )
    p.add_argument(
        "--gc",
        choices=["on", "off"],
        default="on",
        help="on (default): gc enabled, collected before each timed call; "
        "off: disabled during each timed call (both sides)",
    )
    p.add_argument(
        "--compile-worker",
        action="store_true",
        help="pyfuse with compile_worker=True (its code compiled in a second "
        "process on graphs of 4,000+ nodes; the worker's time and memory counted)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.3,
        help="a table is BUSY if the 1-min load at its start is above this per core",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=90.0,
        help="seconds to wait for the load to drop below the threshold "
        "before each table (default 90)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit status 3) instead of measuring a BUSY table",
    )
    p.add_argument(
        "--markdown", default="", help="also write the tables here as Markdown"
    )
    p.add_argument(
        "--png",
        default="",
        help="also plot each synthetic table to PREFIX-<condition>-<mode>.png",
    )
    p.add_argument("--json", default="", help="also write every sample here")
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead of the tables: split single pyfuse calls (cProfile) into "
        "FX code generation, weight folding and the rest",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _profile(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    from .profile import format_heap, format_splits, heap_use, profile_split

    sizes = block_sizes(args)
    workloads = [w for w in args.workloads.split(",") if w]
    models = [m for m in args.models.split(",") if m]
    modes = {"eval": [False], "qat": [True], "both": [False, True]}[args.mode]
    splits = []
    uses = []
    for qat in modes:
        for _, group_cases in cases(sizes, workloads, models, qat):
            for case in group_cases:
                log(f"profiling {case.label}{' (QAT)' if qat else ''}")
                splits.append(profile_split(case))
                uses += [heap_use(case, side) for side in ("ref", "pyfuse")]
                if qat:
                    splits[-1].label += " QAT"
                    for u in uses[-2:]:
                        u.label += " QAT"
    text = format_splits(splits) + "\n\n" + format_heap(uses)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


def _pt2e(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    """``--flow pt2e``: the export flow's tables (:mod:`pyfuse.bench.export_flow`)."""
    try:
        fold_sizes = [int(n) for n in args.fold_sizes.split(",") if n.strip()]
        e2e_sizes = [int(n) for n in args.e2e_sizes.split(",") if n.strip()]
        if any(n < 1 for n in [*fold_sizes, *e2e_sizes]):
            raise ValueError("sizes must be positive")
    except ValueError as e:
        print(f"pyfuse bench: --fold-sizes / --e2e-sizes: {e}", file=sys.stderr)
        return 2
    if args.gc == "off":
        print("pyfuse bench: --flow pt2e times with the gc on only", file=sys.stderr)
        return 2
    try:
        require_torchao()
    except MissingTorchao as e:
        print(f"pyfuse bench: {e}", file=sys.stderr)
        return 2
    import torchao  # type: ignore[import-untyped]

    top = f"{header(args)} torchao {torchao.__version__}."
    print(top + "\n", flush=True)
    parts = [top]

    def emit(t: ExportTable) -> None:
        text = format_export_table(t)
        parts.append(text)
        print(text + "\n", flush=True)

    tables: list[ExportTable] = []
    complete = run_export_tables(
        fold_sizes,
        e2e_sizes,
        repeats=args.repeats,
        torchao_max_nodes=args.torchao_max_nodes,
        threshold=args.threshold,
        settle=args.settle,
        strict=args.strict,
        log=log,
        emit=emit,
        tables=tables,
    )
    if args.markdown:
        Path(args.markdown).write_text("\n\n".join(parts) + "\n")
    if args.json:
        data = {"header": top, "tables": [t.to_json() for t in tables]}
        Path(args.json).write_text(json.dumps(data, indent=1))
    return _status(complete, [t.title for t in tables if not t.ok])


def _status(complete: bool, bad: list[str]) -> int:
    """The exit status, and why on stderr: 3 refused (busy), 1 a wrong result."""
    if not complete:
        print(
            "pyfuse bench: refused: the machine is busy (see --threshold, --settle)",
            file=sys.stderr,
        )
        return 3
    if bad:
        print(
            f"pyfuse bench: FAILED (wrong result or error) in: {'; '.join(bad)}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pyfuse bench``; returns the exit status (1: a wrong
    result or a failure; 3: refused on a busy machine with ``--strict``)."""
    args = _parser().parse_args(argv)
    if args.repeats < 1 or args.heap_copies < 0:
        print("--repeats must be >= 1 and --heap-copies >= 0", file=sys.stderr)
        return 2
    try:
        if args.blocks:
            parse_blocks(args.blocks)
        unknown = [m for m in args.models.split(",") if m and m not in realwidth.MODELS]
        if unknown:
            raise ValueError(
                f"unknown models {unknown}; expected some of {list(realwidth.MODELS)}"
            )
    except ValueError as e:
        print(f"pyfuse bench: {e}", file=sys.stderr)
        return 2
    log = (lambda _m: None) if args.quiet else _stderr
    if args.compile_worker:  # (the measuring processes inherit it)
        os.environ[compileworker.ENV] = "1"
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # (the heap condition and --profile)
    with warnings.catch_warnings():
        # torch.ao.quantization's deprecation notices
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        if args.profile:
            return _profile(args, log)
        if args.flow == "pt2e":
            return _pt2e(args, log)
        top = header(args)
        print(top + "\n\n" + LEGEND + "\n", flush=True)
        parts = [top, LEGEND]

        def emit(t: Table) -> None:
            text = format_table(t)
            if args.png and not t.total:
                path = f"{args.png}-{t.condition}-{t.mode.lower()}.png"
                try:
                    write_png(t, path)
                    text += f"\n\nPlot: `{path}`"
                except ImportError:
                    log("plot skipped: matplotlib is not installed")
            parts.append(text)
            print(text + "\n", flush=True)

        tables: list[Table] = []
        complete = run_tables(args, log, emit, tables)
    if args.markdown:
        Path(args.markdown).write_text("\n\n".join(parts) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(tables_json(top, tables), indent=1))
    return _status(complete, [t.title for t in tables if not t.ok])
