"""Differential fuzz of the emitter against FX's code generation on random graphs.

Random placeholders (defaults, annotations), get_attr / call_module (dotted and
non-identifier paths), call_function (operators, in-place operators, getattr,
torch functions, aten overloads, user and wrapped functions), call_method, and
outputs; argument values of many kinds (ints of any size, floats incl. inf/nan/
-0.0, strings with quotes, escapes, non-ASCII and counter markers, tuples, lists,
dicts, slices, dtypes, devices, memory formats, layouts, torch.Size, None, ...);
node names colliding with builtins, keywords, FX's globals and each other;
unused values; the default and the pytree code generator.

Where FX writes code, the emitter must write the same text, or hand the graph
back for a reason the graph justifies (a value kind it does not cover). Where FX
raises, the emitter must not write anything.
"""

from __future__ import annotations

import enum
import math
import operator
import typing
from typing import Any, NamedTuple

import torch
import torch.utils._pytree as pytree
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch.fx import Graph, Node
from torch.fx.graph import _PyTreeCodeGen, _PyTreeInfo

from pyfuse import codegen
from tests.codegen.compare import same_code


class Point(NamedTuple):
    x: int
    y: int


class Color(enum.Enum):
    RED = 1


def relu(x: Any) -> Any:
    """A user function: a global named from its qualified name."""
    return x


def wrapped_fn(x: Any) -> Any:
    """Marked as wrapped (node.meta["is_wrapped"]): listed in wrap() statements."""
    return x


class Annot:
    """A user class used as a type annotation."""


NAMES = [
    "x",
    "x_1",
    "x_01",
    "x_1_2",
    "add",
    "add_1",
    "input",
    "list",
    "id",
    "sum",
    "type",
    "class",
    "def",
    "lambda",
    "self",
    "getattr",
    "torch",
    "inf",
    "nan",
    "device",
    "wrap",
    "fx_pytree",
    "pytree",
    "NoneType",
    "math_sqrt",
    "_unnamed",
    "_1",
    "__1",
    "a__2",
    "conv",
    "None",
    "True",
    "print",
    "out",
    "relu",
    "tests_codegen_test_fuzz_relu",
    "getattr_1",
    "_",
    "a.b",
    "1x",
    "weird name",
    "é",
]
#: node names the emitter leaves to FX (a number suffix beyond 64 bits)
FALLBACK_NAMES = ["x_99999999999999999999"]
TARGETS = [
    operator.add,
    operator.mul,
    operator.getitem,
    operator.neg,
    operator.not_,
    operator.iadd,
    operator.setitem,
    operator.matmul,
    torch.relu,
    torch.add,
    torch.cat,
    getattr,
    len,
    max,
    relu,
    wrapped_fn,
    math.sqrt,
    torch.ops.aten.add.Tensor,
    torch.ops.aten.relu.default,
    torch.nn.functional.relu,
    torch.Tensor.add,
    torch.device,
]
#: operands of the operators FX writes as expressions (fewer: FX raises)
SLOTS = {operator.neg: 1, operator.not_: 1, operator.setitem: 3}
SLOTS.update(
    dict.fromkeys(
        (operator.add, operator.mul, operator.getitem, operator.iadd, operator.matmul),
        2,
    )
)
METHODS = [
    "add",
    "view",
    "size",
    "to",
    "__getitem__",
    "foo.bar",
    "not-ident",
    "class",
    "relu",
]
PATHS = ["conv", "layer1.0", "layer.0.conv", "a-b", "x.y-z.0", "bn", "self"]
#: attribute paths the emitter leaves to FX (non-ASCII: Unicode identifier rules)
FALLBACK_PATHS = ["é.conv", "layer.é"]
KEYS = ["dim", "out", "alpha", "x", "keepdim", "class", "a b"]
LEAVES: list[Any] = [
    torch.float32,
    torch.int8,
    torch.bfloat16,
    torch.device("cpu"),
    torch.device("cuda", 1),
    torch.channels_last,
    torch.contiguous_format,
    torch.strided,
    torch.sparse_coo,
    torch.per_tensor_affine,
    ...,
    1 + 2j,
    b"ab\x00'",
    range(3),
    torch.Size([2, 3]),
    0.0,
    -0.0,
    1e16,
    1e15,
    1e-5,
    1e-4,
    0.1,
    1 / 3,
    5e-324,
    1.7976931348623157e308,
    math.inf,
    -math.inf,
    math.nan,
    123456789012345678.0,
    2**63 - 1,
    -(2**63),
    2**64,
    -(2**70),
    "'",
    '"',
    "'\"",
    "\\",
    "\n",
    "# COUNTER: 3",
    "é",
    "\x7f\x00",
    "\t\r",
    "a'b",
    "",
]
#: values the emitter leaves to FX (written through FX's add_global, or tensors)
FALLBACK_LEAVES: list[Any] = [Point(1, 2), Color.RED, torch.tensor([1.0, 2.0])]
ANNOTATIONS: list[Any] = [
    None,
    None,
    None,
    torch.Tensor,
    int,
    float,
    Annot,
    type(None),
    # string annotations (`from __future__ import annotations`): equal, not identical
    "torch.Tensor",
    "".join(["torch.", "Tensor"]),  # noqa: FLY002
    "int",
]
FALLBACK_ANNOTATIONS: list[Any] = [typing.List[int], int | None]  # noqa: UP006


class Draw:
    """What a graph drew: whether it holds something the emitter leaves to FX."""

    def __init__(self, draw: Any, fallbacks: bool) -> None:
        self.draw = draw
        self.fallbacks = fallbacks
        self.expect_fallback = False

    def pick(self, options: list[Any]) -> Any:
        return self.draw(st.sampled_from(options))

    def value(self, nodes: list[Node], depth: int = 0) -> Any:
        kinds = ["leaf", "int", "float", "text", "none", "bool"]
        if nodes:
            kinds += ["node", "node", "node"]
        if depth < 3:
            kinds += ["tuple", "list", "dict", "slice"]
        if self.fallbacks:
            kinds.append("fallback")
        kind = self.pick(kinds)
        if kind == "node":
            return self.pick(nodes)
        if kind == "leaf":
            return self.pick(LEAVES)
        if kind == "int":
            return self.draw(st.integers())
        if kind == "float":
            return self.draw(st.floats())
        if kind == "text":
            return self.draw(st.text(max_size=6))
        if kind == "none":
            return None
        if kind == "bool":
            return self.draw(st.booleans())
        if kind == "fallback":
            self.expect_fallback = True
            return self.pick(FALLBACK_LEAVES)
        n = self.draw(st.integers(0, 3))
        if kind == "tuple":
            return tuple(self.value(nodes, depth + 1) for _ in range(n))
        if kind == "list":
            return [self.value(nodes, depth + 1) for _ in range(n)]
        if kind == "dict":
            return {
                self.draw(st.text(max_size=4)): self.value(nodes, depth + 1)
                for _ in range(n)
            }
        return slice(*(self.value(nodes, depth + 1) for _ in range(3)))

    def among(self, options: list[Any], fallback_options: list[Any]) -> Any:
        """One of `options`, or (if allowed) one of `fallback_options`."""
        if self.fallbacks and self.draw(st.integers(0, 9)) == 0:
            self.expect_fallback = True
            return self.pick(fallback_options)
        return self.pick(options)

    def annotation(self) -> Any:
        return self.among(ANNOTATIONS, FALLBACK_ANNOTATIONS)


@st.composite
def graphs(draw: Any, fallbacks: bool) -> tuple[Graph, bool]:
    d = Draw(draw, fallbacks)
    g = Graph()
    nodes: list[Node] = []
    placeholders: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        target = d.pick(NAMES)
        if draw(st.booleans()):
            node = g.placeholder(target, type_expr=d.annotation())
        else:
            node = g.placeholder(
                target, type_expr=d.annotation(), default_value=d.value(nodes)
            )
        placeholders.append(target)
        nodes.append(node)
    for _ in range(draw(st.integers(0, 12))):
        op = d.pick(["call_function"] * 3 + ["call_method", "call_module", "get_attr"])
        # Mostly 1-3 arguments (FX rejects operators and methods without enough);
        # rarely none. "!= 17": hypothesis favours boundary values, 17 it rarely draws.
        nargs = draw(st.integers(1, 3)) if draw(st.integers(0, 49)) != 17 else 0
        args = tuple(d.value(nodes) for _ in range(nargs))
        kwargs = {d.pick(KEYS): d.value(nodes) for _ in range(draw(st.integers(0, 2)))}
        name = d.among(NAMES, FALLBACK_NAMES) if draw(st.booleans()) else None
        if op == "call_function":
            target = d.pick(TARGETS)
            slots = SLOTS.get(target)
            if slots is not None and draw(st.integers(0, 49)) != 17:
                args = tuple(d.value(nodes) for _ in range(slots))
            if target is getattr and draw(st.booleans()):
                attr = d.pick(["weight", "a.b", "1x", "class", "é", "aé", "a.é", "1é"])
                args = (d.value(nodes) if nodes else 0, attr)
        elif op == "call_method":
            target = d.pick(METHODS)
        else:
            target = d.among(PATHS, FALLBACK_PATHS)
            if op == "get_attr":
                args, kwargs = (), {}
        node = g.create_node(
            op, target, args, kwargs, name=name, type_expr=d.annotation()
        )
        if target is wrapped_fn:
            node.meta["is_wrapped"] = True
        nodes.append(node)
    if draw(st.integers(0, 9)) > 0:
        out = d.value(nodes)
        g.output(out, type_expr=d.annotation())
        if draw(st.booleans()):
            in_spec = pytree.tree_flatten(tuple(range(len(placeholders))))[1]
            if placeholders and draw(st.booleans()):
                k = draw(st.integers(0, len(placeholders)))
                kw = {f"k{i}": 0 for i in range(len(placeholders) - k)}
                in_spec = pytree.tree_flatten((tuple(range(k)), kw))[1]
            out_spec = pytree.tree_flatten(out)[1] if draw(st.booleans()) else None
            g._codegen = _PyTreeCodeGen(_PyTreeInfo(placeholders, in_spec, out_spec))
    return g, d.expect_fallback


#: reasons the emitter may give for the values the fuzzer marks as left to FX
JUSTIFIED = (
    "an argument of type",
    "a type annotation it does not cover",
    "a non-ASCII attribute path",
    "a name with a very long number suffix",
)


def check(graph: Graph, expect_fallback: bool) -> None:
    try:
        graph.python_code("self")
    except Exception:  # noqa: BLE001 - FX rejects this graph: the emitter must not write it
        got = codegen.try_python_code(graph)
        assert isinstance(got, str), "FX raises on this graph, the emitter wrote code"
        event("FX raises")
        return
    reason = same_code(graph)
    if reason is None:
        event("native, same text")
        return
    event(f"fallback: {reason}")
    assert expect_fallback, f"unexpected fallback: {reason}"
    assert reason.startswith(JUSTIFIED), reason


FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ
@given(graphs(fallbacks=False))
def test_covered_values_always_native(case):
    """Only covered values: every graph FX can write, the emitter writes identically."""
    check(*case)


@FUZZ
@given(graphs(fallbacks=True))
def test_with_uncovered_values(case):
    """Uncovered values mixed in: same text, or a fallback those values justify."""
    check(*case)
