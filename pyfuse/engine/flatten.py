"""Flattening: an FX graph turned into the integer arrays the automaton matches.

The work is native (``_core.Interner``, built with the compiled pattern set's
interning tables); this module names its result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.fx import Graph, Node

from .. import _core
from .patterns import CompiledPatterns

__all__ = ["Flat", "flatten"]


@dataclass(frozen=True)
class Flat:
    """A graph flattened for matching.

    Attributes:
        graph: the integer arrays (labels, user counts, arguments).
        nodes: the FX nodes, by flattened index.
        modules: per node, the module a call_module node calls (None elsewhere,
            or when the target does not exist).
        get_attrs: indices of the get_attr nodes.
        repeated: some module is called by more than one node.
        nested: some called module holds submodules.
    """

    graph: _core.FlatGraph
    nodes: list[Node]
    modules: list[torch.nn.Module | None]
    get_attrs: list[int]
    repeated: bool
    nested: bool


def flatten(graph: Graph, root: torch.nn.Module, compiled: CompiledPatterns) -> Flat:
    """`graph` (whose call_module targets live in `root`) flattened with the
    interning tables of `compiled`."""
    return Flat(*compiled.interner.flatten(graph.nodes, root))
