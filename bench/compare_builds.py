"""Two builds of pyfuse side by side: is the new one slower anywhere?

Each call runs in a fresh process (the "fresh process" heap condition of
``pyfuse bench``): the process builds the ResNet-like workload, collects, and
times one ``fuse`` call (wall and CPU time). Calls alternate between the builds
(and torch's own pass, run by the first build's interpreter), so load drifts hit
all sides alike; the table reports medians and the load average before and after.

    python -m bench.compare_builds OLD_PYTHON NEW_PYTHON [--blocks 5000] [--repeats 5]
    python -m bench.compare_builds OLD_PYTHON NEW_PYTHON --small [--rounds 3]

``--small`` times the test corpus's real architectures instead (41 to 1,600
nodes): one process per side and round, each model traced afresh and fused
``--repeats`` times in it (median kept), rounds alternating between the sides;
the table gives the median over rounds per model and their sum.

Each PYTHON is the interpreter of a venv with that build of pyfuse installed
(e.g. ``/path/to/old-checkout/.venv/bin/python``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# Runs in the child: the workload module moved between versions, so both are tried.
_CHILD = r"""
import gc, json, sys, time, torch
torch.set_num_threads(1)
side, blocks, qat = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
try:
    from pyfuse.bench.workloads import resnet_like
except ImportError:
    from pyfuse._workloads import resnet_like
import importlib
import pyfuse
ref = importlib.import_module("torch.ao.quantization.fx.fuse")  # (the package's `fuse` is the function)
gm = resnet_like(blocks, train=qat)
fn = ref.fuse if side == "reference" else pyfuse.fuse
gc.collect()
w, c = time.perf_counter(), time.process_time()
out = fn(gm, qat)
w, c = time.perf_counter() - w, time.process_time() - c
print(json.dumps({"wall": w, "cpu": c, "nodes": len(out.graph.nodes)}))
"""


# Runs in the child for --small: the corpus file is loaded by path (it needs only torch).
_SMALL_CHILD = r"""
import gc, importlib, importlib.util, json, statistics, sys, time, torch
torch.set_num_threads(1)
side, corpus_path, qat, repeats = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
names = sys.argv[5].split(",")
spec = importlib.util.spec_from_file_location("corpus", corpus_path)
corpus = importlib.util.module_from_spec(spec)
sys.modules["corpus"] = corpus
spec.loader.exec_module(corpus)
import pyfuse
ref = importlib.import_module("torch.ao.quantization.fx.fuse")
fn = ref.fuse if side == "reference" else pyfuse.fuse
out = {}
for name in names:
    model = corpus.MODELS_BY_NAME[name].factory().train(qat)
    times = []
    for rep in range(repeats + 1):  # the first call warms caches up, untimed
        gm = torch.fx.symbolic_trace(model)
        gc.collect()
        t = time.perf_counter()
        fn(gm, qat)
        if rep:
            times.append(time.perf_counter() - t)
    out[name] = [len(gm.graph.nodes), statistics.median(times)]
print(json.dumps(out))
"""


def _run_child(python: str, code: str, *argv: str) -> Any:
    out = subprocess.run(
        [python, "-c", code, *argv],
        cwd=tempfile.gettempdir(),  # not a checkout: `-c` would import its source tree
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _call(python: str, side: str, blocks: int, qat: bool) -> dict[str, float]:
    result: dict[str, float] = _run_child(
        python, _CHILD, side, str(blocks), "1" if qat else "0"
    )
    return result


def _small(sides: dict[str, str], rounds: int, repeats: int) -> None:
    from bench.small_graphs import REAL

    corpus = Path(__file__).resolve().parent.parent / "tests" / "support" / "corpus.py"
    for qat in (False, True):
        load0 = os.getloadavg()[0]
        runs: dict[str, list[dict[str, list[float]]]] = {s: [] for s in sides}
        for rnd in range(rounds):
            for side in list(sides) if rnd % 2 == 0 else list(sides)[::-1]:
                runs[side].append(
                    _run_child(
                        sides[side],
                        _SMALL_CHILD,
                        side,
                        str(corpus),
                        "1" if qat else "0",
                        str(repeats),
                        ",".join(REAL),
                    )
                )
        load1 = os.getloadavg()[0]
        print(
            f"\n{'QAT' if qat else 'eval'}, small real graphs, one process per side and "
            f"round, median of {repeats} calls per process, median over {rounds} rounds; "
            f"load average (1 min) {load0:.2f} before, {load1:.2f} after"
        )
        print(
            "| model | nodes | "
            + " | ".join(f"{s} ms" for s in sides)
            + " | new / old |"
        )
        print("|:--|--:|" + "--:|" * len(sides) + "--:|")
        sums = dict.fromkeys(sides, 0.0)
        for name in REAL:
            med = {s: statistics.median(r[name][1] for r in runs[s]) for s in sides}
            for s in sides:
                sums[s] += med[s]
            nodes = int(runs["new"][0][name][0])
            cells = " | ".join(f"{med[s] * 1e3:.2f}" for s in sides)
            print(f"| {name} | {nodes:,} | {cells} | {med['new'] / med['old']:.2f} |")
        cells = " | ".join(f"{sums[s] * 1e3:.1f}" for s in sides)
        print(f"| **sum** | | {cells} | {sums['new'] / sums['old']:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--blocks", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--small", action="store_true", help="the corpus's real architectures"
    )
    p.add_argument("--rounds", type=int, default=3, help="--small: processes per side")
    args = p.parse_args()
    sides = {"reference": args.old, "old": args.old, "new": args.new}
    if args.small:
        _small(sides, args.rounds, args.repeats)
        return
    for qat in (False, True):
        load0 = os.getloadavg()[0]
        runs: dict[str, list[dict[str, float]]] = {s: [] for s in sides}
        nodes: dict[str, float] = {}
        for rep in range(args.repeats):
            order = list(sides) if rep % 2 == 0 else list(sides)[::-1]
            for side in order:
                r = _call(sides[side], side, args.blocks, qat)
                runs[side].append(r)
                nodes[side] = r["nodes"]
        load1 = os.getloadavg()[0]
        mode = "QAT" if qat else "eval"
        print(
            f"\n{mode}, resnet-like {7 * args.blocks + 2:,} nodes, fresh process per "
            f"call, medians of {args.repeats}; load average (1 min) {load0:.2f} before, "
            f"{load1:.2f} after"
        )
        print("| side | wall s | cpu s | x ref (wall) | nodes after |")
        print("|---|---|---|---|---|")
        ref_wall = statistics.median(r["wall"] for r in runs["reference"])
        for side, rs in runs.items():
            wall = statistics.median(r["wall"] for r in rs)
            cpu = statistics.median(r["cpu"] for r in rs)
            print(
                f"| {side} | {wall:.3f} | {cpu:.3f} | {ref_wall / wall:.2f} "
                f"| {int(nodes[side]):,} |"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
