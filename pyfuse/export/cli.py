"""``pyfuse fold PKG.MODULE:FACTORY --input-shape 1,3,224,224 [--out model.pt2]``:
export a model in eval mode, fold its BatchNorms, save the program, and print
what was folded and what was not (with reasons).

``add_fold_parser(subparsers)`` registers the command; ``run_fold(args)`` runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["add_fold_parser", "run_fold"]


class FoldError(ValueError):
    """Bad command-line input for ``pyfuse fold``."""


def add_fold_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``fold`` command to an argparse subparsers object."""
    p: argparse.ArgumentParser = sub.add_parser(
        "fold", help="export a model, fold its BatchNorms, save the ExportedProgram"
    )
    p.add_argument(
        "model",
        help="MODULE:FACTORY returning an nn.Module "
        "(MODULE from the current directory, then the installed packages)",
    )
    p.add_argument("--app-dir", metavar="DIR", help="import MODULE from DIR instead")
    p.add_argument(
        "--input-shape",
        required=True,
        help="comma-separated shape of the example input, e.g. 1,3,224,224",
    )
    p.add_argument(
        "--out", help="save the folded program here (torch.export.save, .pt2)"
    )
    p.add_argument(
        "--decompose",
        action="store_true",
        help="run_decompositions() before folding (core aten ops)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise FoldError(
            f"--input-shape must be comma-separated integers, got {text!r}"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise FoldError(f"--input-shape must be positive integers, got {text!r}")
    return shape


def run_fold(args: argparse.Namespace, load: Callable[[str], Any]) -> int:
    """Run ``pyfuse fold``; 0 on success, 2 on bad input. `load` turns the
    MODULE:FACTORY argument into the model (the CLI's importer)."""
    try:
        return _run(args, load)
    except FoldError as e:
        print(f"pyfuse fold: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, load: Callable[[str], Any]) -> int:
    import torch

    from .program import fold_program

    model = load(args.model)
    if not isinstance(model, torch.nn.Module):
        raise FoldError(
            f"{args.model} returned {type(model).__name__}, not an nn.Module"
        )
    model.eval()
    x = torch.randn(
        _shape(args.input_shape), generator=torch.Generator().manual_seed(0)
    )
    ep = torch.export.export(model, (x,))
    if args.decompose:
        with warnings.catch_warnings():  # torch's own pytree deprecation notice
            warnings.simplefilter("ignore", FutureWarning)
            ep = ep.run_decompositions()
    start = time.perf_counter()
    folded, report = fold_program(ep)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        diff = max(
            float((a - b).abs().max())
            for a, b in zip(
                torch.utils._pytree.tree_leaves(ep.module()(x)),
                torch.utils._pytree.tree_leaves(folded.module()(x)),
                strict=True,
            )
        )
    if args.out:
        torch.export.save(folded, args.out)
    nodes = (len(ep.graph.nodes), len(folded.graph.nodes))
    if args.json:
        print(
            json.dumps(
                {
                    "nodes_before": nodes[0],
                    "nodes_after": nodes[1],
                    "fold_seconds": seconds,
                    "max_abs_difference": diff,
                    "folded": [vars(f) for f in report.fused],
                    "not_folded": [vars(s) for s in report.skipped],
                    "out": args.out,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"folded {len(report.fused)} BatchNorm(s) in {seconds * 1e3:.1f} ms; "
        f"{nodes[0]} -> {nodes[1]} nodes; max |difference| {diff:.3g}"
    )
    for f in report.fused:
        print(f"  {f.pattern:<44} {', '.join(f.nodes):<40} -> {', '.join(f.modules)}")
    for s in report.skipped:
        print(f"  not folded: {s.pattern} at {', '.join(s.nodes)}: {s.reason}")
    if args.out:
        print(f"saved to {args.out} (torch.export.save)")
    return 0
