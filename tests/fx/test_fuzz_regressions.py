"""Divergences the fused-output fuzzer found between pyfuse and torch's pass, as
minimal reproductions; all fixed. Each test states the contract: the reference's
exact exception type, or the full exactness contract against the reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization.backend_config import BackendConfig, BackendPatternConfig
from torch.ao.quantization.utils import MatchAllNode

from pyfuse.errors import ErasedInput, NotAModule
from tests.fuzz.fx_models import trace
from tests.fuzz.fx_oracle import equivalent, forward_eval
from tests.fuzz.test_fused_output import X4, case_from
from tests.support.contract import assert_same_fusion, pyfuse_fuse, reference_fuse


class _ReluConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.conv(self.relu(x))


def _relu_then_conv():
    torch.manual_seed(0)
    return _ReluConv().eval()


def _seq_fuser(_is_qat, conv, relu):
    """(Conv2d, MatchAllNode) in complex format: (head module, the MatchAllNode's module)."""
    return nn.Sequential(relu, conv)


def _matchall_root_backend():
    c = BackendPatternConfig()._set_pattern_complex_format((nn.Conv2d, MatchAllNode))
    return BackendConfig("pbt").set_backend_pattern_config(
        c.set_fuser_method(_seq_fuser)
    )


def test_regression_root_node_not_claimed_by_match():
    # graph: x -> relu (call_module) -> conv; pattern (Conv2d, MatchAllNode) matches conv,
    # default root node = relu (matched by MatchAllNode, not claimed). The reference puts
    # Sequential(relu, conv) at 'relu' and calls it where conv was: correct output.
    inputs = (torch.randn(1, 2, 3, 3),)
    ref = reference_fuse(
        trace(_relu_then_conv()),
        False,
        None,
        _matchall_root_backend(),
    )
    torch.testing.assert_close(ref(*inputs), _relu_then_conv()(*inputs))
    out = pyfuse_fuse(
        trace(_relu_then_conv()),
        False,
        None,
        _matchall_root_backend(),
    )
    assert_same_fusion(ref, out, inputs)


class _SigmoidConvThenReluConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 1)
        self.sig = nn.Sigmoid()
        self.conv2 = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        y = self.sig(self.conv1(x))  # 1st match: its fuser raises NotImplementedError
        return F.relu(
            self.conv2(y)
        )  # 2nd match: no fuser for the matched (ReLU, Conv2d)


def _refusing_fuser(_is_qat, *_mods):
    raise NotImplementedError("refused")


def _two_bad_matches_backend():
    return (
        BackendConfig("pbt")
        .set_backend_pattern_config(
            BackendPatternConfig()
            ._set_pattern_complex_format((nn.Sigmoid, nn.Conv2d))
            .set_fuser_method(_refusing_fuser)
        )
        .set_backend_pattern_config(
            BackendPatternConfig()
            ._set_pattern_complex_format((F.relu, nn.Conv2d))
            .set_fuser_method(_refusing_fuser)
        )
    )


def test_regression_first_failing_match_in_graph_order():
    with pytest.raises(NotImplementedError) as ref:
        reference_fuse(
            trace(_SigmoidConvThenReluConv().eval()),
            False,
            None,
            _two_bad_matches_backend(),
        )
    with pytest.raises(NotImplementedError) as got:
        pyfuse_fuse(
            trace(_SigmoidConvThenReluConv().eval()),
            False,
            None,
            _two_bad_matches_backend(),
        )
    assert type(ref.value) is type(got.value) is NotImplementedError


class _ConvRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x))


def _root_is_last_node(node_pattern):
    return node_pattern[0]


def _root_is_last_backend():
    c = (
        BackendPatternConfig()
        ._set_pattern_complex_format((nn.ReLU, nn.Conv2d))
        .set_fuser_method(lambda _is_qat, relu, conv: nn.Sequential(conv, relu))
    )
    c._set_root_node_getter(_root_is_last_node)
    return BackendConfig("pbt").set_backend_pattern_config(c)


def test_regression_root_getter_uses_erased_node():
    with pytest.raises(KeyError) as ref:
        reference_fuse(
            trace(_ConvRelu().eval()),
            False,
            None,
            _root_is_last_backend(),
        )
    with pytest.raises(KeyError) as got:
        pyfuse_fuse(
            trace(_ConvRelu().eval()),
            False,
            None,
            _root_is_last_backend(),
        )
    # the documented subclass: a FusionError that is the reference's KeyError
    assert type(ref.value) is KeyError
    assert type(got.value) is ErasedInput


class _SharedBnFusedAway(nn.Module):
    """One BatchNorm2d called at two sites: after conv1 (a (BN, Conv) match: that call is
    erased, the BN folded into conv1) and before a ReLU (a (ReLU, BN) match rooted at it)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 1)
        self.bn = nn.BatchNorm2d(2)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.bn(self.conv1(x))
        return self.relu(self.bn(y + 1))


@pytest.mark.parametrize("mode", ["eval", "qat"])
def test_regression_shared_module_other_sites_fused_away(mode):
    case = case_from(_SharedBnFusedAway(), X4, mode)
    ref = reference_fuse(trace(case.make()), case.is_qat)
    if mode == "eval":  # the reference is right
        assert equivalent(
            forward_eval(ref, case.inputs), forward_eval(case.template, case.inputs)
        )
    out = pyfuse_fuse(trace(case.make()), case.is_qat)
    assert_same_fusion(ref, out, case.inputs)


def _non_module_backend():
    c = (
        BackendPatternConfig()
        ._set_pattern_complex_format((nn.ReLU, nn.Conv2d))
        .set_fuser_method(lambda _is_qat, _relu, _conv: 3)
    )
    return BackendConfig("pbt").set_backend_pattern_config(c)


def test_regression_fuser_returns_non_module():
    with pytest.raises(TypeError) as ref:
        reference_fuse(trace(_ConvRelu().eval()), False, None, _non_module_backend())
    with pytest.raises(TypeError) as got:
        pyfuse_fuse(trace(_ConvRelu().eval()), False, None, _non_module_backend())
    # the documented subclass: a FusionError that is the reference's TypeError
    assert type(ref.value) is TypeError
    assert type(got.value) is NotAModule


class _ReluConvTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        c = self.conv(self.relu(x))
        return torch.add(c, c)


def _conv_of_first_branch(node_pattern):
    """Root node getter: [add, (conv, relu), ()] -> conv."""
    return node_pattern[1][0]


def _twice_backend():
    sub = (nn.Conv2d, nn.ReLU)
    c = BackendPatternConfig()._set_pattern_complex_format((torch.add, sub, sub))
    c.set_fuser_method(_refusing_fuser)._set_root_node_getter(_conv_of_first_branch)
    return BackendConfig("pbt").set_backend_pattern_config(c)


def test_regression_subpattern_reaching_a_matched_node():
    with pytest.raises(ValueError, match="not enough values to unpack") as ref:
        reference_fuse(trace(_ReluConvTwice().eval()), False, None, _twice_backend())
    with pytest.raises(ValueError, match="not enough values to unpack") as got:
        pyfuse_fuse(trace(_ReluConvTwice().eval()), False, None, _twice_backend())
    assert type(ref.value) is type(got.value) is ValueError


class _LinearAndShape(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(x), x.shape


def _linear_and_shape_backend():
    """(Linear,) fuses the linear; (getattr, 'shape') claims ``x.shape`` and the
    placeholder ``x`` (a getattr pattern's argument is claimed unchecked)."""
    return (
        BackendConfig("pbt")
        .set_backend_pattern_config(
            BackendPatternConfig()
            ._set_pattern_complex_format((nn.Linear,))
            .set_fuser_method(lambda _is_qat, lin: lin)
        )
        .set_backend_pattern_config(
            BackendPatternConfig()
            ._set_pattern_complex_format((getattr, "shape"))
            .set_fuser_method(lambda _is_qat, *_mods: nn.Identity())
        )
    )


def test_regression_erased_input_before_a_later_matchs_error():
    # The reference fuses `lin` first (graph order) and fails copying its input `x`,
    # which the later getattr match claimed: KeyError('x'). That later match's own
    # error (its root, `x`, is not a call_module) is never reached.
    with pytest.raises(KeyError) as ref:
        reference_fuse(
            trace(_LinearAndShape().eval()), False, None, _linear_and_shape_backend()
        )
    with pytest.raises(KeyError) as got:
        pyfuse_fuse(
            trace(_LinearAndShape().eval()), False, None, _linear_and_shape_backend()
        )
    assert ref.value.args == ("x",)
    assert type(got.value) is ErasedInput
    assert "'lin'" in str(got.value)
    assert "'x'" in str(got.value)
