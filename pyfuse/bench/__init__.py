"""``pyfuse bench``: benchmark pyfuse against the reference fusion pass.

:mod:`~pyfuse.bench.workloads` (and :mod:`~pyfuse.bench.specs`) build the
synthetic inputs, :mod:`~pyfuse.bench.harness` times both passes on them and
checks every output, :mod:`~pyfuse.bench.tables` prints the tables and plots.
:func:`main` is the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from .workloads import SIZE_SETS

    p = argparse.ArgumentParser(
        prog="pyfuse bench",
        description="Time pyfuse.fuse against torch.ao.quantization.fx.fuse.fuse.",
    )
    p.add_argument(
        "--sizes",
        choices=sorted(SIZE_SETS),
        default="standard",
        help="small: a smoke test; standard: ~1k-100k nodes (a few minutes); "
        "huge: 1M nodes (pyfuse, plus the reference once unless it times out)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs per side (median reported); default 5/3/1 for "
        "small/standard/huge",
    )
    p.add_argument("--png", default="pyfuse-bench.png", help="plot file ('' = none)")
    p.add_argument("--qat", action="store_true", help="train-mode models, is_qat=True")
    p.add_argument(
        "--gc",
        choices=["on", "off"],
        default="on",
        help="on (default): gc left enabled, collected before each timed call; "
        "off: gc disabled during each timed call (both sides)",
    )
    p.add_argument(
        "--workloads",
        default="",
        help="comma-separated subset of resnet,mixed,onednn (default: all)",
    )
    p.add_argument(
        "--ref-timeout",
        type=float,
        default=None,
        help="stop a reference run after this many seconds and mark it skipped "
        "(default: none; 900 for --sizes huge)",
    )
    p.add_argument("--json", default="", help="also write the raw results here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pyfuse bench``; returns the exit status."""
    from .harness import default_repeats, log_to_stderr, run
    from .tables import format_tables, write_png

    args = _parser().parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        print("--repeats must be >= 1", file=sys.stderr)
        return 2
    kinds = [k for k in args.workloads.split(",") if k]
    with warnings.catch_warnings():
        # torch.ao.quantization's deprecation notices
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        rows = run(
            args.sizes,
            repeats=args.repeats,
            qat=args.qat,
            gc_off=args.gc == "off",
            kinds=kinds or None,
            ref_timeout=args.ref_timeout,
            log=(lambda _msg: None) if args.quiet else log_to_stderr,
        )
    import torch

    gc_note = (
        "gc disabled during timed calls"
        if args.gc == "off"
        else "gc enabled, collected before each timed call"
    )
    header = (
        f"pyfuse bench --sizes {args.sizes}{' --qat' if args.qat else ''}: "
        f"torch {torch.__version__}, Python {sys.version.split()[0]}, "
        f"median of {args.repeats or default_repeats(args.sizes)} repeats "
        f"(interleaved, fresh input each run), {gc_note}"
    )
    print(header)
    print()
    print(format_tables(rows))
    if args.png:
        try:
            write_png(rows, args.png, f"pyfuse vs reference fusion ({args.sizes})")
            print(f"\nplot: {args.png}")
        except ImportError:
            print("\nplot skipped: matplotlib is not installed", file=sys.stderr)
    if args.json:
        with Path(args.json).open("w") as fh:
            json.dump(
                {
                    "header": header,
                    "rows": [
                        {
                            **asdict(r),
                            "speedup": r.speedup,
                            "lazy_speedup": r.lazy_speedup,
                            "floor_ratio": r.floor_ratio,
                            "match_speedup": r.match_speedup,
                        }
                        for r in rows
                    ],
                },
                fh,
                indent=1,
            )
    ok = all(not r.errors for r in rows)
    return 0 if ok else 1
