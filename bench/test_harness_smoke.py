"""Smoke test of ``pyfuse bench`` at tiny sizes: every table fills, every column
has a value, the Markdown renders, outputs are checked against the reference,
and a wrong result fails the run. Times are never asserted (one repeat on a
shared machine means nothing)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.ao.quantization.fx.fuse import fuse as reference_fuse

import pyfuse
from pyfuse.bench import cli, digests, floors, load, realwidth
from pyfuse.bench.cases import Case


def _run(tmp_path: Path, *args: str) -> tuple[int, str, dict[str, Any]]:
    md, js = tmp_path / "out.md", tmp_path / "out.json"
    status = cli.main(
        [
            *args,
            "--repeats",
            "1",
            "--settle",
            "0",
            "-q",
            "--markdown",
            str(md),
            "--json",
            str(js),
        ]
    )
    data = json.loads(js.read_text()) if js.exists() else {}
    return status, md.read_text() if md.exists() else "", data


def _table_rows(text: str, title: str) -> list[list[str]]:
    """The data rows of the Markdown table under the heading ``title``."""
    section = text.split(f"### {title}", 1)[1].split("\n### ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert set(lines[1]) <= set("|:-")
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    assert all(len(r) == len(header) for r in rows)
    return [header, *rows]


def test_fresh_process_tables_fill(tmp_path: Path) -> None:
    status, text, data = _run(
        tmp_path,
        "--condition", "fresh", "--mode", "eval", "--blocks", "resnet=1",
        "--workloads", "resnet,real", "--models", "mobilenet_v2",
    )  # fmt: skip
    assert status == 0, text
    titles = [t["title"] for t in data["tables"]]
    assert titles == [
        "Synthetic workloads, eval, fresh process",
        "Real-width models, eval, fresh process",
    ]
    for t in data["tables"]:
        assert t["load"]["before"] >= 0
        assert t["load"]["after"] is not None
        for row in t["rows"]:
            assert row["errors"] == []
            assert set(row["samples"]) == {"ref", "pyfuse", "lazy", "floors"}
            for side in ("ref", "pyfuse", "lazy"):
                (s,) = row["samples"][side]
                assert s["wall"] > 0
                assert s["cpu"] > 0
                assert s["peak_bytes"] is not None
                assert s["model_bytes"] > 0
            (f,) = row["samples"]["floors"]
            assert f["codegen_floor"] > 0
            assert f["fold_floor"] > 0
            assert row["pairs"] > 0
        header, *rows = _table_rows(text, t["title"])
        assert header[-6:] == [
            "model MiB",
            "ref +MiB",
            "pyfuse +MiB",
            "of which worker MiB",
            "lazy +MiB",
            "check",
        ]
        for r in rows:
            assert "-" not in r, r  # every column filled
            assert r[-1] == "OK"
    real = _table_rows(text, "Real-width models, eval, fresh process")
    assert [r[0] for r in real[1:]] == ["mobilenet_v2"]  # one model: no sum row
    assert real[1][1:3] == ["155", "52"]


def test_heap_tables_fill_both_modes(tmp_path: Path) -> None:
    status, text, data = _run(
        tmp_path,
        "--condition", "heap", "--mode", "both", "--blocks", "resnet=1;mixed=1;onednn=1",
        "--models", "mobilenet_v2,efficientnet_b0", "--heap-copies", "1",
    )  # fmt: skip
    assert status == 0, text
    assert len(data["tables"]) == 4
    for t in data["tables"]:
        header, *rows = _table_rows(text, t["title"])
        assert "ref +MiB" not in header  # memory: fresh condition only
        assert header[-3:] == ["fold floor s", "pyfuse/floors", "check"]
        for r in rows:
            assert "-" not in r, r
            assert r[-1] == "OK"
        if t["title"].startswith("Real"):
            assert rows[-1][0] == "**sum**"
        if t["mode"] == "QAT":
            fold = header.index("fold floor s")
            assert all(r[fold] == "0" for r in rows)  # QAT folds nothing
    assert "Load: 1-min load average" in text
    assert "a smoke run, not a result" in text


def test_wrong_result_fails_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fuse = pyfuse.fuse

    def wrong(*args: Any, **kwargs: Any) -> Any:
        out = real_fuse(*args, **kwargs)
        with torch.no_grad():
            next(out.parameters()).add_(1.0)
        return out

    monkeypatch.setattr(pyfuse, "fuse", wrong)
    status, text, data = _run(
        tmp_path, "--condition", "heap", "--mode", "eval", "--blocks", "resnet=1",
        "--workloads", "resnet",
    )  # fmt: skip
    assert status == 1
    (row,) = data["tables"][0]["rows"]
    assert "pyfuse: state_dict differs from the reference's" in row["errors"]
    assert "WRONG RESULTS" in text
    assert "FAIL" in text


def test_digest_sees_every_difference() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        case = Case("resnet", 1)
        ref = reference_fuse(case.build().gm, False)
        mine = pyfuse.fuse(case.build().gm, False)
    d = digests.digest(ref)
    assert digests.compare_digests("pyfuse", d, digests.digest(mine)) == []
    with torch.no_grad():
        p = next(mine.parameters())
        p.view(-1)[0] = torch.nextafter(p.view(-1)[0], torch.tensor(float("inf")))
    assert digests.compare_digests("pyfuse", d, digests.digest(mine)) == [
        "pyfuse: state_dict differs from the reference's"
    ]
    mine.graph.output(None)  # a second output: code and node count change
    mine.graph.lint()
    errors = digests.compare_digests("pyfuse", d, digests.digest(mine))
    assert "pyfuse: nodes differs from the reference's" in errors


def test_strict_refuses_a_busy_machine(tmp_path: Path) -> None:
    status, _, data = _run(
        tmp_path, "--strict", "--threshold", "-1", "--blocks", "resnet=1",
        "--workloads", "resnet",
    )  # fmt: skip
    assert status == 3
    assert data["tables"] == []


def test_load_marks_busy() -> None:
    assert load.Load(0.5, 1.0, 2, 0.3).busy is False
    busy = load.Load(0.7, 1.0, 2, 0.3)
    assert busy.busy
    assert "BUSY" in busy.describe()


#: parameter counts of torchvision's models (torchvision.models docs)
TORCHVISION_PARAMS = {
    "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872,
    "efficientnet_b0": 5_288_548,
    "densenet121": 7_978_856,
}


@pytest.mark.parametrize("name", sorted(realwidth.MODELS))
def test_real_width_models(name: str) -> None:
    model = realwidth.build_model(name)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]
    gm = torch.fx.symbolic_trace(model)
    assert len(floors.fold_pairs(gm)) > 40
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert model(x).shape == (1, 1000)


def test_profile_split(tmp_path: Path) -> None:
    out = tmp_path / "profile.md"
    status = cli.main(
        ["--profile", "--blocks", "resnet=2", "--workloads", "resnet,real",
         "--models", "mobilenet_v2", "--mode", "eval", "-q", "--markdown", str(out)]
    )  # fmt: skip
    assert status == 0
    text = out.read_text()
    split, heap = text.split("Python heap during one call", 1)
    header, *rows = _table_rows("### x\n" + split, "x")
    assert header == [
        "workload", "side", "wall s (unprofiled)", "profiled s", "codegen",
        "text s", "compile s", "weight fold", "rest",
    ]  # fmt: skip
    assert [r[0] for r in rows] == ["resnet-16", "mobilenet_v2"]
    for r in rows:
        assert all(float(c.split()[0]) > 0 for c in r[2:]), r
    heap_header, *heap_rows = _table_rows("### x\n" + heap, "x")
    assert heap_header[:4] == ["workload", "side", "peak MiB", "kept MiB"]
    assert [r[:2] for r in heap_rows] == [
        ["resnet-16", "ref"],
        ["resnet-16", "pyfuse"],
        ["mobilenet_v2", "ref"],
        ["mobilenet_v2", "pyfuse"],
    ]
    for r in heap_rows:
        assert float(r[2]) >= float(r[3]) >= 0, r  # the peak includes what is kept
        assert r[4], r
