"""Benchmark of the export flow's BatchNorm fold: torchao's pt2e folds against
pyfuse.pt2e, side by side in one process, on ResNet-like aten graphs (built with
the Graph API, see pyfuse/bench/export_workloads.py) from 1k to 200k nodes; then
``prepare_pt2e`` end to end with and without ``patch_torchao()``.

Every result is checked before it is reported: pyfuse's folded graph has torchao's
code and outputs (torch.equal) wherever torchao ran, and outputs close to the
unfolded graph's. Run it on a quiet machine:

    .venv/bin/python bench/export_bench.py [--sizes 1000,10000,42000,200000]
        [--torchao-max-nodes 10500] [--e2e-sizes 1000,4000,10000] [--json out.json]
    .venv/bin/python bench/export_bench.py --quick     # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.fx import GraphModule

from pyfuse import pt2e
from pyfuse.bench.export_workloads import ResNetLike, resnet_like


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _torchao() -> Any:
    with _quiet():
        from torchao.quantization.pt2e import (  # type: ignore[import-untyped]
            quantize_pt2e,
            utils,
        )
    return utils, quantize_pt2e


def _timed(fn: Callable[[GraphModule], Any], gm: GraphModule) -> float:
    gc.collect()
    start = time.perf_counter()
    fn(gm)
    return time.perf_counter() - start


def _out(gm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        result: torch.Tensor = gm(x)
    return result


def fold_row(
    nodes: int, repeats: int, run_torchao: bool, verify: bool
) -> dict[str, Any]:
    """One size: pyfuse (median of `repeats` fresh graphs) and torchao (once)."""
    utils, _ = _torchao()

    def ao(gm: GraphModule) -> None:
        with _quiet():
            utils._fuse_conv_bn_(gm)
            utils._fuse_linear_bn_(gm)

    folds: list[int] = []

    def ours(gm: GraphModule) -> None:
        folds.append(
            len(pt2e.fuse_conv_bn_(gm).fused) + len(pt2e.fuse_linear_bn_(gm).fused)
        )

    row: dict[str, Any] = {"nodes": len(resnet_like(nodes).graph.nodes)}
    times = []
    folded = resnet_like(nodes)
    for _ in range(repeats):
        folded = resnet_like(nodes)
        times.append(_timed(ours, folded))
    row["pyfuse_s"] = statistics.median(times)
    row["pyfuse_us_per_node"] = row["pyfuse_s"] / row["nodes"] * 1e6
    row["folds"] = folds[-1]
    ref = None
    if run_torchao:
        ref = resnet_like(nodes)
        row["torchao_s"] = _timed(ao, ref)
        row["ratio"] = row["torchao_s"] / row["pyfuse_s"]
    if verify:
        x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        unfolded = _out(resnet_like(nodes), x)
        got = _out(folded, x)
        scale = 1.0 + float(unfolded.abs().max())
        row["max_rel_diff_vs_unfolded"] = float((got - unfolded).abs().max()) / scale
        assert row["max_rel_diff_vs_unfolded"] < 1e-4, row
        assert not any(
            n.target is torch.ops.aten.batch_norm.default for n in folded.graph.nodes
        )
        if ref is not None:
            assert ref.code == folded.code, "pyfuse's code differs from torchao's"
            assert torch.equal(_out(ref, x), got), (
                "pyfuse's output differs from torchao's"
            )
            row["identical_to_torchao"] = True
    return row


def e2e_row(blocks: int, verify: bool) -> dict[str, Any]:
    """prepare_pt2e (X86InductorQuantizer) on an exported ResNetLike, with
    torchao's folds and with pyfuse's."""
    _, quantize_pt2e = _torchao()
    with _quiet():
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (  # type: ignore[import-untyped]
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )
    model = ResNetLike(blocks).eval()
    x = torch.randn(1, 4, 8, 8)
    ep = torch.export.export(model, (x,))

    def prepare() -> tuple[GraphModule, float]:
        gm = ep.module()
        quantizer = X86InductorQuantizer().set_global(
            get_default_x86_inductor_quantization_config()
        )
        gc.collect()
        start = time.perf_counter()
        with _quiet():
            prepared = quantize_pt2e.prepare_pt2e(gm, quantizer)
        return prepared, time.perf_counter() - start

    row: dict[str, Any] = {"nodes": len(ep.module().graph.nodes)}
    theirs, row["torchao_s"] = prepare()
    with pt2e.patched_torchao():
        ours, row["patched_s"] = prepare()
    row["ratio"] = row["torchao_s"] / row["patched_s"]
    if verify:
        assert ours.code == theirs.code, "prepare_pt2e code differs with the patch"
        assert torch.equal(_out(ours, x), _out(theirs, x))
        row["identical_to_torchao"] = True
    return row


def _table(title: str, rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    def cell(row: dict[str, Any], key: str) -> str:
        v = row.get(key)
        if v is None:
            return "not run"
        if isinstance(v, float):
            return f"{v:.3g}" if key != "ratio" else f"{v:.0f}x"
        return str(v)

    lines = [
        f"### {title}",
        "",
        "| " + " | ".join(h for _, h in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(cell(r, k) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,4000,10000,42000,100000,200000")
    ap.add_argument(
        "--torchao-max-nodes",
        type=int,
        default=10500,
        help="torchao is quadratic: only run it up to this size",
    )
    ap.add_argument(
        "--e2e-sizes",
        default="1000,4000,10000",
        help="approximate node counts for the prepare_pt2e runs ('' skips)",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--verify-max-nodes", type=int, default=50000)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.e2e_sizes, args.repeats = "500,2000", "300", 1
    torch.set_num_threads(1)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    fold_rows = [
        fold_row(
            n, args.repeats, n <= args.torchao_max_nodes, n <= args.verify_max_nodes
        )
        for n in sizes
    ]
    print(
        _table(
            "BatchNorm fold on ResNet-like aten graphs (_fuse_conv_bn_ + "
            "_fuse_linear_bn_)",
            fold_rows,
            [
                ("nodes", "nodes"),
                ("folds", "folds"),
                ("torchao_s", "torchao (s)"),
                ("pyfuse_s", "pyfuse (s)"),
                ("ratio", "speed-up"),
                ("pyfuse_us_per_node", "pyfuse (us/node)"),
            ],
        )
    )
    e2e_rows = []
    for n in [int(s) for s in args.e2e_sizes.split(",") if s]:
        e2e_rows.append(e2e_row(max(1, n // 16), verify=True))
    if e2e_rows:
        print()
        print(
            _table(
                "prepare_pt2e (X86InductorQuantizer) end to end",
                e2e_rows,
                [
                    ("nodes", "nodes"),
                    ("torchao_s", "torchao folds (s)"),
                    ("patched_s", "with patch_torchao() (s)"),
                    ("ratio", "speed-up"),
                ],
            )
        )
    if args.json:
        args.json.write_text(
            json.dumps({"fold": fold_rows, "prepare_pt2e": e2e_rows}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
