"""The long fuzz run of the export flow: N random exported models, each folded by
torchao and by pyfuse and judged by the oracle; failures are recorded, not
raised, and the figures written as JSON (rewritten every 250 cases).

    nice -n 10 .venv/bin/python -m tests.export.run_fuzz --cases 10000 --seed 1 \\
        --out tests/export/fuzz_long_run.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed

from tests.export.fuzzcheck import check
from tests.export.fuzzmodels import Spec, specs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    stats: Counter[str] = Counter()
    failures: list[dict[str, str]] = []
    seen: set[str] = set()
    start = time.time()

    def dump(done: bool) -> None:
        import torchao

        payload = {
            "command": " ".join(["python -m tests.export.run_fuzz", *sys.argv[1:]]),
            "seed": args.seed,
            "requested_cases": args.cases,
            "finished": done,
            "seconds": round(time.time() - start, 1),
            "versions": {
                "torch": torch.__version__,
                "torchao": torchao.__version__,
                "python": platform.python_version(),
            },
            "divergences": len(failures),
            "stats": dict(sorted(stats.items())),
            "failures": failures[:50],
        }
        args.out.write_text(json.dumps(payload, indent=2) + "\n")

    @hseed(args.seed)
    @settings(
        max_examples=args.cases,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(specs())
    def run(spec: Spec) -> None:
        seen.add(repr(spec))
        stats["distinct_models"] = len(seen)
        try:
            check(spec, stats)
        except Exception:  # noqa: BLE001 (recorded and reported)
            stats["cases"] += 1
            failures.append(
                {"spec": repr(spec), "error": traceback.format_exc()[-2000:]}
            )
        if stats["cases"] % 250 == 0:
            dump(False)

    run()
    dump(True)
    print(json.dumps({"cases": stats["cases"], "divergences": len(failures)}))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
