"""The export benchmark runs and its self-checks pass (a smoke run at tiny sizes;
no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "export_bench.py"


def test_export_bench_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("export_bench", BENCH)
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["identical_to_torchao"] for r in result["fold"]] == [True, True]
    assert all(r["folds"] == 2 * ((r["nodes"] - 2) // 19) for r in result["fold"])
    assert result["prepare_pt2e"][0]["identical_to_torchao"] is True
    assert "| nodes | folds |" in capsys.readouterr().out
