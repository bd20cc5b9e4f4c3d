"""The output module tree equals ``GraphModule(model, graph)``'s, in the orders
that make torch.fx's attribute copying install a parent whole or replace a
container it made earlier."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.fx import Graph, GraphModule

from pyfuse.fx.output import build_output


class _Sub(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.deep = nn.Sequential(nn.ReLU(), nn.Linear(2, 2))
        self.w = nn.Parameter(torch.ones(2))
        self.register_buffer("buf", torch.zeros(2))


class _Root(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sub = _Sub()
        self.other = _Sub()


def _graph(targets: list[tuple[str, str]]) -> Graph:
    g = Graph()
    x = g.placeholder("x")
    for op, target in targets:
        x = g.call_module(target, (x,)) if op == "call_module" else g.get_attr(target)
    g.output(x)
    return g


def _tree(m: nn.Module, root: nn.Module) -> list[tuple[str, str, int]]:
    """Every module, parameter and buffer by path, with its type and identity
    (-1 for a container made for the output, not taken from `root`)."""
    own = {id(v) for v in (*root.modules(), *root.parameters(), *root.buffers())}
    items = [*m.named_modules(), *m.named_parameters(remove_duplicate=False)]
    items += m.named_buffers(remove_duplicate=False)
    return [(n, type(v).__name__, id(v) if id(v) in own else -1) for n, v in items]


@pytest.mark.parametrize(
    "targets",
    [
        # a child first (its parent made as an empty container), then the parent
        # itself (replacing that container), then children again (nothing to copy)
        [("call_module", "sub.lin"), ("call_module", "sub"), ("get_attr", "sub.w")],
        [
            ("get_attr", "sub.deep.1.weight"),
            ("call_module", "sub.deep"),
            ("get_attr", "sub.deep.1.bias"),
            ("get_attr", "sub.buf"),
        ],
        # siblings sharing parents, a buffer and a parameter under one container
        [
            ("call_module", "sub.lin"),
            ("get_attr", "sub.buf"),
            ("get_attr", "sub.w"),
            ("call_module", "other.deep.1"),
            ("call_module", "other.lin"),
            ("get_attr", "other.deep.1.weight"),
        ],
    ],
)
def test_output_tree_is_graph_modules(targets):
    root = _Root()
    want = GraphModule(root, _graph(targets))
    got = build_output(
        GraphModule(root, _graph(targets)), _graph(targets), {}, lazy=True
    )
    assert _tree(got, root)[1:] == _tree(want, root)[1:]
    assert [n for n, _ in got.named_children()] == [n for n, _ in want.named_children()]
