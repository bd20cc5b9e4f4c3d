"""What a fusion pass did: the report types both flows return."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FuseReport",
    "Fused",
    "Skipped",
    "forward_labels",
    "fusion_lines",
    "node_label",
    "pattern_name",
    "skipped_lines",
]


@dataclass(frozen=True)
class Fused:
    """A fusion pyfuse made (or would make).

    Attributes:
        pattern: the pattern, in forward order (``Conv2d -> BatchNorm2d -> ReLU``).
        nodes: the fused nodes in forward order, named by :func:`node_label`.
        modules: the module paths among `nodes` (its call_module nodes), in order.
        fused_type: the type name of the fused module.
    """

    pattern: str
    nodes: tuple[str, ...]
    modules: tuple[str, ...]
    fused_type: str


@dataclass(frozen=True)
class Skipped:
    """A match left unfused, and why: pattern and nodes named as in :class:`Fused`."""

    pattern: str
    nodes: tuple[str, ...]
    reason: str


@dataclass
class FuseReport:
    """What a fusion pass did: the fusions made and the matches it skipped."""

    fused: list[Fused] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def pattern_name(pattern: Any) -> str:
    """Forward-order, readable form of a reversed nested-tuple pattern."""

    def name(entry: Any) -> str:
        return getattr(entry, "__name__", None) or repr(entry)

    if not isinstance(pattern, tuple):
        return name(pattern)
    head, *args = pattern
    parts = [pattern_name(a) for a in args]
    inner = parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"
    return f"{inner} -> {name(head)}" if parts else name(head)


def node_label(node: Any) -> str:
    """How pyfuse names a node to the user, in every report and output: the module
    path of a call_module node (what the model's code calls), the node name otherwise."""
    return str(node.target) if node.op == "call_module" else str(node.name)


def forward_labels(positions: Sequence[int], nodes: Sequence[Any]) -> tuple[str, ...]:
    """The labels of a match's `nodes` in forward (graph) order, given each node's
    position in the graph (the matcher claims them root first)."""
    order = sorted(range(len(nodes)), key=positions.__getitem__)
    return tuple(node_label(nodes[k]) for k in order)


def fusion_lines(fused: Sequence[Fused]) -> list[str]:
    """The fusions as a text table (pattern, nodes, fused module), as both
    ``pyfuse explain`` and ``pyfuse fuse`` print them."""
    rows = [("pattern", "nodes", "fused module")]
    rows += [(f.pattern, ", ".join(f.nodes), f.fused_type) for f in fused]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for k, r in enumerate(rows):
        lines.append(
            "  "
            + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        )
        if k == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def skipped_lines(skipped: Sequence[Skipped]) -> list[str]:
    """One line per skipped match or near miss: pattern, nodes, reason."""
    return [f"  {s.pattern} at {', '.join(s.nodes)}: {s.reason}" for s in skipped]
