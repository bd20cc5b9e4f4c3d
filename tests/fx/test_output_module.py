"""The output GraphModule is built without FX writing code it then throws away:
its only code is the fused graph's, written once."""

from __future__ import annotations

import torch
import torch.fx

import pyfuse
from pyfuse.bench.workloads import resnet_like
from tests.codegen.compare import module_code_is_fxs
from tests.support.contract import reference_fuse


def test_fx_does_not_recompile_the_output(monkeypatch):
    gm = resnet_like(3)
    calls = []
    real = torch.fx.GraphModule.recompile

    def counted(self):
        calls.append(len(self.graph.nodes))
        return real(self)

    monkeypatch.setattr(torch.fx.GraphModule, "recompile", counted)
    out = pyfuse.fuse(gm, False)
    assert calls == []
    monkeypatch.undo()
    ref = reference_fuse(resnet_like(3), False)
    assert out.code == ref.code
    module_code_is_fxs(out)
    x = torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(out(x), ref(x), rtol=0, atol=0)
    out.recompile()  # FX's own, on the output's class
    assert out.code == ref.code
    # (each output still has a class of its own, as FX gives every GraphModule)
    assert type(out) is not type(pyfuse.fuse(resnet_like(3), False))
    assert type(out).__bases__ == (torch.fx.GraphModule,)
