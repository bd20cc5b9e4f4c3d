"""``pyfuse bench``: benchmark pyfuse against the reference fusion pass.

:mod:`~pyfuse.bench.workloads` (and :mod:`~pyfuse.bench.specs`) build the
synthetic inputs and :mod:`~pyfuse.bench.realwidth` the real-width models;
:mod:`~pyfuse.bench.cases` names them and the fusion call of each side.
:mod:`~pyfuse.bench.fresh` (a fresh process per call, the child protocol) and
:mod:`~pyfuse.bench.heap` (one process with a large live heap) measure them into
:mod:`~pyfuse.bench.samples`, with the :mod:`~pyfuse.bench.floors`, the
resident-set probes of :mod:`~pyfuse.bench.memory` and the output checks of
:mod:`~pyfuse.bench.digests`; :mod:`~pyfuse.bench.load` records the load average
around each table, :mod:`~pyfuse.bench.harness` runs the FX tables and
:mod:`~pyfuse.bench.tables` prints them; :mod:`~pyfuse.bench.profile` splits
single calls by cProfile. The export flow's tables (``--flow pt2e``) are
:mod:`~pyfuse.bench.export_flow`, on the graphs of
:mod:`~pyfuse.bench.export_workloads`, printed by
:mod:`~pyfuse.bench.export_tables`. :mod:`~pyfuse.bench.cli` is the command
line, :func:`main` its entry point.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pyfuse bench``; returns the exit status."""
    from .cli import main as cli_main

    return cli_main(argv)
