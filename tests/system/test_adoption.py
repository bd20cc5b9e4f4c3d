"""explain, the drop-in switch and the CLI."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
import torch.fx
from torch import nn

import pyfuse
from pyfuse.models import default_model

pytestmark = pytest.mark.quick  # (part of the quick suite: ./dev pyvers)


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)
        self.c2 = nn.Conv2d(3, 3, 1)
        self.b2 = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c2(x)
        return self.bn(self.conv(x)) + self.conv(x) + self.b2(y) + y


def test_explain_reports_fusions_and_near_misses_and_changes_nothing():
    gm = torch.fx.symbolic_trace(Shared().eval())
    code = gm.code
    ex = pyfuse.explain(gm)
    assert gm.code == code
    assert [type(m).__name__ for m in gm.modules()].count("BatchNorm2d") == 2
    reasons = " | ".join(s.reason for s in ex.near_misses)
    assert "c2 has 2 users" in reasons
    assert "called at 2 sites" in reasons
    assert ex.fused == []
    text = str(ex)
    assert "near miss" in text
    assert "Conv2d -> BatchNorm2d" in text


class ConvAlsoReadByAdd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.relu(self.bn(y)) + y


def test_a_chain_partly_fused_by_a_shorter_pattern_is_a_near_miss():
    ex = pyfuse.explain(torch.fx.symbolic_trace(ConvAlsoReadByAdd().eval()))
    assert [(f.pattern, f.nodes) for f in ex.fused] == [
        ("BatchNorm2d -> ReLU", ("bn", "relu"))
    ]
    assert [(m.pattern, m.nodes, m.reason) for m in ex.near_misses] == [
        ("Conv2d -> BatchNorm2d -> ReLU", ("conv", "bn", "relu"), "conv has 2 users")
    ]
    assert "conv has 2 users" in ex.to_html()


def test_explain_matches_what_fuse_does():
    ex = pyfuse.explain(default_model())
    _, report = pyfuse.fuse(
        torch.fx.symbolic_trace(default_model()), False, return_report=True
    )
    assert ex.fused == report.fused
    assert len(ex.fused) == 20
    assert ex.fused[0].pattern == "Conv2d -> BatchNorm2d -> ReLU"


def test_patch_torch_routes_fuse_fx_through_pyfuse_and_unpatches():
    from torch.ao.quantization import quantize_fx

    original = quantize_fx.fuse
    model = default_model()
    want = quantize_fx.fuse_fx(copy.deepcopy(model))
    with pyfuse.patched():
        assert quantize_fx.fuse is not original
        got = quantize_fx.fuse_fx(copy.deepcopy(model))
    assert quantize_fx.fuse is original
    assert got.code == want.code
    pyfuse.patch_torch()
    pyfuse.patch_torch()  # idempotent
    pyfuse.unpatch_torch()
    assert quantize_fx.fuse is original


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyfuse", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_explain_json_and_errors(tmp_path):
    r = _cli("explain", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["fused"]) == 20
    r = _cli("fuse", "no_such_module:factory")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "cannot load" in r.stderr
    out = tmp_path / "fused.pt"
    r = _cli("fuse", "pyfuse.models:default_model", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert out.exists()
    assert "fused 20 chains" in r.stdout


def test_import_has_no_side_effects():
    code = (
        "import sys, torch; before = set(sys.modules); import pyfuse; "
        "new = set(sys.modules) - before; "
        "print(sorted(m for m in new if not m.startswith('pyfuse')))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_tests_reference_stays_torch_own_while_torch_is_patched():
    """tests.support.contract pinned torch's functions when it was imported: a
    patch_torch() left in place cannot make the oracle compare pyfuse with itself."""
    from tests.support import contract

    site = sys.modules["torch.ao.quantization.fx.fuse"]
    with pyfuse.patched():
        assert site.fuse is not contract.REFERENCE_FUSE  # torch now runs pyfuse
        assert contract.REFERENCE_FUSE.__module__ == "torch.ao.quantization.fx.fuse"
        # torch's fuse_fx looks `fuse` up when called: refused instead of run
        with pytest.raises(AssertionError, match="not torch's own"):
            contract.reference_fuse_fx(default_model())
    assert site.fuse is contract.REFERENCE_FUSE
