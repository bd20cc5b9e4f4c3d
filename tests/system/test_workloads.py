"""The benchmark workloads (pyfuse/bench/workloads.py, specs.py) are what they claim to be.

The graphs are built directly with the torch.fx Graph API (tracing 100k nodes is
too slow); here, on small sizes, they must be indistinguishable from
``torch.fx.symbolic_trace`` of the equivalent nn.Module, and fuse the same way
with the reference.
"""

from __future__ import annotations

import pytest
import torch
import torch.fx

from pyfuse.bench import specs
from pyfuse.bench import workloads as W
from tests.support.contract import reference_fuse, sorted_fusion_handlers

KINDS = ["resnet", "mixed", "onednn"]


def _nodes(gm):
    return [
        (
            n.name,
            n.op,
            n.target,
            str(n.args),
            str(n.kwargs),
            n.meta,
            n.type,
        )
        for n in gm.graph.nodes
    ]


def _modules(gm):
    return [
        (name, "GraphModule" if name == "" else type(m), m.training)
        for name, m in gm.named_modules()
    ]


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _assert_same_gm(built, traced):
    assert built.code == traced.code
    assert _nodes(built) == _nodes(traced)
    assert _modules(built) == _modules(traced)
    assert type(built).__name__ == type(traced).__name__
    assert built.training == traced.training
    _assert_same_state(built, traced)


def _fused_modules(gm):
    return [(name, type(m).__name__) for name, m in gm.named_modules()]


def _assert_same_fusion(built, traced, wl):
    cfg = wl.backend_config()
    before_b = W.module_snapshot(built)
    before_t = W.module_snapshot(traced)
    out_b = reference_fuse(built, wl.is_qat, None, cfg)
    out_t = reference_fuse(traced, wl.is_qat, None, cfg)
    assert out_b.code == out_t.code
    assert _nodes(out_b) == _nodes(out_t)
    assert _fused_modules(out_b) == _fused_modules(out_t)
    _assert_same_state(out_b, out_t)
    assert W.count_fusions(out_b, before_b) == wl.expected_fusions
    assert W.count_fusions(out_t, before_t) == wl.expected_fusions
    assert W.node_count(out_b) == wl.expected_nodes_after


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("n_blocks", [0, 1, 3])
def test_resnet_like_equals_trace_of_handwritten_module(n_blocks, train):
    built = W.resnet_like(n_blocks, train=train)
    traced = torch.fx.symbolic_trace(W.resnet_like_module(n_blocks, train=train))
    _assert_same_gm(built, traced)
    assert W.node_count(built) == 7 * n_blocks + 2
    built.graph.lint()
    wl = W.make_workload("resnet", n_blocks, qat=train)
    _assert_same_fusion(built, traced, wl)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_workload_equals_trace_of_equivalent_module(kind, train):
    wl = W.make_workload(kind, 3, qat=train)
    built = wl.fresh()
    traced = torch.fx.symbolic_trace(W.equivalent_module(wl.spec, 3))
    _assert_same_gm(built, traced)
    assert W.node_count(built) == wl.nodes
    built.graph.lint()
    _assert_same_fusion(built, traced, wl)


def test_builders_match_make_workload():
    assert W.resnet_like(4).code == W.make_workload("resnet", 4).fresh().code
    assert W.mixed(2).code == W.make_workload("mixed", 2).fresh().code
    assert W.onednn_blocks(2, train=True).code == (
        W.make_workload("onednn", 2, qat=True).fresh().code
    )


def test_mixed_covers_every_native_pattern():
    """Each of the 25 native patterns matches exactly once per block (eval)."""
    from torch.ao.quantization.fx.fuse import _find_matches


    wl = W.make_workload("mixed", 2)
    gm = wl.fresh()
    handlers = sorted_fusion_handlers(wl.backend_config())
    assert len(handlers) == 25
    matches = _find_matches(gm, gm.graph, handlers)
    per_pattern: dict[object, set[str]] = {}
    for root, pattern, *_ in matches.values():
        per_pattern.setdefault(pattern, set()).add(root.name)
    assert set(per_pattern) == set(handlers)
    assert all(len(roots) == 2 for roots in per_pattern.values())


def test_resnet_like_runs_like_the_module():
    x = torch.randn(2, 4, 8, 8)
    built = W.resnet_like(2)
    module = W.resnet_like_module(2)
    torch.testing.assert_close(built(x), module(x), rtol=0, atol=0)
    fused = reference_fuse(W.resnet_like(2), False)
    torch.testing.assert_close(fused(x), module(x))


def test_huge_small_lints_and_is_resnet_like():
    gm = W.huge(1000)
    gm.graph.lint()
    n_blocks = (1000 - 2) // 7
    assert W.node_count(gm) == 7 * n_blocks + 2
    assert gm.code == W.resnet_like(n_blocks).code
    assert not gm.training
    # every module is its own instance (each fused conv must be)
    mods = [m for name, m in gm.named_modules(remove_duplicate=False) if "." in name]
    assert len({id(m) for m in mods}) == len(mods)
    wl = W.make_workload("huge", n_blocks)
    before = W.module_snapshot(gm)
    out = reference_fuse(gm, False)
    assert W.count_fusions(out, before) == wl.expected_fusions == 2 * n_blocks
    assert W.node_count(out) == wl.expected_nodes_after


@pytest.mark.parametrize("share_tensors", [False, True])
def test_fresh_copy_is_independent(share_tensors):
    src = W.mixed(2)
    code = src.code
    src_modules = dict(src.named_modules())
    copy = W.fresh_copy(src, share_tensors=share_tensors)
    assert copy.code == code
    assert _nodes(copy) == _nodes(src)
    assert _modules(copy) == _modules(src)
    _assert_same_state(copy, src)
    for name, m in copy.named_modules():
        if name:
            assert m is not src_modules[name]
    p_copy = copy.get_parameter("blocks.0.conv2d_bn.weight")
    p_src = src.get_parameter("blocks.0.conv2d_bn.weight")
    assert (p_copy is p_src) == share_tensors
    assert {id(n) for n in copy.graph.nodes}.isdisjoint(id(n) for n in src.graph.nodes)

    # fusing the copy leaves the source alone
    before = W.module_snapshot(copy)
    out = reference_fuse(copy, False)
    assert W.count_fusions(out, before) == 2 * 25
    assert src.code == code
    assert dict(src.named_modules()) == src_modules
    src.graph.lint()


def test_fresh_copy_keeps_get_attr_and_meta():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 2, 1)
            self.register_buffer("scale", torch.ones(1))
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.relu(self.conv(x)) * self.scale + self.w

    gm = torch.fx.symbolic_trace(M().eval())
    gm.meta["tag"] = 1
    copy = W.fresh_copy(gm)
    assert copy.code == gm.code
    assert copy.meta == {"tag": 1}
    assert not copy.training
    assert _nodes(copy) == _nodes(gm)
    assert isinstance(copy.get_parameter("w"), torch.nn.Parameter)
    assert copy.get_buffer("scale") is not gm.get_buffer("scale")
    x = torch.randn(1, 2, 3, 3)
    torch.testing.assert_close(copy(x), gm(x))


def test_clone_module_is_independent():
    bn = torch.nn.BatchNorm2d(3)
    clone = specs.clone_module(bn)
    clone.register_forward_hook(lambda *_: None)
    clone.running_mean.add_(1)
    assert not bn._forward_hooks
    assert torch.equal(bn.running_mean, torch.zeros(3))
    seq = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.ReLU())
    c = specs.clone_module(seq)
    assert c[0] is not seq[0]
    assert c[0].weight is not seq[0].weight
    assert torch.equal(c[0].weight, seq[0].weight)


def test_size_sets():
    std = W.size_set("standard")
    nodes = [W.make_workload("resnet", n).nodes for n in std["resnet"]]
    assert nodes == [1_052, 10_502, 35_002, 105_002]
    for kind in ("mixed", "onednn"):
        ns = [W.make_workload(kind, n).nodes for n in std[kind]]
        assert all(
            0.9 < a / b < 1.1 for a, b in zip(ns, [1_000, 10_000, 35_000], strict=True)
        )
    (n_huge,) = W.size_set("huge")["huge"]
    assert 990_000 < W.make_workload("huge", n_huge).nodes <= 1_000_000
    with pytest.raises(ValueError, match="unknown size set"):
        W.size_set("nope")
