"""Bad input gets a clear error naming the node, module path or pattern; where the
reference (torch's ``fuse`` / ``fuse_fx``, pinned) rejects the same input, pyfuse
raises the reference's exact type or a documented pyfuse subclass named in the test
(RELIABILITY.md section 1)."""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization.backend_config import (
    BackendConfig,
    BackendPatternConfig,
    get_native_backend_config,
)
from torch.ao.quantization.utils import MatchAllNode

import pyfuse
from pyfuse import FusionError, GraphModuleRequired
from pyfuse.errors import MalformedGetattr, ModuleRequired, NotAModule, PatternError
from tests.fx.unchanged import (
    TinyConvBnReLU,
    assert_reference_type,
    assert_unchanged,
    message,
    raised,
    snapshot,
    tiny_gm,
    traced,
)
from tests.support.contract import reference_fuse, reference_fuse_fx, single_thread


@pytest.fixture(autouse=True)
def _single_threaded():
    with single_thread():
        yield


# ======================================================================================
# 1. Bad input -> clear errors, the reference's exception type
# ======================================================================================

NOT_GRAPH_MODULES = {
    "nn.Module": lambda: TinyConvBnReLU().eval(),
    "None": lambda: None,
    "Graph": lambda: tiny_gm().graph,
}


@pytest.mark.parametrize("what", list(NOT_GRAPH_MODULES))
def test_fuse_rejects_what_is_not_a_graph_module(what):
    make = NOT_GRAPH_MODULES[what]
    ref = raised(lambda: reference_fuse(make(), False))
    obj = make()
    with pytest.raises(GraphModuleRequired) as info:
        pyfuse.fuse(obj, False)
    msg = message(info.value)
    assert "GraphModule" in msg, msg
    assert type(obj).__name__ in msg, msg
    assert ref is not None, "the reference rejects this input too"
    assert_reference_type(info.value, ref, {AttributeError: GraphModuleRequired})


NOT_MODULES = {
    "None": lambda: None,
    "int": lambda: 3,
    "str": lambda: "resnet18",
    "Graph": lambda: tiny_gm().graph,
}


@pytest.mark.parametrize("what", list(NOT_MODULES))
def test_fuse_fx_rejects_what_is_not_a_module(what):
    assert raised(lambda: reference_fuse_fx(NOT_MODULES[what]())) is not None
    obj = NOT_MODULES[what]()
    with pytest.raises(Exception) as info:  # noqa: PT011 - the type is the next test's
        pyfuse.fuse_fx(obj)
    msg = message(info.value)
    assert "nn.Module" in msg, msg
    assert type(obj).__name__ in msg, msg


@pytest.mark.parametrize("what", list(NOT_MODULES))
def test_fuse_fx_rejects_what_is_not_a_module_with_the_reference_type(what):
    ref = raised(lambda: reference_fuse_fx(NOT_MODULES[what]()))
    exc = raised(lambda: pyfuse.fuse_fx(NOT_MODULES[what]()))
    assert ref is not None
    assert exc is not None
    assert_reference_type(exc, ref, {AssertionError: ModuleRequired})


def test_fuse_fx_rejects_a_plain_function_the_reference_traces():
    """The issue asks fuse_fx to reject what is not an nn.Module; the reference traces
    any callable (torch.fx.symbolic_trace), so this is a deliberate difference."""

    def f(x):
        return F.relu(x)

    assert isinstance(reference_fuse_fx(f), torch.fx.GraphModule)
    with pytest.raises(TypeError, match=r"nn\.Module.*function"):
        pyfuse.fuse_fx(f)


def _retarget(
    gm: torch.fx.GraphModule, node_name: str, target: str
) -> torch.fx.GraphModule:
    (node,) = [n for n in gm.graph.nodes if n.name == node_name]
    node.target = target
    gm.recompile()
    return gm


def _sigmoid_of_conv_config() -> BackendConfig:
    """A config whose only pattern tests no module but a conv under torch.sigmoid."""
    p = BackendPatternConfig()
    p._set_pattern_complex_format((torch.sigmoid, nn.Conv2d))
    p.set_fuser_method(lambda _is_qat, _sig, conv: nn.Sequential(conv, nn.Sigmoid()))
    return BackendConfig("sigmoid_only").set_backend_pattern_config(p)


def _tiny_gm_without_bn() -> torch.fx.GraphModule:
    gm = tiny_gm()
    delattr(gm, "bn")
    return gm


def _resnet18_missing_leaf() -> torch.fx.GraphModule:
    gm = traced("resnet18")
    (node,) = [n for n in gm.graph.nodes if n.target == "layer2.1.bn2"]
    return _retarget(gm, node.name, "layer2.1.bn9")


#: name -> (make the broken GraphModule, backend config, node name, missing target)
MISSING_MODULES = {
    "renamed to a path that does not exist": (
        lambda: _retarget(tiny_gm(), "conv", "nope.conv"),
        None,
        "conv",
        "nope.conv",
    ),
    "submodule deleted": (_tiny_gm_without_bn, None, "bn", "bn"),
    "leaf missing under an existing parent": (
        _resnet18_missing_leaf,
        None,
        "layer2_1_bn2",
        "layer2.1.bn9",
    ),
    "missing module no pattern tests": (
        lambda: _retarget(tiny_gm(), "relu", "head.relu"),
        _sigmoid_of_conv_config,
        "relu",
        "head.relu",
    ),
}


@pytest.mark.parametrize("case", list(MISSING_MODULES))
def test_call_module_target_that_does_not_exist(case):
    make, config, node, target = MISSING_MODULES[case]
    ref = raised(lambda: reference_fuse(make(), False, None, config and config()))
    gm = make()
    before = snapshot(gm)
    exc = raised(lambda: pyfuse.fuse(gm, False, None, config and config()))
    assert exc is not None
    msg = message(exc)
    assert repr(node) in msg, msg
    assert repr(target) in msg, msg
    assert ref is not None
    assert_reference_type(exc, ref)  # KeyError / AttributeError, exactly
    assert_unchanged(before, gm)


def test_get_attr_target_that_does_not_exist():
    """pyfuse raises where the reference returns a module whose forward fails."""

    class ReadsWeight(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.sig = nn.Sigmoid()

        def forward(self, x):
            return self.sig(self.conv(x) + self.conv.weight.sum())

    def make():
        gm = torch.fx.symbolic_trace(ReadsWeight().eval())
        (node,) = [n for n in gm.graph.nodes if n.op == "get_attr"]
        return _retarget(gm, node.name, "conv.gone")

    ref_out = reference_fuse(make(), False)
    with pytest.raises(AttributeError):
        ref_out(torch.randn(1, 3, 2, 2))
    gm = make()
    before = snapshot(gm)
    with pytest.raises(AttributeError) as info:
        pyfuse.fuse(gm, False)
    msg = message(info.value)
    assert "'conv_weight'" in msg, msg
    assert "'conv.gone'" in msg, msg
    assert_unchanged(before, gm)


class _MatchAllSubclass(MatchAllNode):
    pass


#: name -> (complex-format pattern pyfuse cannot compile, reference raises too)
BAD_PATTERNS = {
    "tuple as a pattern head": (((nn.ReLU, nn.BatchNorm2d), nn.Conv2d), False),
    "bare getattr": (getattr, False),
    "getattr as an argument": ((nn.ReLU, getattr), False),
    "empty tuple": ((), True),
    "empty tuple as an argument": ((nn.ReLU, ()), False),
    "getattr with two names": ((getattr, "weight", "bias"), True),
    # (the reference raises AssertionError only when such a match reaches its fuser
    # lookup; here the longer native patterns match first)
    "MatchAllNode subclass": ((nn.ReLU, _MatchAllSubclass), False),
}


def _native_plus(pattern) -> BackendConfig:
    bad = BackendPatternConfig()
    bad._set_pattern_complex_format(pattern)
    bad.set_fuser_method(lambda _is_qat, *_mods: nn.Identity())
    return get_native_backend_config().set_backend_pattern_config(bad)


@pytest.mark.parametrize("case", list(BAD_PATTERNS))
def test_backend_pattern_pyfuse_cannot_compile(case):
    pattern, ref_raises = BAD_PATTERNS[case]
    ref = raised(lambda: reference_fuse(tiny_gm(), False, None, _native_plus(pattern)))
    assert (ref is not None) == ref_raises, ref  # the table in RELIABILITY.md
    gm = tiny_gm()
    before = snapshot(gm)
    with pytest.raises(PatternError) as info:
        pyfuse.fuse(gm, False, None, _native_plus(pattern))
    assert repr(pattern) in message(info.value), message(info.value)
    assert_unchanged(before, gm)
    with pytest.raises(PatternError):  # fuse_fx too
        pyfuse.fuse_fx(TinyConvBnReLU().eval(), None, _native_plus(pattern))


@pytest.mark.parametrize(
    "case",
    [c for c, (_, ref_raises) in BAD_PATTERNS.items() if ref_raises],
)
def test_backend_pattern_rejected_by_both_with_the_reference_type(case):
    pattern, _ = BAD_PATTERNS[case]
    ref = raised(lambda: reference_fuse(tiny_gm(), False, None, _native_plus(pattern)))
    exc = raised(lambda: pyfuse.fuse(tiny_gm(), False, None, _native_plus(pattern)))
    assert ref is not None
    assert exc is not None
    assert_reference_type(
        exc, ref, {ValueError: PatternError, AssertionError: MalformedGetattr}
    )


def _returning(value) -> BackendConfig:
    p = BackendPatternConfig()
    p._set_pattern_complex_format((nn.ReLU, (nn.BatchNorm2d, nn.Conv2d)))
    p.set_fuser_method(lambda _is_qat, _relu, _bn_conv: value)
    return BackendConfig("returns_" + type(value).__name__).set_backend_pattern_config(
        p
    )


NON_MODULES = {
    "int": 42,
    "str": "fused",
    "tensor": torch.zeros(1),
    "tuple of modules": (nn.ReLU(),),
    "function": F.relu,
    "None": None,
}


@pytest.mark.parametrize("what", list(NON_MODULES))
def test_fuser_method_returning_a_non_module(what):
    value = NON_MODULES[what]
    if value is not None:  # None: next test
        assert raised(lambda: reference_fuse(tiny_gm(), False, None, _returning(value)))
    gm = tiny_gm()
    before = snapshot(gm)
    with pytest.raises(FusionError) as info:
        pyfuse.fuse(gm, False, None, _returning(value))
    msg = message(info.value)
    for part in ("Conv2d", "BatchNorm2d", "ReLU", "'relu'", type(value).__name__):
        assert part in msg, (part, msg)
    assert_unchanged(before, gm)


def test_fuser_method_returning_none_reference_builds_a_broken_model():
    """The reference installs None as the module and returns a model whose forward
    fails; pyfuse refuses (previous test)."""
    out = reference_fuse(tiny_gm(), False, None, _returning(None))
    with pytest.raises(TypeError):
        out(torch.randn(1, 3, 4, 4))


@pytest.mark.parametrize("what", [w for w in NON_MODULES if w != "None"])
def test_fuser_method_returning_a_non_module_reference_type(what):
    ref = raised(
        lambda: reference_fuse(tiny_gm(), False, None, _returning(NON_MODULES[what]))
    )
    exc = raised(
        lambda: pyfuse.fuse(tiny_gm(), False, None, _returning(NON_MODULES[what]))
    )
    assert ref is not None
    assert exc is not None
    assert_reference_type(exc, ref, {TypeError: NotAModule})
