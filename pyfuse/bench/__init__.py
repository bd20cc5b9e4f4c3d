"""``pyfuse bench``: benchmark pyfuse against the reference fusion pass.

:mod:`~pyfuse.bench.workloads` (and :mod:`~pyfuse.bench.specs`) build the
synthetic inputs and :mod:`~pyfuse.bench.realwidth` the real-width models;
:mod:`~pyfuse.bench.runner` measures them (fresh process per call, or one large
heap; floors, peak memory, output checks), :mod:`~pyfuse.bench.load` records
the load average around each table, :mod:`~pyfuse.bench.harness` runs the tables
and :mod:`~pyfuse.bench.tables` prints them; :mod:`~pyfuse.bench.profile` splits
single calls by cProfile. :func:`main` is the command line.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pyfuse bench``; returns the exit status."""
    from .harness import main as harness_main

    return harness_main(argv)
