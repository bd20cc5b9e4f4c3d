"""The export flow's benchmark as a script: ``pyfuse bench --flow pt2e``
(:mod:`pyfuse.bench.export_flow`) with its JSON reshaped to a fold list and a
prepare_pt2e list. Run it on a quiet machine:

    .venv/bin/python bench/export_bench.py [any pyfuse bench --flow pt2e option]
    .venv/bin/python bench/export_bench.py --quick     # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from pyfuse.bench import main as bench_main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--json", type=Path, help="write {fold: [...], prepare_pt2e: [...]}"
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args, rest = ap.parse_known_args(argv)
    if args.quick:
        rest += ["--fold-sizes", "500,2000", "--e2e-sizes", "300", "--repeats", "1"]
        rest += ["--settle", "0"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        status = bench_main(["--flow", "pt2e", "--json", str(out), *rest])
        tables = json.loads(out.read_text())["tables"] if out.exists() else []
    if args.json:
        rows = {t["kind"]: t["rows"] for t in tables}
        reshaped = {
            "fold": rows.get("fold", []),
            "prepare_pt2e": rows.get("prepare", []),
        }
        args.json.write_text(json.dumps(reshaped, indent=2) + "\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
