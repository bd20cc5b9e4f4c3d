"""``pyfuse.explain``: what fusion would do, and why some chains do not fuse.

Built on the FX pass's stages: the pass's own analysis and fuser calls (nothing
installed), then the matches a relaxed graph (user counts ignored) adds.
``import pyfuse`` imports this module (the function shares its name), so the
stages and torch are imported on the first call.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .report import (
    Fused,
    FuseReport,
    Skipped,
    forward_labels,
    fusion_lines,
    node_label,
    pattern_name,
    skipped_lines,
)

if TYPE_CHECKING:
    import torch

    from .engine.flatten import Flat
    from .engine.matching import Match
    from .fx.plan import Plan
    from .fx.prepare import Fusion
    from .htmlmap import MapFusion, MapMiss, MapNode

__all__ = ["Explanation", "explain"]


@dataclass
class Explanation:
    """Fusions pyfuse would make and the near misses, with reasons.

    Nodes are named as everywhere in pyfuse: in forward order, module paths for
    call_module nodes, node names otherwise (see :func:`pyfuse.report.node_label`).
    """

    fused: list[Fused] = field(default_factory=list)
    near_misses: list[Skipped] = field(default_factory=list)
    # the graph as the fusion map draws it, with each fusion's / near miss's node
    # positions (filled by explain(); not part of the comparison or the dict)
    graph: _MapData | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "fused": [vars(f) for f in self.fused],
            "near_misses": [vars(s) for s in self.near_misses],
        }

    def to_html(
        self, title: str = "pyfuse fusion map", collapse: bool | None = None
    ) -> str:
        """The fusion map: one self-contained HTML page drawing the graph in forward
        order, each fusion a coloured group, each near miss marked with its reason.

        Args:
            title: the page title.
            collapse: start with the blocks holding no near miss collapsed; None:
                only on graphs of more than 1,000 nodes.
        """
        from .htmlmap import render_html

        if self.graph is None:
            raise ValueError(
                "this Explanation has no graph to draw: make it with pyfuse.explain()"
            )
        g = self.graph
        return render_html(
            g.nodes,
            g.fusions,
            g.near_misses,
            title=title,
            scope_types=g.scope_types,
            collapse=collapse,
        )

    def __str__(self) -> str:
        lines = [f"{len(self.fused)} fusion(s):", *fusion_lines(self.fused)]
        if self.near_misses:
            lines.append(f"{len(self.near_misses)} near miss(es):")
            lines += skipped_lines(self.near_misses)
        else:
            lines.append("no near misses")
        return "\n".join(lines)


@dataclass
class _MapData:
    """The graph as the fusion map draws it: its nodes and module scopes, and each
    fusion and near miss by node position (in the order of ``Explanation.fused`` /
    ``near_misses``)."""

    nodes: list[MapNode]
    scope_types: dict[str, str]
    fusions: list[MapFusion]
    near_misses: list[MapMiss]


def explain(
    model: torch.nn.Module, is_qat: bool = False, backend_config: Any = None
) -> Explanation:
    """Report the fusions ``pyfuse.fuse`` would make on `model`, changing nothing.

    Args:
        model: a GraphModule, or an nn.Module (traced with symbolic_trace); or an
            ExportedProgram or its ``module()``, whose BatchNorm folds are explained
            (``pyfuse.fold_batch_norm`` / ``pyfuse.pt2e``).
        is_qat: explain QAT fusion instead of eval fusion.
        backend_config: a BackendConfig (default: torch's native one).

    Returns:
        An :class:`Explanation`; ``print()`` it for a table.
    """
    import torch.fx

    from .export.explain import explain_exported, is_exported

    if is_exported(model):  # an ExportedProgram or its module(): the BatchNorm folds
        fused, misses = explain_exported(model)
        out = Explanation(fused, misses)
        out.graph = _exported_map(model, fused, misses)
        return out

    from .fx.pipeline import analyze, call_fusers, record
    from .fx.plan import configs, plan_for
    from .htmlmap import MapFusion, MapMiss, fx_map_nodes

    _, backend_config = configs(None, backend_config)
    gm = (
        model
        if isinstance(model, torch.fx.GraphModule)
        else torch.fx.symbolic_trace(model)
    )
    plan = plan_for(backend_config)
    report = FuseReport()
    skipped: list[Match] = []
    flat, fusions, failure = analyze(gm, is_qat, plan, report, skipped)
    call_fusers(fusions, is_qat, failure)  # builds fused modules; installs nothing
    record(fusions, report)
    out = Explanation(report.fused, list(report.skipped))
    misses, missed = _near_misses(gm, flat, fusions, plan, is_qat)
    out.near_misses += misses
    position = {n: i for i, n in enumerate(gm.graph.nodes)}

    def at(claimed: list[torch.fx.Node]) -> tuple[int, ...]:
        return tuple(sorted(position[n] for n in claimed))

    out.graph = _MapData(
        *fx_map_nodes(gm.graph, gm),
        [
            MapFusion(r.pattern, at(f.match.claimed), r.fused_type)
            for r, f in zip(out.fused, fusions, strict=True)
        ],
        [
            MapMiss(s.pattern, at(m.claimed), s.reason)
            for s, m in zip(out.near_misses, skipped + missed, strict=True)
        ],
    )
    return out


def _near_misses(
    gm: torch.nn.Module, flat: Flat, fusions: list[Fusion], plan: Plan, is_qat: bool
) -> tuple[list[Skipped], list[Match]]:
    """Chains that match once user counts are ignored, what stops each, and their
    matches.

    A chain counts unless all its nodes fused: when a shorter pattern took part of
    it (BN + ReLU fused, their conv also read elsewhere), the longer chain is the
    miss a user asks about ("why did this conv not fuse?")."""
    from . import _core
    from .engine.matching import match_graph
    from .fx.prepare import Modules, prepare

    out: list[Skipped] = []
    matches: list[Match] = []
    fused_nodes = {n for f in fusions for n in f.match.claimed}
    relaxed = _core.FlatGraph(
        flat.graph.label,
        [min(u, 1) for u in flat.graph.users],
        flat.graph.arg_off,
        flat.graph.arg,
    )
    modules = Modules(gm)
    relaxed_flat = replace(flat, graph=relaxed)
    for m in reversed(match_graph(plan.compiled, relaxed_flat)):  # forward order
        if fused_nodes.issuperset(m.claimed):
            continue
        busy = [n for n in m.claimed if n is not m.last and len(n.users) > 1]
        if busy:
            reason = "; ".join(
                f"{node_label(n)} has {len(n.users)} users" for n in busy
            )
        else:
            try:
                prepare(plan, m, relaxed_flat, modules, is_qat)
                continue
            except AssertionError as e:
                reason = str(e).strip()
        out.append(
            Skipped(pattern_name(m.pattern), forward_labels(m.ids, m.claimed), reason)
        )
        matches.append(m)
    return out, matches


def _exported_map(obj: Any, fused: list[Fused], misses: list[Skipped]) -> _MapData:
    """The map of an exported graph: its folds and near misses, placed by node
    name (an ExportedProgram's weights folded into the nodes that read them)."""
    import torch.fx

    from .htmlmap import MapFusion, MapMiss, exported_folded, fx_map_nodes

    if isinstance(obj, torch.fx.GraphModule):  # ExportedProgram.module()
        owner, folded = obj, set()
    else:
        owner, folded = obj.graph_module, exported_folded(obj)
    nodes, scope_types = fx_map_nodes(obj.graph, owner, folded)
    position = {n.name: i for i, n in enumerate(obj.graph.nodes)}

    def at(names: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(sorted(position[x] for x in names if x in position))

    return _MapData(
        nodes,
        scope_types,
        [MapFusion(f.pattern, at(f.nodes), f.fused_type) for f in fused],
        [MapMiss(m.pattern, at(m.nodes), m.reason) for m in misses if at(m.nodes)],
    )
