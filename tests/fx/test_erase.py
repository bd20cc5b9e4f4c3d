"""The edit's node eraser: FX's ``Graph.erase_node`` steps inlined must leave the
graph exactly as ``erase_node`` leaves it, raise and warn as it does, and stand
aside where a module has erase hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pyfuse.fx.rewrite import _eraser

pytestmark = pytest.mark.quick  # (part of the quick suite: ./dev pyvers, torch 2.14)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.bn = nn.BatchNorm2d(2)
        self.conv2 = nn.Conv2d(2, 2, 1)

    def forward(self, x, y):
        a = torch.relu(self.bn(self.conv(x)))
        b = self.conv2(a) + a
        return b * torch.sigmoid(y), a.shape


def _state(graph: torch.fx.Graph) -> dict:
    """Everything erase_node changes, by node name."""
    nodes = list(graph.nodes)
    table = {
        key: [n.name for n in group]
        for key, group in graph._find_nodes_lookup_table.table.items()
    }
    return {
        "order": [n.name for n in nodes],
        "reverse": [n.name for n in reversed(graph.nodes)],
        "len": graph._len,
        "users": {n.name: [u.name for u in n.users] for n in nodes},
        "args": {n.name: repr((n.args, n.kwargs)) for n in nodes},
        "table": table,
        "code": graph.python_code("self").src,
    }


def _erase_tail(gm: torch.fx.GraphModule, erase) -> list[torch.fx.Node]:
    """Erase the nodes feeding the output after rerouting it: bottom-up, each
    node once its users are gone (as an edit erases a match)."""
    g = gm.graph
    out = next(n for n in g.nodes if n.op == "output")
    mul = out.args[0][0]
    mul.replace_all_uses_with(next(n for n in g.nodes if n.op == "placeholder"))
    gone = [mul, mul.args[1], mul.args[0]]  # mul, sigmoid, add
    for n in gone:
        erase(n)
    return gone


def test_inlined_erase_leaves_the_graph_as_erase_node_does():
    torch.manual_seed(0)
    fx_gm = torch.fx.symbolic_trace(_Net().eval())
    ours_gm = torch.fx.symbolic_trace(_Net().eval())
    erase = _eraser(ours_gm.graph)
    assert erase != ours_gm.graph.erase_node  # (the inlined steps, not FX's)
    fx_gone = _erase_tail(fx_gm, fx_gm.graph.erase_node)
    ours_gone = _erase_tail(ours_gm, erase)
    assert _state(ours_gm.graph) == _state(fx_gm.graph)
    for a, b in zip(fx_gone, ours_gone, strict=True):
        assert b._erased
        assert a._erased
        assert repr((b.args, b.kwargs)) == repr((a.args, a.kwargs))
        assert (b._prev.name, b._next.name) == (a._prev.name, a._next.name)


def test_inlined_erase_raises_and_warns_as_fx():
    gm = torch.fx.symbolic_trace(_Net().eval())
    erase = _eraser(gm.graph)
    conv = next(n for n in gm.graph.nodes if n.op == "call_module")
    with pytest.raises(RuntimeError, match="still had 1 users"):
        erase(conv)
    other = torch.fx.symbolic_trace(_Net().eval())
    with pytest.raises(RuntimeError, match="wrong graph"):
        erase(other.graph.output_node())
    gone = _erase_tail(gm, erase)
    with pytest.warns(UserWarning, match="already erased"):
        erase(gone[0])


def test_erase_hooks_are_called():
    gm = torch.fx.symbolic_trace(_Net().eval())
    seen: list[str] = []
    gm._register_erase_node_hook(lambda n: seen.append(n.name))
    _erase_tail(gm, _eraser(gm.graph))
    assert seen == ["mul", "sigmoid", "add"]
