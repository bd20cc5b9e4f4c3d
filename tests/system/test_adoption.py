"""explain, the drop-in switch and the CLI."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import torch
import torch.fx
from torch import nn

import pyfuse
from pyfuse.models import default_model


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
    assert "near miss" in text and "Conv2d -> BatchNorm2d" in text


def test_explain_matches_what_fuse_does():
    ex = pyfuse.explain(default_model())
    _, report = pyfuse.fuse(torch.fx.symbolic_trace(default_model()), False, return_report=True)
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
        [sys.executable, "-m", "pyfuse", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_explain_json_and_errors(tmp_path):
    r = _cli("explain", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["fused"]) == 20
    r = _cli("fuse", "no_such_module:factory")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "cannot load" in r.stderr
    out = tmp_path / "fused.pt"
    r = _cli("fuse", "pyfuse.models:default_model", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert out.exists() and "fused 20 chains" in r.stdout


def test_import_has_no_side_effects():
    code = (
        "import sys, torch; before = set(sys.modules); import pyfuse; "
        "new = set(sys.modules) - before; "
        "print(sorted(m for m in new if not m.startswith('pyfuse')))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
