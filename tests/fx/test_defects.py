"""The reference's known defects (REFERENCE.md, last section): pyfuse must be *correct*.

1. A module called at several sites, one call followed by bn / relu: the reference fuses
   that site and silently changes what the other sites compute (pytorch issue 68178).
   pyfuse must leave such a match unfused, report it (``return_report=True``), and keep
   the model's output. When every site is followed by the same modules, every site fuses
   the same way and the reference is right: then pyfuse must fuse exactly like it.
2. ``ConvTranspose{1,2,3}d(groups>1)`` + BatchNorm in eval: the reference raises
   RuntimeError (or, with one output channel per group, returns a module whose forward
   raises RuntimeError); pyfuse must fold the BN correctly.
3. ``Linear`` + ``BatchNorm1d(affine=False)`` in eval: the reference raises TypeError;
   pyfuse must fold the BN correctly.
4. A root node getter returning a node its match does not claim (a MatchAllNode
   position): the reference keeps that node, which now calls the fused module, and
   calls the fused module again in the match's place. Where nothing else reads the
   node's result pyfuse must fuse exactly like it; where something does, the reference
   changes what it reads, and pyfuse must leave the match unfused.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

import pyfuse
from pyfuse.report import node_label
from tests.support.contract import (
    BothRaised,
    assert_same_fusion,
    node_count,
    reference_fuse,
    run_both,
    single_thread,
)
from tests.support.corpus import MODELS_BY_NAME, GetAttrOfFused

pytestmark = pytest.mark.quick  # (part of the quick suite: ./dev pyvers)

SEED = 7


@pytest.fixture(autouse=True)
def _single_threaded():
    with single_thread():
        yield


def _randomize(m: nn.Module) -> nn.Module:
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                if mod.running_mean is not None:
                    mod.running_mean.uniform_(-0.5, 0.5)
                    mod.running_var.uniform_(0.5, 2.0)
                if mod.affine:
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.uniform_(-0.5, 0.5)
    return m


def _forward(m: nn.Module, inputs):
    m = copy.deepcopy(m)
    torch.manual_seed(SEED)
    with torch.no_grad():
        return m(*copy.deepcopy(inputs))


def _make(cls, mode):
    def make():
        torch.manual_seed(0)
        m = _randomize(cls())
        return m.train() if mode == "qat" else m.eval()

    return make


# --------------------------------------------------------------------------------------
# 1. a module called at several sites
# --------------------------------------------------------------------------------------


class _WithOther(nn.Module):
    """Every defect model also has an independent conv-bn chain that must still be fused."""

    def __init__(self):
        super().__init__()
        self.other_conv = nn.Conv2d(4, 4, 1)
        self.other_bn = nn.BatchNorm2d(4)

    def other(self, y):
        return self.other_bn(self.other_conv(y))


class SharedConvBn(_WithOther):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.other(self.bn(self.conv(x)) + self.conv(x * 2))


class SharedConvReLU(_WithOther):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.other(self.conv(x * 2) - self.relu(self.conv(x)))


class SharedConvFReLU(_WithOther):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.other(F.relu(self.conv(x)) + self.conv(x - 1))


class SharedConvBnReLUvsBn2(_WithOther):
    """Both sites fusable, but differently: conv-bn-relu at one, conv-bn2 at the other."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.other(self.relu(self.bn(self.conv(x))) + self.bn2(self.conv(x * 3)))


class SharedNestedThreeSites(_WithOther):
    """A nested module (block.conv) called at three sites, one of them followed by bn."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential()
        self.block.add_module("conv", nn.Conv2d(3, 4, 3, padding=1))
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        a = self.block.conv(x)
        b = self.bn(self.block.conv(x * 2))
        c = self.block.conv(x + 1)
        return self.other(a + b + c)


class SharedLinearReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.relu = nn.ReLU()
        self.other_fc = nn.Linear(6, 6)

    def forward(self, x):
        y = self.relu(self.fc(x)) + self.fc(-x)
        return F.relu(self.other_fc(y))


# (model class, input shape, module path called at several sites, number of sites,
#  node names of the unsafe match, path of a fusion that must still happen)
BROKEN = {
    "shared_conv_bn": (
        SharedConvBn,
        (2, 3, 5, 5),
        "conv",
        2,
        {"conv", "bn"},
        "other_bn",
    ),
    "shared_conv_relu": (
        SharedConvReLU,
        (2, 3, 5, 5),
        "conv",
        2,
        {"conv", "relu"},
        "other_bn",
    ),
    "shared_conv_frelu": (
        SharedConvFReLU,
        (2, 3, 5, 5),
        "conv",
        2,
        {"conv", "relu"},
        "other_bn",
    ),
    "shared_conv_bn_relu_vs_bn2": (
        SharedConvBnReLUvsBn2,
        (2, 3, 5, 5),
        "conv",
        2,
        {"conv", "bn", "relu"},
        "other_bn",
    ),
    "shared_nested_three_sites": (
        SharedNestedThreeSites,
        (2, 3, 5, 5),
        "block.conv",
        3,
        {"block.conv", "bn"},
        "other_bn",
    ),
    "shared_linear_relu": (SharedLinearReLU, (4, 6), "fc", 2, {"fc", "relu"}, None),
}


def _call_sites(gm: torch.fx.GraphModule, path: str) -> int:
    return sum(1 for n in gm.graph.nodes if n.op == "call_module" and n.target == path)


@pytest.mark.parametrize("mode", ["eval", "qat"])
@pytest.mark.parametrize("case", list(BROKEN))
def test_module_called_at_several_sites(case, mode):
    cls, shape, path, n_sites, match_nodes, other_path = BROKEN[case]
    make = _make(cls, mode)
    is_qat = mode == "qat"
    torch.manual_seed(1)
    inputs = (torch.randn(*shape),)
    original = make()
    expected = _forward(original, inputs)

    traced = torch.fx.symbolic_trace(make())
    assert _call_sites(traced, path) == n_sites
    input_nodes = {n.name: (n.op, n.target) for n in traced.graph.nodes}
    # as reports name nodes: module paths for call_module nodes
    assert match_nodes <= {node_label(n) for n in traced.graph.nodes}

    # the defect: the reference changes what the model computes
    ref_out = reference_fuse(torch.fx.symbolic_trace(make()), is_qat)
    ref_y = _forward(ref_out, inputs)
    assert not torch.allclose(ref_y, expected, atol=1e-3), (
        "reference defect no longer reproduces"
    )

    gm, report = pyfuse.fuse(traced, is_qat, return_report=True)
    assert isinstance(gm, torch.fx.GraphModule)

    # pyfuse computes what the model computes
    y = _forward(gm, inputs)
    assert torch.allclose(y, expected, rtol=1e-5, atol=1e-5), (y - expected).abs().max()

    # ... by leaving the unsafe match unfused: every call of the shared module is still there,
    # calling the original, unchanged module (the rest of the match may fuse on its own,
    # e.g. bn + relu, since those modules are called once)
    out_nodes = {n.name: (n.op, n.target) for n in gm.graph.nodes}
    for name, (op, target) in input_nodes.items():
        if op == "call_module" and target == path:
            assert out_nodes.get(name) == (op, target), (
                f"call {name} of the shared module was rewritten"
            )
    assert _call_sites(gm, path) == n_sites
    shared = gm.get_submodule(path)
    orig_shared = original.get_submodule(path)
    assert type(shared) is type(orig_shared)
    for k, v in orig_shared.state_dict().items():
        assert torch.equal(shared.state_dict()[k], v), k

    # ... and saying why
    skipped = [s for s in report.skipped if set(s.nodes) == match_nodes]
    assert skipped, [(s.nodes, s.reason) for s in report.skipped]
    reason = skipped[0].reason
    assert isinstance(reason, str)
    assert path in reason, reason
    assert "sites" in reason, reason
    assert re.search(rf"(?<![\w.]){n_sites}(?![\w.])", reason), reason
    assert all(isinstance(n, str) for n in skipped[0].nodes)
    assert isinstance(skipped[0].nodes, tuple)

    # other, safe fusions still happen
    if other_path is not None:
        assert other_path not in dict(gm.named_modules())
    assert node_count(gm) < node_count(torch.fx.symbolic_trace(make()))


# The same module at several sites, every site followed by the same fusable modules:
# each site fuses into the same module, the reference is right and pyfuse must match it.


class BothSitesSameBn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)) + self.bn(self.conv(x * 2))


class BothSitesSameBnReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x))) - self.relu(self.bn(self.conv(-x)))


class BothSitesSameReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x)) * self.relu(self.conv(x + 1))


class ThreeSitesSameFReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        return F.relu(self.fc(x)) + F.relu(self.fc(x * 2)) + F.relu(self.fc(-x))


SAME = {
    "both_sites_same_bn": (BothSitesSameBn, (2, 3, 5, 5), "conv", 2),
    "both_sites_same_bn_relu": (BothSitesSameBnReLU, (2, 3, 5, 5), "conv", 2),
    "both_sites_same_relu": (BothSitesSameReLU, (2, 3, 5, 5), "conv", 2),
    "three_sites_same_frelu": (ThreeSitesSameFReLU, (4, 6), "fc", 3),
}


@pytest.mark.parametrize("mode", ["eval", "qat"])
@pytest.mark.parametrize("case", list(SAME))
def test_module_called_at_several_sites_fused_the_same_way(case, mode):
    cls, shape, path, n_sites = SAME[case]
    make = _make(cls, mode)
    is_qat = mode == "qat"
    torch.manual_seed(1)
    inputs = (torch.randn(*shape),)
    expected = _forward(make(), inputs)
    n_before = node_count(torch.fx.symbolic_trace(make()))
    assert _call_sites(torch.fx.symbolic_trace(make()), path) == n_sites

    ref_out, out = run_both(make, inputs, is_qat, None)
    assert_same_fusion(ref_out, out, inputs)
    assert node_count(out) < n_before
    assert torch.allclose(_forward(out, inputs), expected, rtol=1e-5, atol=1e-5)

    _, report = pyfuse.fuse(torch.fx.symbolic_trace(make()), is_qat, return_report=True)
    assert not [s for s in report.skipped if path in s.reason], [
        s.reason for s in report.skipped
    ]


# --------------------------------------------------------------------------------------
# 2. grouped ConvTranspose + BatchNorm, eval
# --------------------------------------------------------------------------------------


class ConvTBn(nn.Module):
    def __init__(self, dim, cin, cout, groups, **kw):
        super().__init__()
        convt = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[
            dim
        ]
        bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dim]
        self.up = convt(cin, cout, 3, groups=groups, **kw)
        self.bn = bn(cout)

    def forward(self, x):
        return self.bn(self.up(x))


CONVT = {
    "convt2d_g2": (2, 4, 4, 2, {}, (2, 4, 5, 5)),
    "convt2d_g2_wider": (
        2,
        4,
        6,
        2,
        {"stride": 2, "padding": 1, "output_padding": 1},
        (2, 4, 5, 5),
    ),
    "convt2d_g4_nobias_dilated": (
        2,
        8,
        4,
        4,
        {"bias": False, "dilation": 2},
        (2, 8, 4, 4),
    ),
    "convt1d_g2": (1, 4, 6, 2, {"stride": 2}, (2, 4, 7)),
    "convt1d_depthwise": (1, 6, 6, 6, {"padding": 1}, (2, 6, 7)),
    "convt3d_g2": (3, 4, 4, 2, {"padding": 1}, (2, 4, 3, 4, 4)),
}


def _make_convt(case, mode="eval"):
    dim, cin, cout, groups, kw, _ = CONVT[case]

    def make():
        torch.manual_seed(0)
        m = _randomize(ConvTBn(dim, cin, cout, groups, **kw))
        return m.train() if mode == "qat" else m.eval()

    return make


@pytest.mark.parametrize("case", list(CONVT))
def test_grouped_conv_transpose_bn_eval(case):
    make = _make_convt(case)
    torch.manual_seed(1)
    inputs = (torch.randn(*CONVT[case][-1]),)
    expected = _forward(make(), inputs)

    # the reference's defect: it raises RuntimeError while folding (out_channels/groups > 1),
    # or, when out_channels/groups == 1, broadcasting hides the size mismatch and it returns a
    # module whose ConvTranspose weight has the wrong shape (its forward raises RuntimeError)
    try:
        ref_out = reference_fuse(torch.fx.symbolic_trace(make()), False)
    except RuntimeError:
        pass
    else:
        with pytest.raises(RuntimeError):
            _forward(ref_out, inputs)

    traced = torch.fx.symbolic_trace(make())
    n_before = node_count(traced)
    conv_type = type(make().up)
    gm = pyfuse.fuse(traced, False)
    assert node_count(gm) == n_before - 1
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gm.modules())
    assert type(gm.get_submodule("up")) is conv_type
    assert gm.get_submodule("up").groups == CONVT[case][3]
    y = _forward(gm, inputs)
    assert y.shape == expected.shape
    assert torch.allclose(y, expected, atol=1e-5), (y - expected).abs().max()


@pytest.mark.parametrize("case", ["convt2d_g2", "convt1d_g2", "convt3d_g2"])
def test_grouped_conv_transpose_bn_qat_raises_like_reference(case):
    """In QAT the reference rejects every ConvTranspose+BN (groups or not): same type."""
    make = _make_convt(case, "qat")
    with pytest.raises(BothRaised) as info:
        run_both(make, None, True, None)
    assert type(info.value.exc) is type(info.value.ref_exc)


def test_ungrouped_conv_transpose_bn_matches_reference():
    """groups=1 works in the reference: pyfuse must match it exactly."""

    def make():
        torch.manual_seed(0)
        return _randomize(ConvTBn(2, 4, 6, 1, stride=2)).eval()

    torch.manual_seed(1)
    inputs = (torch.randn(2, 4, 5, 5),)
    ref_out, out = run_both(make, inputs, False, None)
    assert_same_fusion(ref_out, out, inputs)


# --------------------------------------------------------------------------------------
# 3. Linear + BatchNorm1d(affine=False), eval
# --------------------------------------------------------------------------------------


class LinearBnNoAffine(nn.Module):
    def __init__(self, bias=True):
        super().__init__()
        self.fc = nn.Linear(8, 5, bias=bias)
        self.bn = nn.BatchNorm1d(5, affine=False)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.bn(self.fc(x)))


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear_bn_no_affine_eval(bias):
    def make():
        torch.manual_seed(0)
        return _randomize(LinearBnNoAffine(bias)).eval()

    torch.manual_seed(1)
    inputs = (torch.randn(4, 8),)
    expected = _forward(make(), inputs)

    with pytest.raises(TypeError):  # the reference's defect
        reference_fuse(torch.fx.symbolic_trace(make()), False)

    traced = torch.fx.symbolic_trace(make())
    n_before = node_count(traced)
    gm = pyfuse.fuse(traced, False)
    assert node_count(gm) == n_before - 1
    assert not any(isinstance(m, nn.BatchNorm1d) for m in gm.modules())
    assert type(gm.get_submodule("fc")) is nn.Linear
    y = _forward(gm, inputs)
    assert torch.allclose(y, expected, atol=1e-5), (y - expected).abs().max()


def test_conv_bn_no_affine_matches_reference():
    """Conv + BN(affine=False) works in the reference: pyfuse must match it exactly."""

    class ConvBnNoAffine(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4, affine=False)

        def forward(self, x):
            return self.bn(self.conv(x))

    def make():
        torch.manual_seed(0)
        return _randomize(ConvBnNoAffine()).eval()

    torch.manual_seed(1)
    inputs = (torch.randn(2, 3, 5, 5),)
    ref_out, out = run_both(make, inputs, False, None)
    assert_same_fusion(ref_out, out, inputs)
    assert node_count(out) < node_count(torch.fx.symbolic_trace(make()))


# ---------------------------------------------------------------------------
# More reference defects found by the corpus: the reference changes the model's
# result or crashes; pyfuse must stay correct.


def test_get_attr_of_fused_module_is_not_fused():
    model = _make(GetAttrOfFused, "eval")()
    x = torch.randn(2, 3, 6, 6)
    want = model(x)
    ref = reference_fuse(torch.fx.symbolic_trace(copy.deepcopy(model)), False)
    # the reference folds BN into the conv whose weight the model also reads
    assert not torch.allclose(ref(x)[1], want[1])
    out, report = pyfuse.fuse(
        torch.fx.symbolic_trace(copy.deepcopy(model)), False, return_report=True
    )
    got = out(x)
    assert torch.equal(got[0], want[0])
    assert torch.equal(got[1], want[1])
    assert [s.nodes for s in report.skipped] == [("conv", "bn")]
    assert "get_attr" in report.skipped[0].reason


def test_onednn_add_of_a_literal_fuses_correctly():
    from torch.ao.quantization.backend_config import get_onednn_backend_config

    case = MODELS_BY_NAME["add_scalar"]
    model = case.factory().eval()
    (x,) = case.example_inputs_factory()
    want = model(x)
    with pytest.raises(AttributeError):  # 'float' object has no attribute 'name'
        reference_fuse(
            torch.fx.symbolic_trace(copy.deepcopy(model)),
            False,
            backend_config=get_onednn_backend_config(),
        )
    gm = torch.fx.symbolic_trace(copy.deepcopy(model))
    n_before = len(gm.graph.nodes)
    out = pyfuse.fuse(gm, False, backend_config=get_onednn_backend_config())
    assert len(out.graph.nodes) < n_before
    assert type(out.conv).__name__ == "ConvAdd2d"
    torch.testing.assert_close(out(x), want, rtol=1e-5, atol=1e-5)


def test_empty_sub_record_raises_the_reference_error():
    """A sub-pattern whose head node the match already recorded leaves an empty
    tuple in the matched node pattern; the reference's get_modules fails on it with
    ValueError (found by tests/test_pbt_fuse.py), and so does pyfuse."""
    from torch.ao.quantization.backend_config import BackendConfig, BackendPatternConfig

    class ConvTwice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            y = self.conv(x)
            return torch.add(y, y)

    def config():
        pattern = BackendPatternConfig()
        pattern._set_pattern_complex_format((torch.add, nn.Conv2d, (nn.Conv2d,)))
        pattern.set_fuser_method(lambda _is_qat, *_mods: nn.Identity())
        pattern._set_root_node_getter(lambda node_pattern: node_pattern[1])
        return BackendConfig("empty_sub").set_backend_pattern_config(pattern)

    errors = []
    for impl in (reference_fuse, pyfuse.fuse):
        with pytest.raises(Exception) as info:  # noqa: PT011 - the type is compared below
            impl(torch.fx.symbolic_trace(ConvTwice().eval()), False, None, config())
        errors.append(info.value)
    assert type(errors[1]) is type(errors[0]) is ValueError


# --------------------------------------------------------------------------------------
# a root node its match does not claim (found by tests/test_pbt_fuse.py)
# --------------------------------------------------------------------------------------


class ReluConvPlusRelu(nn.Module):
    def __init__(self, reuse: bool):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(2, 2, 1)
        self.reuse = reuse

    def forward(self, x):
        y = self.relu(x)
        z = self.conv(y)
        return z + y if self.reuse else z


def _unclaimed_root_config():
    """(Conv2d, MatchAllNode) with the default root node getter: the root is the node
    the MatchAllNode matched, which the match does not claim. The reference keeps that
    node, installs the fused module at its path and calls it again at the conv."""
    from torch.ao.quantization.backend_config import BackendConfig, BackendPatternConfig
    from torch.ao.quantization.utils import MatchAllNode

    pattern = BackendPatternConfig()._set_pattern_complex_format(
        (nn.Conv2d, MatchAllNode)
    )
    pattern.set_fuser_method(lambda _is_qat, conv, relu: nn.Sequential(relu, conv))
    return BackendConfig("unclaimed_root").set_backend_pattern_config(pattern)


def test_unclaimed_root_fuses_exactly_like_the_reference():
    # the kept relu node's result is used only by the conv: it is dead after the fusion
    def make():
        torch.manual_seed(0)
        return ReluConvPlusRelu(reuse=False).eval()

    x = (torch.randn(1, 2, 3, 3),)
    ref, out = run_both(make, x, backend_config=_unclaimed_root_config())
    assert_same_fusion(ref, out, x)
    assert [n.target for n in out.graph.nodes if n.op == "call_module"] == [
        "relu",
        "relu",
    ]


def test_unclaimed_root_read_elsewhere_is_not_fused():
    torch.manual_seed(0)
    model = ReluConvPlusRelu(reuse=True).eval()
    x = torch.randn(1, 2, 3, 3)
    want = model(x)
    ref = reference_fuse(
        torch.fx.symbolic_trace(copy.deepcopy(model)),
        False,
        backend_config=_unclaimed_root_config(),
    )
    # the kept relu node now calls Sequential(relu, conv): `z + y` adds conv twice
    assert not torch.allclose(ref(x), want)
    gm = torch.fx.symbolic_trace(copy.deepcopy(model))
    code = gm.code
    out, report = pyfuse.fuse(
        gm, False, backend_config=_unclaimed_root_config(), return_report=True
    )
    assert torch.equal(out(x), want)
    assert out.code == code
    assert [s.nodes for s in report.skipped] == [("conv",)]
    assert "does not claim" in report.skipped[0].reason
