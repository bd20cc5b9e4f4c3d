"""Finding BatchNorm sites: the native automaton over an exported graph.

The patterns are compiled once per producer set into the shared automaton
(labels come from the op overloads, matched by identity), and the graph is
flattened natively: one O(N) scan in C++, then Python work in proportion to the
BatchNorm nodes only. A pattern ``(norm, producer, *anything)`` matches a
BatchNorm whose input is a producer read by nothing else; a bare ``norm``
pattern (lowest priority) catches every other BatchNorm, so near misses can be
explained.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx import Graph, Node

from ..engine.flatten import flatten
from ..engine.matching import MatchError
from ..engine.patterns import CompiledPatterns, compile_patterns, match_all_node
from .ops import ALL_NORM_TARGETS, NORMS, Norm, Producer

__all__ = ["Sites", "find_sites"]


@dataclass(frozen=True)
class _Set:
    compiled: CompiledPatterns
    norm_of: tuple[Norm | None, ...]  # per pattern index: the inference norm, or None
    paired: tuple[bool, ...]  # per pattern index: matched with a single-reader producer


@functools.cache  # (keyed by our own producer lists: CONV_, LINEAR_PRODUCERS)
def _pattern_set(producers: tuple[Producer, ...]) -> _Set:
    match_all = match_all_node()
    patterns: list[Any] = []
    norm_of: list[Norm | None] = []
    paired: list[bool] = []
    for norm in NORMS:
        for prod in producers:
            patterns.append(
                (norm.target, prod.target) + (match_all,) * (norm.arity - 1)
            )
            norm_of.append(norm)
            paired.append(True)
    by_target = {n.target: n for n in NORMS}
    for target in ALL_NORM_TARGETS:
        patterns.append(target)
        norm_of.append(by_target.get(target))
        paired.append(False)
    return _Set(compile_patterns(patterns), tuple(norm_of), tuple(paired))


@dataclass(frozen=True)
class Sites:
    """The BatchNorm nodes of a graph.

    Attributes:
        norms: (BatchNorm node, its inference op, paired) in graph order, for every
            inference BatchNorm; `paired` when the automaton matched it with a
            producer read by nothing else.
        any_norm: the graph holds a BatchNorm op of any kind (training ones too).
        get_attrs: the get_attr nodes, in graph order.
    """

    norms: list[tuple[Node, Norm, bool]]
    any_norm: bool
    get_attrs: list[Node]


def find_sites(
    graph: Graph, root: torch.nn.Module, producers: Sequence[Producer]
) -> Sites:
    """The BatchNorm sites of `graph` for folds into `producers`."""
    pset = _pattern_set(tuple(producers))
    flat = flatten(graph, root, pset.compiled)
    res = pset.compiled.automaton.match(flat.graph, [])
    if res.error:
        where = (
            f" (node {flat.nodes[res.error_node].name!r})"
            if res.error_node >= 0
            else ""
        )
        raise MatchError(f"pyfuse matcher: {res.error}{where}")
    roots, pats = res.roots, res.patterns
    nodes = flat.nodes
    norms: list[tuple[Node, Norm, bool]] = []
    for r, k in zip(reversed(roots), reversed(pats), strict=True):  # graph order
        norm = pset.norm_of[k]
        if norm is not None:
            norms.append((nodes[r], norm, pset.paired[k]))
    return Sites(norms, bool(roots), [nodes[i] for i in flat.get_attrs])
