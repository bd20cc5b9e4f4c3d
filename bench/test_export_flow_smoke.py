"""Smoke test of ``pyfuse bench --flow pt2e`` at tiny sizes: both tables fill
with the load figures, every output is checked against torchao's (or the
unfolded graph's), a wrong fold fails the run without a table of numbers, and a
missing torchao is named. Times are never asserted (one repeat on a shared
machine means nothing)."""

from __future__ import annotations

import json
import operator
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.fx import GraphModule

from pyfuse import pt2e
from pyfuse.bench import cli


def _run(tmp_path: Path, *args: str) -> tuple[int, str, dict[str, Any]]:
    md, js = tmp_path / "out.md", tmp_path / "out.json"
    status = cli.main(
        ["--flow", "pt2e", *args, "--repeats", "1", "--settle", "0", "-q",
         "--markdown", str(md), "--json", str(js)]
    )  # fmt: skip
    data = json.loads(js.read_text()) if js.exists() else {}
    return status, md.read_text() if md.exists() else "", data


def test_both_tables_fill_and_are_checked(tmp_path: Path) -> None:
    status, text, data = _run(
        tmp_path, "--fold-sizes", "200,400", "--torchao-max-nodes", "300",
        "--e2e-sizes", "150",
    )  # fmt: skip
    assert status == 0, text
    assert [t["kind"] for t in data["tables"]] == ["fold", "prepare"]
    fold, prepare = data["tables"]
    for t in data["tables"]:
        assert t["load"]["before"] >= 0
        assert t["load"]["after"] is not None
        assert f"1-min load average {t['load']['before']:.2f} at start" in text
    small, large = fold["rows"]
    assert (small["nodes"], small["folds"]) == (192, 20)  # 10 blocks of 19 nodes
    assert small["identical_to_torchao"] is True
    assert set(small["samples"]) == {"torchao", "pyfuse"}
    assert set(large["samples"]) == {"pyfuse"}  # above --torchao-max-nodes
    assert large["identical_to_torchao"] is False
    assert large["errors"] == []
    for row in [*fold["rows"], *prepare["rows"]]:
        for samples in row["samples"].values():
            (s,) = samples
            assert s["wall"] > 0
            assert s["cpu"] >= 0
    (row,) = prepare["rows"]
    assert row["identical_to_torchao"] is True
    assert set(row["samples"]) == {"torchao", "pyfuse"}
    assert "| pyfuse us/node |" in text.replace("  ", "")
    assert "not run" in text  # torchao's cell above the cap
    assert "torchao runs only up to 300 nodes" in text


def _doubling_first_conv_weight(real: Any) -> Any:
    def mutant(gm: GraphModule) -> Any:
        report = real(gm)
        conv = next(
            n for n in gm.graph.nodes if n.target is torch.ops.aten.conv2d.default
        )
        with torch.no_grad():
            operator.attrgetter(conv.args[1].target)(gm).mul_(2)
        return report

    return mutant


def test_a_wrong_fold_fails_without_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        pt2e, "fuse_conv_bn_", _doubling_first_conv_weight(pt2e.fuse_conv_bn_)
    )
    status, text, data = _run(
        tmp_path, "--fold-sizes", "200,400", "--torchao-max-nodes", "300",
        "--e2e-sizes", "",
    )  # fmt: skip
    assert status == 1
    small, large = data["tables"][0]["rows"]
    assert "pyfuse: state_dict differs from the reference's" in small["errors"]
    assert any("differs from the unfolded graph's" in e for e in large["errors"])
    assert any("differ from torch's fold" in e for e in large["errors"])
    assert "WRONG RESULTS" in text
    assert "| graph" not in text  # no table of numbers


def test_deep_graphs_are_checked_pair_by_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 526 residual blocks: the unfolded output overflows float32, so only the
    # pair-by-pair check (and the fold count) can catch a wrong fold here
    status, text, data = _run(
        tmp_path, "--fold-sizes", "10000", "--torchao-max-nodes", "0",
        "--e2e-sizes", "",
    )  # fmt: skip
    assert status == 0, text
    (row,) = data["tables"][0]["rows"]
    assert any("overflow float32" in n for n in row["notes"])
    monkeypatch.setattr(
        pt2e, "fuse_conv_bn_", _doubling_first_conv_weight(pt2e.fuse_conv_bn_)
    )
    status, text, data = _run(
        tmp_path, "--fold-sizes", "10000", "--torchao-max-nodes", "0",
        "--e2e-sizes", "",
    )  # fmt: skip
    assert status == 1
    (row,) = data["tables"][0]["rows"]
    wrong = "pyfuse: 1 folded tensors differ from torch's fold"
    assert row["errors"] == [f"{wrong} (blocks.0.a.conv.weight, ...)"]


def test_without_torchao_names_the_extra(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "torchao.quantization.pt2e", None)
    status, _, _ = _run(tmp_path, "--fold-sizes", "200", "--e2e-sizes", "")
    assert status == 2
    assert "pip install pyfuse[pt2e]" in capsys.readouterr().err


def test_strict_refuses_a_busy_machine(tmp_path: Path) -> None:
    status, _, data = _run(
        tmp_path, "--strict", "--threshold", "-1", "--fold-sizes", "200",
        "--e2e-sizes", "",
    )  # fmt: skip
    assert status == 3
    assert data["tables"] == []
