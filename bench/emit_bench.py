"""Benchmark of the native code emitter against torch.fx's own code generation.

For each graph (the corpus's real architectures traced, pyfuse's fused outputs,
exported and decomposed graphs, a 40-node graph for the fixed per-call cost,
ResNet-like graphs of 10k and 35k nodes traced and 10k built as an aten graph)
it first checks that ``pyfuse.codegen.python_code`` writes FX's text (source,
globals, line map, prologue start) and that ``pyfuse.recompile`` installs the
same code, then times, interleaved in one process (round after round, each side
once per round):

- ``Graph.python_code()`` against ``pyfuse.codegen.python_code``;
- ``GraphModule.recompile()`` against ``pyfuse.recompile``;
- the parts of ``pyfuse.recompile``: the native ``Emitter.emit`` call (reading
  the nodes through the C API, then writing the text), the Python around it
  (``python_code`` minus ``emit``), CPython's ``compile()`` of the source, and
  the rest (linecache entry, ``exec``, installing ``forward`` and ``__call__``).

Ratios of interleaved medians hold up on a loaded machine better than absolute
times do; report absolute times only from a quiet machine.

    .venv/bin/python -m bench.emit_bench [--rounds 7] [--sample 0.005] [--quick]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
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
import torch.fx
from torch import nn
from torch.fx import GraphModule
from torch.fx.graph import _PyTreeCodeGen

import pyfuse
from pyfuse import codegen
from pyfuse.bench.export_workloads import ResNetLike, resnet_like
from tests.support.corpus import MODELS_BY_NAME

REAL = ("resnet50", "mobilenet_v2", "densenet121")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


class Chain(nn.Module):
    """About 40 nodes: the fixed per-call cost dominates."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(9):
            x = torch.relu(self.lin(x)) + x.mean(dim=-1, keepdim=True)
        return x


def workloads(quick: bool) -> Iterator[tuple[str, GraphModule]]:
    """(label, GraphModule) pairs, built one at a time."""
    yield "chain40 traced", torch.fx.symbolic_trace(Chain())
    for name in REAL:
        cm = MODELS_BY_NAME[name]
        traced = torch.fx.symbolic_trace(cm.factory().eval())
        yield f"{name} traced", traced
        yield f"{name} fused", pyfuse.fuse(copy.deepcopy(traced), False)
        if quick and name != REAL[0]:
            continue
        with _quiet():  # (not around a yield: the table is printed meanwhile)
            ep = torch.export.export(cm.factory().eval(), cm.example_inputs_factory())
            exported, decomposed = ep.module(), ep.run_decompositions().module()
        yield f"{name} exported", exported
        yield f"{name} decomposed", decomposed
    if quick:
        return
    yield "resnet-like 10k aten", resnet_like(10_000)
    for blocks in (1_430, 5_000):
        gm = torch.fx.symbolic_trace(ResNetLike(blocks))
        yield f"resnet-like {len(gm.graph.nodes) // 1000}k traced", gm


def check_same(gm: GraphModule) -> None:
    """pyfuse writes and installs FX's code for this graph (else: no timing)."""
    graph = gm.graph
    ref = graph.python_code("self")
    got = codegen.try_python_code(graph, "self")
    if isinstance(got, str):
        raise SystemExit(f"fell back to FX: {got}")
    assert got.src == ref.src, "source differs"
    assert list(got.globals) == list(ref.globals), "globals differ"
    assert all(got.globals[k] is v for k, v in ref.globals.items()), "globals differ"
    assert got._lineno_map == ref._lineno_map, "line map differs"
    assert got._prologue_start == ref._prologue_start, "prologue start differs"
    gm.recompile()
    fx_code, fx_map = gm.code, gm._lineno_map
    pyfuse.recompile(gm)
    assert gm.code == fx_code, "recompile installs other code"
    assert gm._lineno_map == fx_map, "recompile installs another line map"


def _emit_only(gm: GraphModule) -> Callable[[], Any]:
    """The native call python_code makes, alone (same arguments)."""
    graph = gm.graph
    cg = graph._codegen
    info: Any = cg.pytree_info if isinstance(cg, _PyTreeCodeGen) else None
    if info and info.out_spec:
        prefix, suffix = "return pytree.tree_unflatten(", ", self._out_spec)"
    else:
        prefix, suffix = "return ", ""

    def gen_fn_def(free_vars: list[str], ret: str) -> str:
        return str(cg.gen_fn_def(free_vars, ret, expanded_def=False))

    emitter = codegen._get_emitter()
    return lambda: emitter.emit(graph.nodes, "self", prefix, suffix, gen_fn_def)


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(gm: GraphModule, rounds: int, sample: float) -> dict[str, float]:
    """Medians (seconds per call) of each side, interleaved round by round. A
    sample repeats a call until it lasts about `sample` seconds, so a fast call is
    not measured alone right after the collector has walked the heap."""
    graph = gm.graph
    src = codegen.python_code(graph).src
    sides: dict[str, Callable[[], Any]] = {
        "fx_code": lambda: graph.python_code("self"),
        "pf_code": lambda: codegen.python_code(graph),
        "emit": _emit_only(gm),
        "compile": lambda: compile(src, "<bench>", "exec", dont_inherit=True),
        "fx_recompile": gm.recompile,
        "pf_recompile": lambda: pyfuse.recompile(gm),
    }
    reps = {k: max(1, round(sample / max(_timed(fn), 1e-7))) for k, fn in sides.items()}
    times: dict[str, list[float]] = {k: [] for k in sides}
    order = list(sides.items())
    for _ in range(rounds):
        gc.collect()
        order.reverse()  # no side always runs right after the same one
        for key, fn in order:
            n = reps[key]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            times[key].append((time.perf_counter() - start) / n)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small graphs only")
    parser.add_argument(
        "--sample", type=float, default=5e-3, help="seconds per sample (default 5 ms)"
    )
    parser.add_argument("--json", type=Path, help="write the medians here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    head = (
        f"{'graph':<24}{'nodes':>7}{'fx code':>10}{'pf code':>10}{'x':>7}"
        f"{'fx recomp':>11}{'pf recomp':>11}{'x':>6}{'bound':>7}"
        f"  split of pf recompile: emit / py / compile / install"
    )
    print(head)
    print("-" * len(head))
    rows = []
    for label, gm in workloads(args.quick):
        before = sum(codegen.FALLBACKS.values())
        check_same(gm)
        m = measure(gm, args.rounds, args.sample)
        assert sum(codegen.FALLBACKS.values()) == before, "a graph fell back to FX"
        nodes = len(gm.graph.nodes)
        py_part = max(m["pf_code"] - m["emit"], 0.0)
        install = max(m["pf_recompile"] - m["pf_code"] - m["compile"], 0.0)
        total = m["pf_recompile"]
        split = [m["emit"], py_part, m["compile"], install]
        floor = max(total - m["pf_code"], 1e-9)  # recompile were emission free
        print(
            f"{label:<24}{nodes:>7}{m['fx_code'] * 1e3:>9.2f}m{m['pf_code'] * 1e3:>9.2f}m"
            f"{m['fx_code'] / m['pf_code']:>7.1f}"
            f"{m['fx_recompile'] * 1e3:>10.2f}m{total * 1e3:>10.2f}m"
            f"{m['fx_recompile'] / total:>6.2f}{m['fx_recompile'] / floor:>7.2f}  "
            + " / ".join(f"{100 * s / total:.0f}%" for s in split),
            flush=True,
        )
        rows.append({"graph": label, "nodes": nodes, **m})
        del gm
    print(
        "(times in ms, medians of interleaved rounds; x = FX / pyfuse; bound = the"
        " recompile ratio were pyfuse's emission free: compile() and installing)"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
