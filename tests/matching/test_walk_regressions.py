"""Hand-written regressions of the matcher against torch's walk: cases the matcher
fuzzer (tests/fuzz/test_matcher.py) found or that pin a subtle rule of the walk."""

from __future__ import annotations

import operator
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Graph, GraphModule

from pyfuse.engine.matching import find_matches
from tests.fuzz.fixed_reference import REFERENCE_FIND_MATCHES
from tests.fuzz.graphs import (
    NATIVE_PATTERNS,
    ONEDNN_PATTERNS,
    MyConv2d,
    _parametrized,
    diff_results,
    fmt_result,
    same,
    sort_patterns,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch.ao.quantization.utils import MatchAllNode


def _gm(build, mods):
    root = nn.Module()
    for path, m in mods.items():
        setattr(root, path, m)
    g = Graph()
    build(g)
    return GraphModule(root, g)


def _compare(gm, patterns):
    sorted_dict = sort_patterns(patterns)
    ref = {
        k: v[:3] for k, v in REFERENCE_FIND_MATCHES(gm, gm.graph, sorted_dict).items()
    }
    got = find_matches(gm, gm.graph, list(sorted_dict))
    diffs = diff_results(ref, got)
    assert not diffs, (
        "\n".join(diffs)
        + "\nreference="
        + fmt_result(ref)
        + "\npyfuse="
        + fmt_result(got)
    )
    return ref


def _nodes(gm):
    return {n.name: n for n in gm.graph.nodes}


ADD_CONV_BN = (operator.add, (nn.BatchNorm2d, nn.Conv2d), MatchAllNode)


def test_regression_same_relu_twice_in_one_add():
    def build(g):
        x = g.placeholder("x")
        c = g.call_module("conv", (x,))
        r = g.call_module("relu", (c,))
        a = g.call_function(operator.add, (r, r))
        g.output(a)

    mods = {"conv": nn.Conv2d(1, 1, 1), "relu": nn.ReLU()}
    # the relu node is one user-edge of add: max_uses=1 holds; the second occurrence of an
    # already-claimed node is dropped from the node pattern (here: an empty tuple)
    gm = _gm(build, mods)
    n = _nodes(gm)
    ref = _compare(gm, [(operator.add, (nn.ReLU, nn.Conv2d), (nn.ReLU, nn.Conv2d))])
    assert same(ref["add"][2], [n["add"], (n["relu"], n["conv"]), ()])
    gm = _gm(build, mods)
    n = _nodes(gm)
    ref = _compare(gm, [(operator.add, nn.ReLU, nn.ReLU), (nn.ReLU, nn.Conv2d)])
    assert same(ref["add"][2], [n["add"], n["relu"]])
    assert "conv" not in ref
    ref = _compare(_gm(build, mods), list(NATIVE_PATTERNS))
    assert set(ref) == {"relu", "conv"}
    _compare(_gm(build, mods), list(ONEDNN_PATTERNS))


def test_regression_conv_with_two_users_breaks_chain():
    def build(g):
        x = g.placeholder("x")
        c = g.call_module("conv", (x,))
        b = g.call_module("bn", (c,))
        r = g.call_function(F.relu, (b,))
        g.output((r, c))

    gm = _gm(build, {"conv": nn.Conv2d(1, 1, 1), "bn": nn.BatchNorm2d(1)})
    ref = _compare(gm, list(NATIVE_PATTERNS))
    assert set(ref) == {"relu", "bn"}  # (F.relu, BatchNorm2d); conv left alone
    assert ref["relu"][1] == (F.relu, nn.BatchNorm2d)


def test_regression_subclass_does_not_match_parametrized_does():
    def build(g):
        x = g.placeholder("x")
        c1 = g.call_module("sub", (x,))
        r1 = g.call_module("relu", (c1,))
        c2 = g.call_module("par", (r1,))
        b2 = g.call_module("bn", (c2,))
        r2 = g.call_module("relu", (b2,))
        g.output(r2)

    mods = {
        "sub": MyConv2d(1, 1, 1),
        "relu": nn.ReLU(),
        "par": _parametrized(nn.Conv2d(1, 1, 1)),
        "bn": nn.BatchNorm2d(1),
    }
    ref = _compare(_gm(build, mods), list(NATIVE_PATTERNS))
    assert set(ref) == {"relu_1", "bn", "par"}
    # a parametrized subclass matches its own (user) class only
    mods["sub"] = _parametrized(MyConv2d(1, 1, 1))
    ref = _compare(_gm(build, mods), [(nn.ReLU, MyConv2d), (nn.ReLU, nn.Conv2d)])
    assert ref["relu"][1] == (nn.ReLU, MyConv2d)


def test_regression_same_module_called_twice():
    def build(g):
        x = g.placeholder("x")
        c1 = g.call_module("conv", (x,))
        b = g.call_module("bn", (c1,))
        c2 = g.call_module("conv", (b,))
        r = g.call_function(torch.relu, (c2,))
        r2 = g.call_method("relu", (r,))
        g.output(r2)

    mods = {"conv": nn.Conv2d(1, 1, 1), "bn": nn.BatchNorm2d(1)}
    ref = _compare(_gm(build, mods), [*list(NATIVE_PATTERNS), (torch.relu, nn.Conv2d)])
    assert set(ref) == {"relu", "conv_1", "bn", "conv"}
    ref = _compare(
        _gm(build, mods),
        [*list(NATIVE_PATTERNS), (torch.relu, nn.Conv2d), ("relu", torch.relu)],
    )
    assert set(ref) == {"relu_1", "relu", "bn", "conv"}  # conv_1 left alone


def test_regression_getattr_pattern_claims_its_input():
    def build(g):
        x = g.placeholder("x")
        c = g.call_module("conv", (x,))
        r = g.call_module("relu", (c,))
        s = g.call_function(getattr, (r, "shape"))
        d = g.call_function(getattr, (r, "dtype"))
        g.output((s, d))

    mods = {"conv": nn.Conv2d(1, 1, 1), "relu": nn.ReLU()}
    gm = _gm(build, mods)
    n = _nodes(gm)
    ref = _compare(gm, [(getattr, "shape"), (nn.ReLU, nn.Conv2d)])
    # the getattr pattern's "shape" entry is applied to node.args[0]: the relu (2 users)
    # is claimed, so (ReLU, Conv2d) never gets to start at it
    assert set(ref) == {"getattr_1", "relu"}
    assert ref["relu"][1] == (getattr, "shape")
    assert same(ref["relu"][2], [n["getattr_1"], n["relu"]])
    ref = _compare(
        _gm(build, mods), [(getattr, "dtype"), (getattr, "shape"), (nn.ReLU, nn.Conv2d)]
    )
    assert set(ref) == {"getattr_1", "getattr_2", "relu"}
    _compare(_gm(build, mods), [(nn.ReLU, nn.Conv2d), (getattr, "dtype")])


def test_regression_matchall_repeated_and_already_claimed():
    def build(g):
        x = g.placeholder("x")
        c = g.call_module("conv", (x,))
        r = g.call_module("relu", (c,))
        a = g.call_function(operator.add, (r, c))
        c2 = g.call_module("conv2", (a,))
        s = g.call_function(getattr, (c2, "shape"))
        a2 = g.call_function(torch.add, (c2, c2))
        g.output((a2, s))

    mods = {"conv": nn.Conv2d(1, 1, 1), "relu": nn.ReLU(), "conv2": nn.Conv2d(1, 1, 1)}
    pats = [
        (torch.add, MatchAllNode, MatchAllNode),
        (getattr, "shape"),
        (operator.add, (nn.ReLU, MatchAllNode), MatchAllNode),
    ]
    gm = _gm(build, mods)
    n = _nodes(gm)
    ref = _compare(gm, pats)
    assert same(ref["add"][2], [n["add"], (n["relu"], n["conv"]), n["conv"]])
    _compare(_gm(build, mods), list(ONEDNN_PATTERNS))


def test_regression_kwargs_ignored_and_arity():
    def build(g):
        x = g.placeholder("x")
        y = g.placeholder("y")
        c = g.call_module("conv", (x,))
        r = g.call_function(F.relu, (c,), {"inplace": False})
        c2 = g.call_module("conv2", (r,))
        a = g.call_function(torch.add, (c2,), {"other": y})
        g.output(a)

    mods = {"conv": nn.Conv2d(1, 1, 1), "conv2": nn.Conv2d(1, 1, 1)}
    ref = _compare(_gm(build, mods), [*list(ONEDNN_PATTERNS), (torch.add, nn.Conv2d)])
    assert ref["add"][1] == (torch.add, nn.Conv2d)
    assert ref["relu"][1] == (F.relu, nn.Conv2d)


@pytest.mark.parametrize("first", [0, 1])
def test_regression_tie_order(first):
    def build(g):
        x = g.placeholder("x")
        c = g.call_module("conv", (x,))
        r = g.call_function(F.relu, (c,))
        g.output(r)

    pats = [(F.relu, MatchAllNode), (F.relu, nn.Conv2d)]
    if first:
        pats.reverse()
    ref = _compare(_gm(build, {"conv": nn.Conv2d(1, 1, 1)}), pats)
    assert ref["relu"][1] == pats[0]
