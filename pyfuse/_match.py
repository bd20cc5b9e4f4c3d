"""Matching: flatten the graph natively, run the automaton, rebuild match records.

The automaton (C++) decides which node starts which match and which nodes each
match claims; this module turns that into the reference's records: the nested
``matched_node_pattern`` lists its root-node getters, extra-input getters and
fuser methods expect. Rebuilding is O(sum of matched pattern sizes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.fx import Graph, Node

from ._patterns import CompiledPatterns, Flat, _match_all_node, compile_patterns

__all__ = ["Match", "find_matches", "match_graph"]


@dataclass
class Match:
    """One fusion match.

    Attributes:
        index: position in claim order (reverse graph order of `last`).
        last: the node matching started at; the fused node takes its place.
        pattern: the reversed nested-tuple pattern that matched.
        pattern_index: its index in the priority-ordered pattern list.
        node_pattern: the reference's ``matched_node_pattern`` for `last`.
        claimed: the nodes this match claims, in walk order.
        entries: node name -> (last, pattern, the list the node was recorded in).
    """

    index: int
    last: Node
    pattern: Any
    pattern_index: int
    node_pattern: list[Any]
    claimed: list[Node]
    entries: dict[str, tuple[Node, Any, list[Any]]] = field(repr=False)


class MatchError(ValueError):
    """The native matcher rejected the flattened graph."""


def _run(
    compiled: CompiledPatterns, flat: Flat, exclude: Sequence[int] = ()
) -> tuple[list[int], list[int], list[int], list[int]]:
    res = compiled.automaton.match(flat.graph, list(exclude))
    if res.error:
        node = flat.nodes[res.error_node] if res.error_node >= 0 else None
        if res.missing_module and node is not None:
            raise KeyError(
                f"node {node.name!r} calls module {node.target!r}, which does not "
                "exist in the model"
            )
        where = f" (node {node.name!r})" if node is not None else ""
        raise MatchError(f"pyfuse matcher: {res.error}{where}")
    return res.roots, res.patterns, res.claimed, res.claimed_off


def match_graph(
    compiled: CompiledPatterns, flat: Flat, exclude: Sequence[int] = ()
) -> list[Match]:
    """All matches in claim order. `exclude` holds (node index, pattern index) pairs."""
    roots, pats, claimed, claimed_off = _run(compiled, flat, exclude)
    nodes = flat.nodes
    owner: dict[Node, int] = {}
    for m in range(len(roots)):
        for i in claimed[claimed_off[m] : claimed_off[m + 1]]:
            owner[nodes[i]] = m
    match_all = _match_all_node()
    patterns = compiled.patterns
    out: list[Match] = []

    for m, (r, k) in enumerate(zip(roots, pats, strict=True)):
        last = nodes[r]
        pattern = patterns[k]
        seen: set[Node] = set()
        entries: dict[str, tuple[Node, Any, list[Any]]] = {}

        # The reference's apply_match walk (fuse.py): a node is recorded where it
        # is first reached unless an earlier match, or this one, claimed it.
        def walk(pat: Any, arg: Any, acc: list[Any]) -> None:
            if isinstance(pat, tuple):
                cur: list[Any] = []
                walk(pat[0], arg, cur)
                if isinstance(arg, Node):
                    for sub, a in zip(pat[1:], arg.args, strict=False):
                        walk(sub, a, cur)
                acc.append(tuple(cur))
                return
            if not isinstance(arg, Node):
                acc.append(arg)  # a literal (the reference crashes here)
                return
            o = owner.get(arg, -1)
            if (0 <= o < m) or arg in seen:  # noqa: B023 (walk is called in this loop)
                return
            acc.append(arg)
            if pat is not match_all:
                seen.add(arg)  # noqa: B023
                entries[arg.name] = (last, pattern, acc)  # noqa: B023

        top: list[Any] = []
        walk(pattern, last, top)
        node_pattern = entries[last.name][2] if last.name in entries else top
        out.append(
            Match(
                m,
                last,
                pattern,
                k,
                node_pattern,
                [nodes[i] for i in claimed[claimed_off[m] : claimed_off[m + 1]]],
                entries,
            )
        )
    return out


def find_matches(
    root: torch.nn.Module, graph: Graph, patterns: Sequence[Any]
) -> dict[str, tuple[Node, Any, list[Any]]]:
    """The reference's ``_find_matches`` result, without the handler fields.

    Args:
        root: the module owning the graph's call_module targets.
        graph: the FX graph.
        patterns: reversed nested-tuple patterns in priority order.

    Returns:
        node name -> (node matching started at, pattern, matched node pattern).
    """
    compiled = compile_patterns(patterns)
    result: dict[str, tuple[Node, Any, list[Any]]] = {}
    for match in match_graph(compiled, compiled.flatten(graph, root)):
        result.update(match.entries)
    return result
