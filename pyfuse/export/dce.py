"""Dead-code elimination once per pass: ``Graph.eliminate_dead_code`` without its
whole-graph lint (the folds only rewire uses, they cannot break the graph's
invariants), with the same purity test and the same recursion into subgraphs."""

from __future__ import annotations

import torch
from torch.fx import Graph, GraphModule

__all__ = ["eliminate_dead_code"]


def eliminate_dead_code(graph: Graph) -> None:
    """Erase every node without users and without side effects, as torch does."""
    impure_random = True
    if torch._guards.TracingContext.try_get():
        impure_random = torch._inductor.config.fallback_random
    for node in reversed(graph.nodes):
        if not node.users and not node.is_impure(impure_random):
            graph.erase_node(node)
    owner = graph.owning_module
    if owner is not None:
        subgraphs = {n.target for n in graph.find_nodes(op="get_attr")}
        for name, child in owner.named_children():
            if name in subgraphs and isinstance(child, GraphModule):
                child.graph.eliminate_dead_code()
                child.recompile()
