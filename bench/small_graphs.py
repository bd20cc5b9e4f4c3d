"""T7: per-call cost on small real graphs (the test corpus's real architectures).

Compilers call a fusion pass on many small graphs, so fixed per-call overhead
matters. For each model: trace it once per run, fuse with the reference and with
pyfuse (interleaved, fresh trace each run, one torch thread), take medians, and
sum them over the models.

    python -m bench.small_graphs [--repeats 7] [--qat]     (from the repository root)
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

import torch
import torch.ao.quantization.backend_config.utils  # (the builders need it loaded)

import pyfuse
from tests.support.contract import reference_fuse
from tests.support.corpus import MODELS_BY_NAME

#: the corpus's real architectures (41 to 1,600 nodes)
REAL = ("resnet18", "resnet34", "resnet50", "resnet152", "mobilenet_v2", "efficientnet",
        "vgg16", "vgg16_bn", "densenet121", "deep_chain")


def traced(name: str, qat: bool) -> torch.fx.GraphModule:
    model = MODELS_BY_NAME[name].factory()
    model.train(qat)
    return torch.fx.symbolic_trace(model)


def run(repeats: int, qat: bool) -> list[tuple[str, int, float, float]]:
    """(model, nodes, reference s, pyfuse s) medians per model."""
    torch.set_num_threads(1)
    sides: dict[str, Any] = {"reference": reference_fuse, "pyfuse": pyfuse.fuse}
    rows = []
    for name in REAL:
        nodes = len(traced(name, qat).graph.nodes)
        times: dict[str, list[float]] = {k: [] for k in sides}
        for rep in range(repeats + 1):  # the first round warms caches up, untimed
            for side in (list(sides) if rep % 2 else list(sides)[::-1]):
                gm = traced(name, qat)
                gc.collect()
                t = time.perf_counter()
                sides[side](gm, qat)
                if rep:
                    times[side].append(time.perf_counter() - t)
        rows.append((name, nodes, statistics.median(times["reference"]),
                     statistics.median(times["pyfuse"])))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--qat", action="store_true")
    args = ap.parse_args()
    rows = run(args.repeats, args.qat)
    print(f"T7 small graphs ({'QAT' if args.qat else 'eval'}), median of {args.repeats}, "
          f"torch {torch.__version__}, 1 torch thread")
    print("| model | nodes | reference ms | pyfuse ms | speedup |")
    print("|:--|--:|--:|--:|--:|")
    for name, nodes, r, p in rows:
        print(f"| {name} | {nodes:,} | {r * 1e3:.2f} | {p * 1e3:.2f} | {r / p:.1f}x |")
    ref, mine = sum(r[2] for r in rows), sum(r[3] for r in rows)
    print(f"| **sum** | | {ref * 1e3:.1f} | {mine * 1e3:.1f} | **{ref / mine:.1f}x** |")


if __name__ == "__main__":
    main()
