"""Flattening an FX graph into the core's arrays (pyfuse.engine.flatten)."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx
from torch import nn

from pyfuse import _core
from pyfuse.engine.flatten import flatten
from pyfuse.engine.patterns import compile_patterns


class ConvAddRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv(x) + 1).relu()


def test_flat_arrays_follow_the_graph():
    gm = torch.fx.symbolic_trace(ConvAddRelu())
    compiled = compile_patterns([(nn.ReLU, nn.Conv2d), (operator.add, nn.Conv2d, 1)])
    flat = flatten(gm.graph, gm, compiled)
    assert [n.name for n in flat.nodes] == ["x", "conv", "add", "relu", "output"]
    assert flat.modules[1] is gm.conv
    assert [m is None for m in flat.modules] == [True, False, True, True, True]
    g = flat.graph
    assert g.users == [1, 1, 1, 1, 0]
    assert g.arg_off == [0, 0, 1, 3, 4, 5]
    # add(conv, 1): the node, then the literal 1 (the sub-pattern it equals)
    conv_arg, one = g.arg[1:3]
    assert conv_arg == 1
    assert one < 0
    assert _core.literal_code(one) >= 0
    assert g.label[0] == 0  # a placeholder names no pattern


def test_node_attributes_read_as_getattr_reads_them():
    """Node attributes are read from their slots, except where getattr would
    find something else: a Node subclass's property (here, no users)."""
    gm = torch.fx.symbolic_trace(ConvAddRelu())
    compiled = compile_patterns([(nn.ReLU, nn.Conv2d), (operator.add, nn.Conv2d, 1)])
    assert flatten(gm.graph, gm, compiled).graph.users == [1, 1, 1, 1, 0]

    class Unused(torch.fx.Node):
        @property
        def users(self):  # type: ignore[override]
            return {}

    next(iter(gm.graph.nodes)).__class__ = Unused
    assert flatten(gm.graph, gm, compiled).graph.users == [0, 1, 1, 1, 0]


def test_missing_module_gets_its_own_label():
    gm = torch.fx.symbolic_trace(ConvAddRelu())
    del gm._modules["conv"]
    compiled = compile_patterns([(nn.ReLU, nn.Conv2d)])
    flat = flatten(gm.graph, gm, compiled)
    assert flat.graph.label[1] == _core.MISSING_MODULE
    assert flat.modules[1] is None


def test_bad_interning_table_entry_names_the_node():
    """The tables come from pyfuse; a non-integer entry is a clear error, not a
    silently wrong label."""
    gm = torch.fx.symbolic_trace(ConvAddRelu())
    interner = _core.Interner({}, {"relu": "one"}, {}, {}, lambda _m: 0, torch.fx.Node)
    with pytest.raises(
        ValueError, match=r"node relu: the method label for it is 'one'"
    ):
        interner.flatten(gm.graph.nodes, gm)
    interner = _core.Interner({}, {}, {}, {1: 2**40}, lambda _m: 0, torch.fx.Node)
    with pytest.raises(
        ValueError, match=r"node add: the literal id for it is 1099511627776"
    ):
        interner.flatten(gm.graph.nodes, gm)


def test_node_type_that_is_not_a_type_is_named():
    with pytest.raises(TypeError, match=r"^node_type must be a type$"):
        _core.Interner({}, {}, {}, {}, lambda _m: 0, "Node")


def test_nodes_without_a_length_are_indexed_past_the_first_table():
    """An iterable of nodes without a length: the node index starts at its
    smallest and grows; nodes read after it grew (the first one, the previous one)
    are still found."""
    g = torch.fx.Graph()
    x = v = g.placeholder("x")
    for _ in range(40):
        v = g.call_function(operator.add, (v, x))
    g.output(v)
    root = nn.Module()
    interner = compile_patterns([(nn.ReLU, nn.Conv2d)]).interner
    sized, nodes, *_ = interner.flatten(g.nodes, root)
    unsized, nodes_again, *_ = interner.flatten((n for n in g.nodes), root)
    assert nodes_again == nodes == list(g.nodes)
    assert unsized.arg == sized.arg
    assert sized.arg[-3:-1] == [39, 0]  # the last add reads node 39 and x
    for a in ("label", "users", "arg_off"):
        assert getattr(unsized, a) == getattr(sized, a)


class _Calls(nn.Module):
    """Calls `first`, then `second` (which may be the same module)."""

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


@pytest.mark.parametrize(
    ("first", "second", "repeated", "nested"),
    [
        (nn.ReLU(), nn.ReLU(), False, False),
        (relu := nn.ReLU(), relu, True, False),  # one module at two paths
        (nn.ReLU(), nn.Sequential(nn.ReLU()), False, True),
    ],
    ids=["distinct", "repeated", "nested"],
)
def test_flags_say_whether_modules_are_shared_or_hold_others(
    first, second, repeated, nested
):
    """The pass's conflict check skips its work when no module is called twice
    and none holds another; flattening says so."""
    g = torch.fx.Graph()
    g.output(g.call_module("second", (g.call_module("first", (g.placeholder("x"),)),)))
    flat = flatten(g, _Calls(first, second), compile_patterns([(nn.ReLU, nn.Conv2d)]))
    assert (flat.repeated, flat.nested) == (repeated, nested)


def test_a_module_whose_submodules_cannot_be_read_counts_as_nested():
    class Opaque(nn.ReLU):
        def __getattribute__(self, name: str) -> object:
            if name == "_modules":
                raise RuntimeError("unreadable")
            return super().__getattribute__(name)

    g = torch.fx.Graph()
    g.output(g.call_module("first", (g.placeholder("x"),)))
    root = _Calls(Opaque(), nn.ReLU())
    flat = flatten(g, root, compile_patterns([(nn.ReLU, nn.Conv2d)]))
    assert flat.nested
    assert not flat.repeated
