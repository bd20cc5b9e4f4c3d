"""A fuser method, getter or check failing part-way leaves the model exactly as it was
(the reference leaves it half-fused), and the exception names the failing match
(RELIABILITY.md section 2)."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn
from torch.ao.quantization.backend_config import (
    BackendConfig,
    BackendPatternConfig,
    get_native_backend_config,
)
from torch.ao.quantization.utils import MatchAllNode

import pyfuse
from pyfuse import FusionError
from pyfuse.errors import ErasedInput, NotAModule
from tests.fx.traps import Boom, Trap, matched_modules, module_node_after, nodes_in
from tests.fx.unchanged import (
    assert_unchanged,
    changed_module_paths,
    message,
    raised,
    snapshot,
    traced,
)
from tests.support.contract import (
    assert_same_fusion,
    reference_fuse,
    run_both,
    single_thread,
)
from tests.support.corpus import BACKENDS, MODELS_BY_NAME


@pytest.fixture(autouse=True)
def _single_threaded():
    with single_thread():
        yield


# ======================================================================================
# 2. Nothing lost on failure
# ======================================================================================


#: (corpus model, backend) for the failure tests: many fusions each (onednn: conv-add
#: patterns with MatchAllNode and extra-inputs getters)
FAIL_MODELS = [("resnet18", "native"), ("onednn_residual", "onednn")]
#: onednn's conv-bn-add fuser raises in QAT by design, so QAT only with resnet18
FAIL_CASES = [
    (*FAIL_MODELS[0], "eval"),
    (*FAIL_MODELS[0], "qat"),
    (*FAIL_MODELS[1], "eval"),
]


def _count_calls(name: str, backend: str, mode: str) -> Trap:
    trap = Trap()
    pyfuse.fuse(
        traced(name, mode), mode == "qat", None, trap.config(BACKENDS[backend]())
    )
    return trap


def _call_sites(gm: torch.fx.GraphModule) -> dict[int, list[str]]:
    sites: dict[int, list[str]] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            sites.setdefault(id(gm.get_submodule(n.target)), []).append(n.name)
    return sites


def _which(n: int) -> list[int]:
    return sorted({1, (n + 1) // 2, n})


@pytest.mark.parametrize(("name", "backend", "mode"), FAIL_CASES)
def test_fuser_method_raising_leaves_the_model_unchanged(name, backend, mode):
    n_calls = len(_count_calls(name, backend, mode).fuser_calls)
    assert n_calls >= 4, (
        "the model must have several fusions for this test to mean much"
    )
    for k in _which(n_calls):
        gm = traced(name, mode)
        before = snapshot(gm)
        sites = _call_sites(gm)
        trap = Trap("raise", k)
        with pytest.raises(Boom) as info:
            pyfuse.fuse(gm, mode == "qat", None, trap.config(BACKENDS[backend]()))
        assert len(trap.fuser_calls) == k
        assert_unchanged(before, gm)
        # the message names the failing match: its module types and (unshared) nodes
        msg = message(info.value)
        pattern, args = trap.fuser_calls[-1]
        mods = matched_modules(pattern, args)
        names = [sites[id(m)][0] for m in mods if len(sites.get(id(m), [])) == 1]
        assert names, "the failing match calls model modules"
        for part in [type(m).__name__ for m in mods] + [repr(n) for n in names]:
            assert part in msg, (k, part, msg)


@pytest.mark.parametrize(
    "kind", ["root_raise", "extra_raise", "root_outside", "return_int"]
)
@pytest.mark.parametrize(("name", "backend"), FAIL_MODELS)
def test_getter_or_check_failing_leaves_the_model_unchanged(name, backend, kind):
    counted = _count_calls(name, backend, "eval")
    calls = {
        "root_raise": counted.root_calls,
        "extra_raise": counted.extra_calls,
        "root_outside": counted.root_calls,
        "return_int": counted.fuser_calls,
    }[kind]
    assert len(calls) >= 4
    ks = _which(len(calls))
    if kind == "root_outside":  # matches with a call_module node computed from them
        nodes = {
            n.name: n for n in traced(name).graph.nodes
        }  # (`calls`' graph is fused)
        eligible = [
            k
            for k, c in enumerate(calls, 1)
            if module_node_after(nodes[nodes_in(c)[0].name])
        ]
        assert len(eligible) >= 3
        ks = [eligible[i - 1] for i in _which(len(eligible))]
    # the reference's type for each failure, and pyfuse's (its documented subclass
    # where pyfuse checks before anything changes)
    ref_type, want = {
        "root_raise": (Boom, Boom),
        "extra_raise": (Boom, Boom),
        "root_outside": (KeyError, ErasedInput),
        "return_int": (TypeError, NotAModule),
    }[kind]
    for k in ks:
        ref = raised(
            lambda k=k: reference_fuse(
                traced(name), False, None, Trap(kind, k).config(BACKENDS[backend]())
            )
        )
        assert type(ref) is ref_type, (k, ref)
        gm = traced(name)
        before = snapshot(gm)
        trap = Trap(kind, k)
        with pytest.raises(ref_type) as info:
            pyfuse.fuse(gm, False, None, trap.config(BACKENDS[backend]()))
        assert type(info.value) is want, (k, info.value)
        assert_unchanged(before, gm)


def test_check_failure_names_the_match():
    """A root-node getter returning a node the fused node cannot be fails pyfuse's edit
    check before anything is edited, with the reference's exception type (KeyError);
    the message names the pattern and the match's node."""
    counted = _count_calls("resnet18", "native", "eval")
    k = (len(counted.root_calls) + 1) // 2
    with pytest.raises(KeyError):
        reference_fuse(
            traced("resnet18"),
            False,
            None,
            Trap("root_outside", k).config(get_native_backend_config()),
        )
    gm = traced("resnet18")
    trap = Trap("root_outside", k)
    with pytest.raises(FusionError) as info:
        pyfuse.fuse(gm, False, None, trap.config(get_native_backend_config()))
    assert type(info.value) is ErasedInput  # a FusionError and the reference's KeyError
    nodes = nodes_in(trap.root_calls[k - 1])
    msg = message(info.value)
    assert repr(nodes[0].name) in msg, msg  # the match's last node
    for n in nodes:
        if n.op == "call_module":
            assert type(gm.get_submodule(n.target)).__name__ in msg, msg


class _ReluUsedTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()
        self.lin = nn.Linear(1, 1)

    def forward(self, x):
        r = self.relu(x)
        return self.lin(r), r.shape


def _claiming_config(*patterns) -> BackendConfig:
    config = BackendConfig("claims")
    for pattern in patterns:
        p = BackendPatternConfig()._set_pattern_complex_format(pattern)
        p.set_fuser_method(
            lambda _is_qat, *mods: nn.Sequential(
                *[m for m in mods if isinstance(m, nn.Module)]
            )
        )
        config.set_backend_pattern_config(p)
    return config


class _ReluTanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, x):
        return torch.tanh(self.relu(x))


@pytest.mark.parametrize(
    ("model", "patterns", "removed", "user"),
    [
        # the reference claims a getattr pattern's arguments unchecked: 'relu', which
        # 'lin' also reads (bug G: pyfuse erased it anyway, leaving 'lin' reading an
        # undefined name); the second pattern provides a fuser for (getattr, ReLU)
        (_ReluUsedTwice, [(getattr, "shape"), (getattr, nn.ReLU)], "relu", "lin"),
        # a pattern whose last position is MatchAllNode matches at every node and is
        # never fused, yet what it claims (unchecked: 'x' as ReLU) is dropped
        (_ReluTanh, [(MatchAllNode, nn.ReLU)], "x", "relu"),
    ],
    ids=["getattr_arguments", "match_all_node_last"],
)
def test_match_removing_a_node_used_elsewhere(model, patterns, removed, user):
    """Both raise KeyError (the reference copying a node whose input it dropped);
    pyfuse's names the pattern and both nodes, and the model is unchanged."""
    with pytest.raises(KeyError):
        reference_fuse(
            torch.fx.symbolic_trace(model()), False, None, _claiming_config(*patterns)
        )
    gm = torch.fx.symbolic_trace(model())
    before = snapshot(gm)
    with pytest.raises(FusionError) as info:
        pyfuse.fuse(gm, False, None, _claiming_config(*patterns))
    assert type(info.value) is ErasedInput  # a FusionError and the reference's KeyError
    msg = message(info.value)
    assert f"removes {removed!r}, which {user!r} also uses" in msg, msg
    assert_unchanged(before, gm)


class _ReluReadTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        r = self.relu(x)
        return self.conv(x) + r, r.shape


def test_node_removed_and_read_by_another_match_fuses_like_the_reference():
    """'relu' is claimed (unchecked) by the (getattr, "shape") match and read by 'add',
    which the (add, Conv2d, MatchAllNode) match removes: nothing that stays reads it,
    so the reference returns a model, and pyfuse must return the same one (erasing
    either node in place first would fail: pyfuse rebuilds the graph)."""
    import operator

    config = _claiming_config(
        (getattr, "shape"),
        (getattr, nn.ReLU),
        (operator.add, nn.Conv2d, MatchAllNode),
        (operator.add, nn.Conv2d),
    )
    x = (torch.randn(1, 2, 3, 3),)

    def make():
        torch.manual_seed(0)
        return _ReluReadTwice().eval()

    ref, out = run_both(make, x, backend_config=config)
    assert_same_fusion(ref, out, x)
    assert len(out.graph.nodes) == 4  # x, conv, relu, output


@pytest.mark.parametrize("kind", ["root_raise", "extra_raise"])
def test_getter_failure_names_the_match(kind):
    counted = _count_calls("resnet18", "native", "eval")
    k = (len(counted.root_calls) + 1) // 2
    trap = Trap(kind, k)
    with pytest.raises(Boom) as info:
        pyfuse.fuse(
            traced("resnet18"), False, None, trap.config(get_native_backend_config())
        )
    calls = trap.root_calls if kind == "root_raise" else trap.extra_calls
    msg = message(info.value)
    for n in nodes_in(calls[-1]):
        assert repr(n.name) in msg, (n.name, msg)


def test_reference_leaves_a_half_fused_model_pyfuse_does_not():
    """Same trap, both passes: the reference has already swapped the modules of the
    matches before the failing one (its graph is untouched, so .code is the same, but
    the model now computes something else); pyfuse has touched nothing."""
    n_calls = len(_count_calls("resnet18", "native", "eval").fuser_calls)
    k = (n_calls + 1) // 2
    x = MODELS_BY_NAME["resnet18"].example_inputs_factory()
    results = {}
    for impl in (reference_fuse, pyfuse.fuse):
        gm = traced("resnet18")
        before = snapshot(gm)
        with torch.no_grad():
            y0 = gm(*x)
        with pytest.raises(Boom):
            impl(gm, False, None, Trap("raise", k).config(get_native_backend_config()))
        with torch.no_grad():
            y1 = gm(*x)
        results[impl] = (
            before,
            gm,
            torch.equal(y0, y1),
            changed_module_paths(before, gm),
        )

    before, gm, same_output, changed = results[reference_fuse]
    # the reference builds a new graph and leaves this one alone, but it has swapped
    # the module of every match before the failing one
    assert gm.code == before["code"]
    assert len(changed) == k - 1, changed
    assert not same_output, "the half-fused reference model computes something else"

    before, gm, same_output, changed = results[pyfuse.fuse]
    assert changed == []
    assert same_output
    assert_unchanged(before, gm)


def test_fuse_fx_leaves_the_module_unchanged_on_failure_and_on_success():
    model = MODELS_BY_NAME["resnet18"].factory().eval()
    x = MODELS_BY_NAME["resnet18"].example_inputs_factory()
    with torch.no_grad():
        y0 = model(*x)
    before = snapshot(model)
    n_calls = len(_count_calls("resnet18", "native", "eval").fuser_calls)
    for k in _which(n_calls):
        with pytest.raises(Boom):
            pyfuse.fuse_fx(
                model, None, Trap("raise", k).config(get_native_backend_config())
            )
        assert_unchanged(before, model)
    fused = pyfuse.fuse_fx(model)
    assert fused is not model
    assert_unchanged(before, model)
    with torch.no_grad():
        assert torch.equal(model(*x), y0)
