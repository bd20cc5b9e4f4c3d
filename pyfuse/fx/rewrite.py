"""Rewrite: the fusions applied to the graph.

In place where it can (O(F) moves, redirects and erasures, where the reference
copies every node into a new graph); as a copy, node by node as the reference
builds its output, where erasing in place could not order the removals.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.fx import Graph, Node
from torch.fx.graph import _FindNodesLookupTable

from ..codegen import PlannedEdit, torch_version
from ..engine.flatten import Flat
from .checks import read_outside, simple
from .prepare import Fusion

__all__ = ["edit", "plan_edit", "rebuild"]


#: torch versions whose ``Graph.erase_node`` :func:`_eraser` was checked against.
_ERASE_CHECKED = frozenset({(2, 13), (2, 14)})


def _erase_functions() -> tuple[object, ...]:
    """FX's functions whose steps :func:`_eraser` inlines."""
    return (
        Graph.erase_node,
        _FindNodesLookupTable.remove,
        _FindNodesLookupTable._key,
        Node.__setattr__,
    )


_ERASE_ORIGINALS = _erase_functions()


def _none(_n: Node) -> None:
    return None


def _eraser(graph: Graph) -> Callable[[Node], None]:
    """``graph.erase_node``, or the same steps inlined (~2x faster; an edit erases
    two nodes a fusion) where they are torch's own, checked for this torch, with
    no erase hooks: FX's checks, then the lookup-table entry, the list links, the
    ``_erased`` flag (its ``__setattr__`` only touches the lookup table, which no
    longer holds the node), the count and the inputs' users."""
    owner = graph.owning_module
    if (
        torch_version() not in _ERASE_CHECKED
        or type(graph) is not Graph
        or getattr(owner, "_erase_node_hooks", None)
        or _erase_functions() != _ERASE_ORIGINALS
    ):
        return graph.erase_node
    table = graph._find_nodes_lookup_table.table
    map_arg = torch.fx.map_arg
    set_attr = object.__setattr__

    def erase(n: Node) -> None:
        if n.users or n.graph is not graph or n._erased:
            graph.erase_node(n)  # (raises or warns as FX does)
            return
        op = n.op
        table[op, n.target if op == "call_function" else None].pop(n)
        n._remove_from_list()
        set_attr(n, "_erased", True)
        graph._len -= 1
        n._update_args_kwargs(map_arg(n._args, _none), map_arg(n._kwargs, _none))

    return erase


def _in_place(fusions: list[Fusion]) -> bool:
    return not any(
        f.unclaimed_root or (not simple(f) and read_outside(f)) for f in fusions
    )


def edit(
    graph: Graph, fusions: list[Fusion], planned: PlannedEdit | None = None
) -> Graph:
    """Apply `fusions` to `graph`: each root node takes its match's last node's
    place and the rest of the match is erased. Returns the edited graph.
    `planned`: their :func:`plan_edit`, if one was made (then it is in place)."""
    if planned is None and not _in_place(fusions):
        return rebuild(graph, fusions)
    # Extra inputs first, so redirecting other fusions' last nodes updates them.
    for f in fusions:
        if f.extra_inputs:
            f.root_node.args = (*f.root_node.args, *f.extra_inputs)
    erase = _eraser(graph)
    for f in fusions:
        last, root = f.match.last, f.root_node
        if root is not last:
            last.prepend(root)
            last.replace_all_uses_with(root)
        # Walk order is top-down: every node's users inside the match go first.
        for n in f.match.claimed:
            if n is not root:
                erase(n)
    return graph


def plan_edit(flat: Flat, fusions: list[Fusion]) -> PlannedEdit | None:
    """What :func:`edit` will do to the graph `flat` was flattened from, described
    without doing it (for writing the output's code before the fusers run); None
    for an edit that adds inputs or rebuilds the graph (its code is written after
    it)."""
    if any(f.extra_inputs for f in fusions) or not _in_place(fusions):
        return None
    kept: list[Node | None] = list(flat.nodes)
    redirect: dict[Node, Node] = {}
    for f in fusions:
        # (matches claim disjoint nodes: no later fusion clears this root's place)
        m, root = f.match, f.root_node
        for i in m.ids:
            kept[i] = None
        kept[m.last_index] = root
        if root is not m.last:
            redirect[m.last] = root
    return PlannedEdit([n for n in kept if n is not None], redirect)


def rebuild(graph: Graph, fusions: list[Fusion]) -> Graph:
    """The edit as a new graph, copied node by node as the reference builds its
    output. Needed when a root node is not claimed by its match (that node is
    kept, and a copy of it, named as the reference names it, replaces the last
    node), or when a node one fusion removes is read by a node another removes
    (erasing either first would fail). `graph` is not changed."""
    at_last = {f.match.last: f for f in fusions}
    claimed = {n for f in fusions for n in f.match.claimed}
    new = Graph()
    env: dict[Node, Node] = {}
    load = env.__getitem__
    for node in graph.nodes:
        f = at_last.get(node)
        if f is not None:
            extra = [torch.fx.map_arg(a, load) for a in f.extra_inputs]
            env[node] = copy = new.node_copy(f.root_node, load)
            if extra:
                copy.args = (*copy.args, *extra)
        elif node not in claimed:
            env[node] = new.node_copy(node, load)
    return new
