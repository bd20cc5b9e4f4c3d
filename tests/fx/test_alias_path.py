"""README "Differences": a call_module target reachable only by an alias path.

The graph is built by hand (tracing would rewrite the target to the module's main
path): the conv is registered at ``blk.conv`` first and at ``alias`` second, so
``named_modules()`` (de-duplicated) lists only ``blk.conv``, and the graph calls
``alias``. torch's pass raises KeyError; pyfuse resolves the path through the module
tree and must return exactly what torch's pass returns when every module path is
visible to it (its walk and its handler looking modules up in
``named_modules(remove_duplicate=False)``).
"""

from __future__ import annotations

import functools
import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Graph, GraphModule

import pyfuse
from tests.fuzz.fixed_reference import walk
from tests.support.contract import REFERENCE_FUSE, assert_same_fusion

_TORCH_FUSE_MODULE = importlib.import_module("torch.ao.quantization.fx.fuse")
X = (torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(0)),)


def aliased(alias: str, relu: bool) -> GraphModule:
    """x -> conv (called as ``alias`` only) -> bn [-> relu], the conv registered at
    ``blk.conv`` first."""
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    root = nn.Module()
    parent = root
    *prefix, name = alias.split(".")
    for p in prefix:
        setattr(parent, p, nn.Module())
        parent = getattr(parent, p)
    setattr(parent, name, conv)
    root.bn = bn
    g = Graph()
    x = g.placeholder("x")
    y = g.call_module("bn", (g.call_module(alias, (x,)),))
    if relu:
        y = g.call_function(F.relu, (y,))
    g.output(y)
    gm = GraphModule(root, g)
    gm.main = nn.Module()
    gm.main.conv = conv
    gm._modules = {"main": gm._modules.pop("main"), **gm._modules}  # main path first
    assert alias not in dict(gm.named_modules())
    assert dict(gm.named_modules(remove_duplicate=False))[alias] is conv
    return gm


def every_path_reference(gm: GraphModule, is_qat: bool) -> GraphModule:
    """torch's pass with every module path visible (its only change)."""
    gm.named_modules = functools.partial(  # the handler's lookup
        type(gm).named_modules, gm, remove_duplicate=False
    )
    saved = _TORCH_FUSE_MODULE._find_matches
    _TORCH_FUSE_MODULE._find_matches = functools.partial(walk, alias_paths=True)
    try:
        return REFERENCE_FUSE(gm, is_qat)
    finally:
        _TORCH_FUSE_MODULE._find_matches = saved


@pytest.mark.parametrize("alias", ["alias", "blk.alias"])
@pytest.mark.parametrize("mode", ["eval", "qat"])
@pytest.mark.parametrize("relu", [False, True])
def test_alias_only_path_is_resolved(alias, mode, relu):
    is_qat = mode == "qat"

    def make():
        return aliased(alias, relu).train(is_qat)

    with pytest.raises(KeyError) as ref_exc:
        REFERENCE_FUSE(make(), is_qat)
    assert type(ref_exc.value) is KeyError
    assert ref_exc.value.args == (alias,)

    out, report = pyfuse.fuse(make(), is_qat, return_report=True)
    # forward order, module paths (the alias path the model's code calls)
    assert [f.nodes for f in report.fused] == [
        (alias, "bn", "relu") if relu else (alias, "bn")
    ]
    assert report.skipped == []
    want = every_path_reference(make(), is_qat)
    assert_same_fusion(want, out, X)
    # and it computes what the model computes
    if not is_qat:
        with torch.no_grad():
            torch.testing.assert_close(out(*X), make()(*X))
