"""Print the pyfuse benchmark tables: ``python bench/report.py [pyfuse bench options]``.

Runs ``pyfuse.bench.main`` (the ``pyfuse bench`` command) with the standard sizes
(~1k to ~100k nodes, plus the real-width models; both heap conditions and both
modes take about an hour, see ``pyfuse bench --help``). Options are passed on,
and later ones win, e.g.::

    python bench/report.py --sizes small --repeats 1   # a quick smoke run
    python bench/report.py --condition fresh --mode eval --markdown out.md
    python bench/report.py --sizes huge --condition fresh --mode eval
    python bench/report.py --profile                   # where pyfuse's time goes
"""

from __future__ import annotations

import sys

from pyfuse.bench import main as bench_main


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return bench_main(["--sizes", "standard", *args])


if __name__ == "__main__":
    sys.exit(main())
