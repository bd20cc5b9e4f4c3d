"""pyfuse.recompile does what GraphModule.recompile does; the per-graph fallbacks
to FX; the value formatting the emitter does natively."""

from __future__ import annotations

import linecache
import math
import struct
import traceback

import pytest
import torch
import torch.fx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx import Graph, GraphModule
from torch.fx.graph import CodeGen, PythonCode
from torch.fx.immutable_collections import immutable_dict, immutable_list

import pyfuse
from pyfuse import _core, codegen
from tests.codegen.compare import same_code


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
        y = torch.relu(self.conv(x)) * scale
        z = self.lin(y.mean((2, 3)))
        return z.softmax(dim=-1) + self.lin.bias


def boom(x: torch.Tensor) -> torch.Tensor:
    raise ValueError(f"boom: {x.shape}")


torch.fx.wrap("boom")


class Raises(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + 1
        return boom(y)


def _pair(model: torch.nn.Module) -> tuple[GraphModule, GraphModule]:
    return torch.fx.symbolic_trace(model), torch.fx.symbolic_trace(model)


@pytest.mark.parametrize(
    ("node", "ilist", "idict", "message"),
    [
        ("Node", immutable_list, immutable_dict, r"^node_type must be a type$"),
        (torch.fx.Node, [], immutable_dict, r"^immutable_list must be a type$"),
        (torch.fx.Node, immutable_list, {}, r"^immutable_dict must be a type$"),
    ],
    ids=["node_type", "immutable_list", "immutable_dict"],
)
def test_emitter_argument_that_is_not_a_type_is_named(node, ilist, idict, message):
    def classify(_o):
        return 0

    with pytest.raises(TypeError, match=message):
        _core.Emitter({}, [], ("wrap", 0, False), node, ilist, idict, *[classify] * 3)


def test_recompile_same_code_attributes_and_outputs():
    ref, gm = _pair(Net())
    for g in (ref.graph, gm.graph):
        for node in g.nodes:
            if node.op == "call_module" and node.target == "lin":
                with g.inserting_after(node):
                    extra = g.call_function(torch.sigmoid, (node,))
                node.replace_all_uses_with(
                    extra, delete_user_cb=lambda u, e=extra: u is not e
                )
                break
    ref_code = ref.recompile()
    code = pyfuse.recompile(gm)
    assert code is not None
    assert code.src == ref_code.src
    assert gm.code == ref.code
    assert gm._lineno_map == ref._lineno_map
    assert gm._prologue_start == ref._prologue_start
    assert "sigmoid" in gm.code
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(gm(x), ref(x), rtol=0, atol=0)
    assert type(gm).__call__.__name__ == type(ref).__call__.__name__


def test_traceback_points_at_generated_code():
    ref, gm = _pair(Raises())
    pyfuse.recompile(gm)
    assert gm.code == ref.code
    assert "wrap(" in gm.code  # the wrapped function's registration
    with pytest.raises(ValueError, match="boom") as info:
        gm(torch.ones(2))
    frames = traceback.extract_tb(info.value.__traceback__)
    fwd = [
        f
        for f in frames
        if f.name == "forward" and f.filename.startswith("<eval_with_key>")
    ]
    assert fwd, [f.filename for f in frames]
    frame = fwd[-1]
    assert frame.line is not None
    assert "boom(add)" in frame.line
    # the line comes from the source registered in linecache under that file name
    assert linecache.getline(frame.filename, frame.lineno).strip() == frame.line
    assert gm.code.splitlines()[frame.lineno - 1].strip() == frame.line


def test_equal_string_annotations_share_a_global():
    """FX names globals through a dict: equal annotation strings get one name."""
    g = Graph()
    a = g.placeholder("a", type_expr="torch.Tensor")
    b = g.placeholder("b", type_expr="".join(["torch.", "Tensor"]))  # noqa: FLY002
    assert a.type == b.type
    assert a.type is not b.type
    g.output((a, b), type_expr="".join(["torch.", "Tensor"]))  # noqa: FLY002
    assert same_code(g) is None


def test_recompile_submodules_and_set_graph():
    inner = torch.fx.symbolic_trace(Net())
    outer = torch.nn.Module()
    outer.inner = inner
    graph = Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_module("inner", (x,)))
    gm = GraphModule(outer, graph)
    inner.graph.call_function  # noqa: B018 - the child keeps its graph
    codegen.set_graph(gm, graph)
    assert gm.graph is graph
    assert graph.owning_module is gm
    x_in = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(gm(x_in), Net.forward(inner, x_in), rtol=0, atol=0)
    with pytest.raises(TypeError, match="Graph"):
        codegen.set_graph(gm, "not a graph")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="GraphModule"):
        pyfuse.recompile(torch.nn.Linear(1, 1))  # type: ignore[arg-type]


def test_lazy_graph_module_keeps_its_own_recompile():
    from torch.fx._lazy_graph_module import _LazyGraphModule

    gm = _LazyGraphModule(Net(), torch.fx.symbolic_trace(Net()).graph)
    assert pyfuse.recompile(gm) is None
    assert gm._needs_recompile()
    gm(torch.randn(1, 3, 8, 8))
    assert not gm._needs_recompile()


class _Custom(CodeGen):
    pass


def test_fallbacks_are_reasoned_and_fx_text_is_kept():
    gm = torch.fx.symbolic_trace(Net())
    g = gm.graph
    assert same_code(g) is None

    g._codegen = _Custom()
    assert codegen.try_python_code(g) == "code generator _Custom"
    before = codegen.FALLBACKS["code generator _Custom"]
    assert codegen.python_code(g).src == g.python_code("self").src
    assert codegen.FALLBACKS["code generator _Custom"] == before + 1
    g._codegen = CodeGen()

    with g.on_generate_code(lambda _: lambda body: ["# hi\n", *body]):
        assert codegen.try_python_code(g) == "a body transformer (on_generate_code)"
        pyfuse.recompile(gm)
        assert gm.code.lstrip().startswith("def forward")
        assert "# hi" in gm.code
    assert same_code(g) is None


def test_fallback_when_fx_is_patched(monkeypatch):
    g = torch.fx.symbolic_trace(Net()).graph
    monkeypatch.setattr(
        torch.fx.graph, "_format_target", lambda base, target: base + target
    )
    assert (
        codegen.try_python_code(g) == "torch.fx code generation replaced after import"
    )


def test_fallback_on_unchecked_torch_version(monkeypatch):
    g = torch.fx.symbolic_trace(Net()).graph
    monkeypatch.setattr(codegen, "_TORCH_CHECKED", False)
    assert codegen.try_python_code(g).startswith("torch ")


def test_fallback_with_show_meta(monkeypatch):
    g = torch.fx.symbolic_trace(Net()).graph
    monkeypatch.setenv("FX_GRAPH_SHOW_META", "1")
    assert codegen.try_python_code(g) == "FX_GRAPH_SHOW_META=1"


def test_unreadable_node_falls_back():
    """A node the native reader cannot read (here: a name that is not a str) is
    FX's to write (or to reject): the emitter reports and writes nothing."""
    g = torch.fx.symbolic_trace(Net()).graph
    node = next(iter(g.nodes))
    node.name = 42  # type: ignore[assignment]
    assert codegen.try_python_code(g) == "a node name that is not a str"


def test_node_attributes_read_as_getattr_reads_them():
    """The emitter reads Node attributes from their slots; a class attribute
    that replaces a slot, and a Node subclass, are read through getattr, as FX
    reads them."""
    g = torch.fx.symbolic_trace(Net()).graph
    assert same_code(g) is None  # (the emitter exists before the class changes)
    assert "type" not in vars(torch.fx.Node)  # (the slot is its C base class's)
    torch.fx.Node.type = property(lambda _: int)  # type: ignore[assignment,method-assign]
    try:
        assert same_code(g) is None
        assert "x : int, scale : int = 2.0" in g.python_code("self").src
    finally:
        del torch.fx.Node.type
    assert same_code(g) is None
    assert "x : int" not in g.python_code("self").src

    class Renamed(torch.fx.Node):
        @property
        def type(self):  # type: ignore[override]
            return float

    node = next(iter(g.nodes))
    node.__class__ = Renamed
    assert same_code(g) is None
    assert "x : float, scale" in g.python_code("self").src


def test_edit_listing_a_node_twice_or_missing_an_argument_falls_back():
    """A planned edit whose node list has a node twice, or leaves out a node a kept
    node reads (and does not redirect it), is not a graph: the emitter's node index
    reports it and nothing is written."""
    g = Graph()
    x = g.placeholder("x")
    a = g.call_function(torch.relu, (x,))
    g.output(g.call_function(torch.neg, (a,)))
    nodes = list(g.nodes)
    twice = codegen.PlannedEdit(nodes[:2] + nodes[1:], {})
    assert codegen.try_python_code(g, edit=twice) == "a node listed twice"
    unlisted = codegen.PlannedEdit([n for n in nodes if n is not a], {})
    assert (
        codegen.try_python_code(g, edit=unlisted)
        == "an argument refers to a node outside the graph"
    )
    redirected = codegen.PlannedEdit(unlisted.nodes, {a: x})
    assert isinstance(codegen.try_python_code(g, edit=redirected), PythonCode)


def test_annotations_and_defaults_are_native():
    """Net.forward's annotations (strings here: this module has postponed
    annotations) and default value, and real types, are written natively."""
    g = torch.fx.symbolic_trace(Net()).graph
    assert same_code(g) is None
    assert "scale : _float_ = 2.0" in g.python_code("self").src
    for node in g.nodes:
        if node.op == "placeholder":
            node.type = float if node.name == "scale" else torch.Tensor
    assert same_code(g) is None
    assert "x : torch.Tensor, scale : float = 2.0" in g.python_code("self").src


def test_list_arguments_are_read_in_place():
    """List arguments (FX's immutable_list once in a node, plain lists when set
    directly), nested or not, empty or not, are read in place and written as FX
    writes them."""
    g = Graph()
    x = g.placeholder("x")
    plain = g.call_function(torch.cat, ([x, x, [1, 2.5, "a"]],))
    nested = g.call_function(torch.cat, ([plain, [[], [x]], immutable_list([3])],))
    assert type(nested.args[0]) is immutable_list
    raw = g.call_function(torch.cat, ([],))
    raw._args = ([nested, [7, [x]], []],)  # a plain list, not normalised
    g.output(raw)
    assert same_code(g) is None
    src = g.python_code("self").src
    assert "torch.cat([x, x, [1, 2.5, 'a']])" in src
    assert "torch.cat([cat, [[], [x]], [3]])" in src
    assert "torch.cat([cat_1, [7, [x]], []])" in src


def test_operator_overloads_are_named_once(monkeypatch):
    """aten overloads (exported graphs) are classified once per process, other
    targets once per graph; the text stays FX's either way."""
    aten = torch.ops.aten
    g = Graph()
    x = g.placeholder("x")
    y = g.call_function(aten.relu.default, (x,))
    z = g.call_function(aten.add.Tensor, (y, x))
    g.output(g.call_function(torch.sigmoid, (z,)))
    asked: list[object] = []
    classify = codegen._classify_any_callee

    def counting(target: object) -> object:
        asked.append(target)
        return classify(target)

    monkeypatch.setattr(codegen, "_classify_any_callee", counting)
    monkeypatch.setattr(codegen, "_OVERLOAD_CALLEES", {})
    assert same_code(g) is None
    assert asked == [aten.relu.default, aten.add.Tensor, torch.sigmoid]
    asked.clear()
    assert same_code(g) is None
    assert asked == [torch.sigmoid]


def test_empty_graph_and_other_root_module():
    g = Graph()
    assert same_code(g) is None
    g2 = torch.fx.symbolic_trace(Net()).graph
    assert same_code(g2, "root.sub") is None


def _bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x))[0]


@settings(max_examples=3000, deadline=None)
@given(
    st.floats()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1).map(
        lambda b: struct.unpack("<d", struct.pack("<q", b))[0]
    )
)
def test_float_repr_is_pythons(x):
    assert _core.float_repr(x) == repr(x)


@pytest.mark.parametrize(
    "x",
    [
        0.0,
        -0.0,
        1e16,
        1e15,
        9999999999999998.0,
        1e-4,
        1e-5,
        0.1,
        1 / 3,
        5e-324,
        math.inf,
        -math.inf,
        math.nan,
        1.7976931348623157e308,
        123456789.0,
        1e22,
        2.5e-7,
    ],
)
def test_float_repr_edges(x):
    assert _core.float_repr(x) == repr(x)


def test_getattr_with_non_ascii_names_is_native():
    """FX's getattr shortcut for non-ASCII identifiers (Python's own rule decides)."""
    g = Graph()
    x = g.placeholder("x")
    a = g.call_function(getattr, (x, "é"))
    b = g.call_function(getattr, (x, "1é"))
    g.output((a, b))
    assert same_code(g) is None
    assert "getattr_1 = x.é" in g.python_code("self").src


def _named(name: str):
    def f(x):
        return x + 1

    f.__name__ = f.__qualname__ = name
    return f


def test_many_names_and_bases_are_native():
    # More names and distinct base names than the emitter's name tables start
    # with (they grow), and clashing ones (renumbered as FX renumbers them).
    g = Graph()
    v = g.placeholder("x")
    funcs = [_named(f"f{i}") for i in range(70)] + [_named("helper")] * 3
    # same names, other objects: renumbered past names taken before the tables grew
    funcs += [_named("helper") for _ in range(3)] + [_named("f0"), _named("f1")]
    for f in funcs:
        v = g.call_function(f, (v,))
    g.call_function(funcs[0], (v,), name="helper_2")
    g.output(v)
    assert same_code(g) is None
    gm = GraphModule(torch.nn.Module(), g)
    assert torch.equal(gm(torch.zeros(1)), torch.full((1,), float(len(funcs))))
