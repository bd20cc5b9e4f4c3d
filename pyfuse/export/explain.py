"""What the export flow would fold in an ExportedProgram or an exported
GraphModule, and why the other BatchNorms stay: the plan, nothing changed.

``pyfuse.explain`` hands such inputs here (``is_exported``) and wraps the result
in its Explanation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule

from ..report import Fused, Skipped
from .inplace import ModuleStore, bias_name, how
from .match import find_sites
from .ops import CONV_PRODUCERS, LINEAR_PRODUCERS
from .plan import Group, plan_folds

__all__ = ["explain_exported", "is_exported"]


def is_exported(obj: Any) -> bool:
    """An ExportedProgram, or a GraphModule of aten ops (``ExportedProgram.module()``)."""
    from torch.export import ExportedProgram

    if isinstance(obj, ExportedProgram):
        return True
    if not isinstance(obj, GraphModule):
        return False
    op_types = (torch._ops.OpOverload, torch._ops.OpOverloadPacket)
    return any(
        n.op == "call_function" and isinstance(n.target, op_types)
        for n in obj.graph.nodes
    )


def _fused(groups: list[Group], new_bias: Any) -> list[Fused]:
    out: list[Fused] = []
    for group in groups:
        s = group.first
        attrs = (s.weight_key, s.bias_key or new_bias(s.weight_key))
        out += [
            Fused(site.pattern, (site.prod.name, site.bn.name), attrs, how(site))
            for site in group.sites
        ]
    return out


def explain_exported(obj: Any) -> tuple[list[Fused], list[Skipped]]:
    """(folds, near misses with reasons) of `obj`, an ExportedProgram (what
    ``fold_batch_norm`` would do) or an exported GraphModule (what
    ``pyfuse.pt2e.fuse_conv_bn_`` + ``fuse_linear_bn_`` would do)."""
    if isinstance(obj, GraphModule):
        producers = CONV_PRODUCERS + LINEAR_PRODUCERS
        sites = find_sites(obj.graph, obj, producers)
        store = ModuleStore(obj, sites.get_attrs)
        plan = plan_folds(
            sites,
            producers,
            store,
            check_rank=True,
            new_bias_name=bias_name,
            fold_training=True,
        )
        return (
            _fused(plan.groups, bias_name),
            [Skipped(p, n, r) for p, n, r in plan.skipped],
        )
    from .program import bias_name as program_bias_name
    from .program import plan_program

    pp = plan_program(obj)
    return _fused(pp.groups, program_bias_name), list(pp.skipped)
