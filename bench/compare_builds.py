"""Two builds of pyfuse side by side: is the new one slower anywhere?

Each call runs in a fresh process (the "fresh process" heap condition of
``pyfuse bench``): the process builds the ResNet-like workload, collects, and
times one ``fuse`` call (wall and CPU time). Calls alternate between the builds
(and torch's own pass, run by the first build's interpreter), so load drifts hit
all sides alike; the table reports medians and the load average before and after.

    python -m bench.compare_builds OLD_PYTHON NEW_PYTHON [--blocks 5000] [--repeats 5]

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


def _call(python: str, side: str, blocks: int, qat: bool) -> dict[str, float]:
    out = subprocess.run(
        [python, "-c", _CHILD, side, str(blocks), "1" if qat else "0"],
        cwd=tempfile.gettempdir(),  # not a checkout: `-c` would import its source tree
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--blocks", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    sides = {"reference": args.old, "old": args.old, "new": args.new}
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
