"""The FX flow's tables of ``pyfuse bench``: which cases each table holds, and
measuring them in their condition (:mod:`~pyfuse.bench.fresh` or
:mod:`~pyfuse.bench.heap`) between two load readings
(:mod:`~pyfuse.bench.load`); a table started on a busy machine is marked BUSY,
or refused with ``--strict``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from . import load as L
from . import workloads as W
from .cases import Case
from .fresh import measure_fresh
from .heap import measure_heap
from .samples import Samples
from .tables import Table

__all__ = ["LEGEND", "SYNTHETIC", "block_sizes", "cases", "parse_blocks", "run_tables"]

SYNTHETIC = ("resnet", "mixed", "onednn", "huge")
LEGEND = (
    "Columns: medians; *speedup* = reference wall / pyfuse wall; *lazy* = "
    "`pyfuse.fuse(..., lazy=True)` (code generated on first use); *codegen floor* = "
    "`recompile()` of pyfuse's output; *fold floor* = torch's `fuse_conv_bn_weights` "
    "/ `fuse_linear_bn_weights` over the model's conv/linear+BN pairs on the same "
    "tensors (0 in QAT: nothing is folded); *pyfuse/floors* = pyfuse wall / (codegen "
    "floor + fold floor) (below 1 where pyfuse's batched folding of many small pairs "
    "beats torch's one pair at a time); *model MiB* = RSS of the built/traced model; "
    "*+MiB* = peak RSS during the call over the RSS before it (fresh process per "
    "side); pyfuse's includes the whole peak RSS of its compile worker process "
    "(graphs of 4,000+ output nodes), *of which worker*, a bound: the two peaks need "
    "not coincide; *check* = code, state_dict (bits) and module tree equal to the "
    "reference's (and the expected fusion and node counts)."
)


def parse_blocks(text: str) -> dict[str, list[int]]:
    """``resnet=2,10;mixed=1`` -> {"resnet": [2, 10], "mixed": [1]}."""
    out: dict[str, list[int]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        kind, sep, ns = part.partition("=")
        if not sep or kind not in SYNTHETIC:
            raise ValueError(
                f"--blocks: expected KIND=N,N;KIND=N with KIND in {SYNTHETIC}, got {part!r}"
            )
        out[kind] = [int(n) for n in ns.split(",") if n]
    return out


def block_sizes(args: argparse.Namespace) -> dict[str, list[int]]:
    if args.blocks:
        return parse_blocks(args.blocks)
    return W.size_set(args.sizes)


def cases(
    sizes: dict[str, list[int]], workloads: list[str], models: list[str], qat: bool
) -> list[tuple[str, list[Case]]]:
    """(group title, cases) for one mode: the synthetic group (every kind of
    ``sizes``, or those of them in ``workloads`` if it names any) and the
    real-width one (if ``workloads`` is empty or names ``real``)."""
    groups: list[tuple[str, list[Case]]] = []
    synth = [
        Case(kind, n, qat=qat)
        for kind, ns in sizes.items()
        if (not workloads or kind in workloads) and not (kind == "huge" and qat)
        for n in ns
    ]
    if synth:
        groups.append(("Synthetic workloads", synth))
    if (not workloads or "real" in workloads) and models:
        real = [Case("real", model=m, qat=qat) for m in models]
        groups.append(("Real-width models", real))
    return groups


def run_tables(
    args: argparse.Namespace,
    log: Callable[[str], None],
    emit: Callable[[Table], None],
    tables: list[Table],
) -> bool:
    """Measure every table the arguments ask for into ``tables``; ``False`` if
    ``--strict`` refused a table on a busy machine (the later ones are not
    measured)."""
    sizes = block_sizes(args)
    workloads = [w for w in args.workloads.split(",") if w]
    models = [m for m in args.models.split(",") if m]
    modes = {"eval": [False], "qat": [True], "both": [False, True]}[args.mode]
    conditions = ["fresh", "heap"] if args.condition == "both" else [args.condition]
    for condition in conditions:
        for qat in modes:
            mode = "QAT" if qat else "eval"
            for group, group_cases in cases(sizes, workloads, models, qat):
                title = f"{group}, {mode}, {'fresh process' if condition == 'fresh' else 'large heap'}"
                log(f"== {title}")
                with L.LoadCheck(args.threshold, wait=args.settle, log=log) as load:
                    if args.strict and load.busy:
                        log(f"refused: {load.describe()}")
                        return False
                    rows: list[Samples] = []
                    for case in group_cases:
                        log(f"{case.label}")
                        if condition == "fresh":
                            rows.append(
                                measure_fresh(
                                    case,
                                    args.repeats,
                                    gc_off=args.gc == "off",
                                    warm=args.warmup,
                                    ref_timeout=args.ref_timeout,
                                    threads=args.threads,
                                    log=log,
                                )
                            )
                        else:
                            rows.append(
                                measure_heap(
                                    case,
                                    args.repeats,
                                    copies=args.heap_copies,
                                    gc_off=args.gc == "off",
                                    log=log,
                                )
                            )
                table = Table(
                    title,
                    condition,
                    mode,
                    rows,
                    load,
                    args.repeats,
                    command=_command(args, condition, qat, group),
                    copies=args.heap_copies,
                    warm=args.warmup,
                    total=group.startswith("Real"),
                )
                tables.append(table)
                emit(table)
    return True


def _command(args: argparse.Namespace, condition: str, qat: bool, group: str) -> str:
    """The command that measures this one table again."""
    parts = [
        "pyfuse bench",
        f"--condition {condition}",
        f"--mode {'qat' if qat else 'eval'}",
    ]
    if group.startswith("Real"):
        parts += ["--workloads real", f"--models {args.models}"]
    else:
        kinds = ",".join(w for w in args.workloads.split(",") if w and w != "real")
        parts.append(
            f"--blocks '{args.blocks}'" if args.blocks else f"--sizes {args.sizes}"
        )
        parts.append(
            f"--workloads {kinds}"
            if kinds
            else "--workloads " + ",".join(block_sizes(args))
        )
    parts.append(f"--repeats {args.repeats}")
    if condition == "fresh" and args.warmup:
        parts.append("--warmup")
    if condition == "fresh" and args.ref_timeout:
        parts.append(f"--ref-timeout {args.ref_timeout:g}")
    if condition == "heap" and args.heap_copies != 2:
        parts.append(f"--heap-copies {args.heap_copies}")
    if args.gc == "off":
        parts.append("--gc off")
    if args.threads:
        parts.append(f"--threads {args.threads}")
    return " ".join(parts)
