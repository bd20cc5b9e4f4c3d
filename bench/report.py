"""Print the pyfuse benchmark table: ``python bench/report.py [pyfuse bench options]``.

Runs ``pyfuse.bench.main`` (the ``pyfuse bench`` command) with the standard sizes
(~1k to ~100k nodes; a few minutes, most of it in the reference at 100k nodes).
Options are passed on, and later ones win, e.g.::

    python bench/report.py --sizes small          # a quick smoke run
    python bench/report.py --repeats 5 --png bench/pyfuse-bench.png
    python bench/report.py --sizes huge           # 1M nodes (slow to build)
    python bench/report.py --qat                  # train-mode models, is_qat=True
"""

from __future__ import annotations

import sys

from pyfuse.bench import main as bench_main


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return bench_main(["--sizes", "standard", *args])


if __name__ == "__main__":
    sys.exit(main())
