"""The ``pyfuse bench`` command (pyfuse.bench): runs and checks, on tiny sizes."""

from __future__ import annotations

import json

from pyfuse.__main__ import main


def test_cli_bench_checks_every_output(tmp_path, capsys):
    """`pyfuse bench` (the smallest size set, one repeat): both passes run on each
    workload, every output is checked (the table's last column), raw results saved."""
    out = tmp_path / "bench.json"
    status = main(
        ["bench", "--sizes", "small", "--repeats", "1", "--workloads", "mixed",
         "--png", "", "-q", "--json", str(out)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert status == 0, printed
    rows = json.loads(out.read_text())["rows"]
    assert [row["workload"] for row in rows] == ["mixed-114", "mixed-1010"]
    assert all(row["errors"] == [] and row["fusions"] > 0 for row in rows)
    assert "| mixed-114 " in printed
