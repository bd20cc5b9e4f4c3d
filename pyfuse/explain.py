"""``pyfuse.explain``: what fusion would do, and why some chains do not fuse.

Built on the FX pass's stages: the pass's own analysis and fuser calls (nothing
installed), then the matches a relaxed graph (user counts ignored) adds.
``import pyfuse`` imports this module (the function shares its name), so the
stages and torch are imported on the first call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .report import Fused, FuseReport, Skipped, pattern_name

if TYPE_CHECKING:
    import torch

    from .engine.flatten import Flat
    from .fx.plan import Plan
    from .fx.prepare import Fusion

__all__ = ["Explanation", "explain"]


@dataclass
class Explanation:
    """Fusions pyfuse would make and the near misses, with reasons."""

    fused: list[Fused] = field(default_factory=list)
    near_misses: list[Skipped] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "fused": [vars(f) for f in self.fused],
            "near_misses": [vars(s) for s in self.near_misses],
        }

    def __str__(self) -> str:
        rows = [("pattern", "nodes", "fused module")]
        rows += [(f.pattern, ", ".join(f.nodes), f.fused_type) for f in self.fused]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{len(self.fused)} fusion(s):"]
        for k, r in enumerate(rows):
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
            if k == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
        if self.near_misses:
            lines.append(f"{len(self.near_misses)} near miss(es):")
            lines += [f"  {s.pattern} at {', '.join(s.nodes)}: {s.reason}" for s in self.near_misses]
        else:
            lines.append("no near misses")
        return "\n".join(lines)


def explain(
    model: torch.nn.Module, is_qat: bool = False, backend_config: Any = None
) -> Explanation:
    """Report the fusions ``pyfuse.fuse`` would make on `model`, changing nothing.

    Args:
        model: a GraphModule, or an nn.Module (traced with symbolic_trace).
        is_qat: explain QAT fusion instead of eval fusion.
        backend_config: a BackendConfig (default: torch's native one).

    Returns:
        An :class:`Explanation`; ``print()`` it for a table.
    """
    import torch.fx

    from .fx.pipeline import analyze, call_fusers, record
    from .fx.plan import configs, plan_for

    _, backend_config = configs(None, backend_config)
    gm = model if isinstance(model, torch.fx.GraphModule) else torch.fx.symbolic_trace(model)
    plan = plan_for(backend_config)
    report = FuseReport()
    flat, fusions, failure = analyze(gm, is_qat, plan, report)
    call_fusers(fusions, is_qat, failure)  # builds fused modules; installs nothing
    record(fusions, report)
    out = Explanation(report.fused, list(report.skipped))
    out.near_misses += _near_misses(gm, flat, fusions, plan, is_qat)
    return out


def _near_misses(
    gm: torch.nn.Module, flat: Flat, fusions: list[Fusion], plan: Plan, is_qat: bool
) -> list[Skipped]:
    """Chains that match once user counts are ignored, and what stops each."""
    from . import _core
    from .engine.flatten import Flat
    from .engine.matching import match_graph
    from .fx.prepare import Modules, prepare

    out: list[Skipped] = []
    fused_nodes = {n for f in fusions for n in f.match.claimed}
    relaxed = _core.FlatGraph(
        flat.graph.label, [min(u, 1) for u in flat.graph.users], flat.graph.arg_off, flat.graph.arg
    )
    modules = Modules(gm)
    relaxed_flat = Flat(relaxed, flat.nodes, flat.modules, flat.get_attrs)
    for m in match_graph(plan.compiled, relaxed_flat):
        if fused_nodes.intersection(m.claimed):
            continue
        busy = [n for n in m.claimed if n is not m.last and len(n.users) > 1]
        names = tuple(n.name for n in m.claimed)
        if busy:
            reason = "; ".join(f"{n.name} has {len(n.users)} users" for n in busy)
        else:
            try:
                prepare(plan, m, relaxed_flat, modules, is_qat)
                continue
            except AssertionError as e:
                reason = str(e).strip()
        out.append(Skipped(pattern_name(m.pattern), names, reason))
    return out
