"""The fusion map's data: nodes, fusions and near misses as plain values.

Any flow that produces these can draw its map. :func:`fx_map_nodes` turns a
``torch.fx.Graph`` (module-level or aten; an ``ExportedProgram``'s weights folded
with :func:`exported_folded`) into nodes; :func:`check` rejects data the map
cannot draw, and :func:`drop_folded` removes the folded nodes before layout.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from ..report import node_label

__all__ = [
    "MapFusion",
    "MapMiss",
    "MapNode",
    "check",
    "drop_folded",
    "exported_folded",
    "fx_map_nodes",
]


@dataclass(frozen=True, slots=True)
class MapNode:
    """One graph node, as the map shows it.

    Attributes:
        name: the label (a module path for call_module nodes, the node name otherwise).
        op: the node's opcode (``placeholder``, ``call_module``, ``call_function``, ...).
        target: a readable target: the module type, function or attribute name.
        inputs: indices (into the node list) of the earlier nodes this node reads.
        scope: the dotted path of the module whose code made the node ("" at top level).
        folded: a parameter or constant input (an exported program's weights):
            named in its users' tooltips instead of drawn as a box.
    """

    name: str
    op: str
    target: str
    inputs: tuple[int, ...] = ()
    scope: str = ""
    folded: bool = False


@dataclass(frozen=True, slots=True)
class MapFusion:
    """A fusion: its pattern (forward order), node indices, and the fused module's type."""

    pattern: str
    nodes: tuple[int, ...]
    fused_type: str


@dataclass(frozen=True, slots=True)
class MapMiss:
    """A near miss: its pattern (forward order), node indices, and why it does not fuse."""

    pattern: str
    nodes: tuple[int, ...]
    reason: str


def _target_text(node: Any, owner: Any) -> str:
    if node.op == "call_module" and owner is not None:
        try:
            return type(owner.get_submodule(str(node.target))).__name__
        except AttributeError:
            return str(node.target)
    if node.op in ("call_function", "call_method"):
        return getattr(node.target, "__name__", None) or str(node.target)
    return str(node.target) if node.op == "get_attr" else node.op


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).rpartition(".")[2]


def fx_map_nodes(
    graph: Any, owner: Any = None, folded: Collection[str] = ()
) -> tuple[list[MapNode], dict[str, str]]:
    """The map's view of a ``torch.fx.Graph``: nodes in graph (forward) order, and
    the type name of each module scope (and enclosing scope) seen.

    A node's scope is its module's parent for a call_module node, else the innermost
    module of its ``nn_module_stack`` (recorded by symbolic_trace and torch.export).

    Args:
        graph: the graph to draw.
        owner: the module owning the graph's submodules (names call_module targets'
            types), or None.
        folded: names of the nodes to fold into their users (an exported program's
            parameter, buffer and constant inputs: see :func:`exported_folded`).
    """
    index: dict[Any, int] = {}
    out: list[MapNode] = []
    scope_types: dict[str, str] = {}
    for node in graph.nodes:
        inputs = sorted({index[n] for n in node.all_input_nodes if n in index})
        stack = node.meta.get("nn_module_stack") or {}
        for path, kind in stack.values():
            if path:
                scope_types.setdefault(str(path), _type_name(kind))
        if node.op == "call_module":
            scope = str(node.target).rpartition(".")[0]
        else:
            scope = str(list(stack.values())[-1][0]) if stack else ""
        index[node] = len(out)
        out.append(
            MapNode(
                node_label(node),
                node.op,
                _target_text(node, owner),
                tuple(inputs),
                scope,
                node.name in folded,
            )
        )
    if owner is not None:
        prefixes = {
            ".".join(p[:d])
            for n in out
            if n.scope
            for p in [n.scope.split(".")]
            for d in range(1, len(p) + 1)
        }
        for scope in sorted(prefixes - scope_types.keys()):
            try:
                scope_types[scope] = type(owner.get_submodule(scope)).__name__
            except AttributeError:
                continue
    return out, scope_types


def exported_folded(program: Any) -> set[str]:
    """Names of an ``ExportedProgram``'s placeholders that are not user inputs (its
    parameters, buffers, constants): the map names them in their users' tooltips."""
    return {
        spec.arg.name
        for spec in program.graph_signature.input_specs
        if spec.kind.name != "USER_INPUT" and hasattr(spec.arg, "name")
    }


def check(
    nodes: Sequence[MapNode],
    fusions: Sequence[MapFusion],
    near_misses: Sequence[MapMiss],
) -> None:
    count = len(nodes)
    for what, groups in (("fusion", fusions), ("near miss", near_misses)):
        for g in groups:
            bad = [i for i in g.nodes if not 0 <= i < count]
            if bad or not g.nodes:
                raise ValueError(
                    f"{what} {g.pattern!r} refers to nodes {bad or '()'} "
                    f"outside the {count} nodes given"
                )
            if all(nodes[i].folded for i in g.nodes):
                raise ValueError(
                    f"{what} {g.pattern!r} has only folded nodes: nothing to draw"
                )
    for i, node in enumerate(nodes):
        late = [j for j in node.inputs if not 0 <= j < i]
        if late:
            raise ValueError(
                f"node {i} ({node.name}) reads nodes {late}: inputs must be "
                "earlier nodes (forward order)"
            )


def drop_folded(
    nodes: Sequence[MapNode],
    fusions: Sequence[MapFusion],
    near_misses: Sequence[MapMiss],
) -> tuple[
    list[int], list[MapNode], list[MapFusion], list[MapMiss], dict[int, list[str]]
]:
    """Drop the folded nodes: (original index of each node drawn, the nodes drawn with
    inputs renumbered, fusions and near misses renumbered, drawn node -> folded inputs'
    names)."""
    if not any(n.folded for n in nodes):
        return (
            list(range(len(nodes))),
            list(nodes),
            list(fusions),
            list(near_misses),
            {},
        )
    new: dict[int, int] = {}
    ids: list[int] = []
    view: list[MapNode] = []
    reads: dict[int, list[str]] = {}
    for i, node in enumerate(nodes):
        if node.folded:
            continue
        new[i] = len(view)
        folded = [nodes[j].name for j in node.inputs if j not in new]
        if folded:
            reads[len(view)] = folded
        ids.append(i)
        view.append(
            MapNode(
                node.name,
                node.op,
                node.target,
                tuple(new[j] for j in node.inputs if j in new),
                node.scope,
            )
        )

    def renumber(members: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(new[i] for i in members if i in new)

    return (
        ids,
        view,
        [MapFusion(f.pattern, renumber(f.nodes), f.fused_type) for f in fusions],
        [MapMiss(m.pattern, renumber(m.nodes), m.reason) for m in near_misses],
        reads,
    )
