"""The FX fusion pass: :func:`fuse` and :func:`fuse_fx`, stage by stage.

Steps of :func:`fuse` (N nodes, F fusions), one module each under ``pyfuse.fx``:

1. :mod:`~pyfuse.fx.plan` (cached per backend config): patterns in the reference's
   priority order, the compiled automaton, fuser methods and getters.
2. Flatten and match (:mod:`pyfuse.engine`): one native O(N) pass.
3. :mod:`~pyfuse.fx.prepare` every fusion, calling the backend's root-node
   getters, extra-input getters; :mod:`~pyfuse.fx.checks` find what the reference
   would get wrong. Matches whose root module is also used at another site in a
   different way are excluded and the graph is matched again (the reference fuses
   them and silently changes the other site's result). Nothing is mutated yet.
   The output's code is written now, from the edit the fusions plan, and
   compiled (:mod:`pyfuse.compileworker`): its ``compile()`` transient is then
   freed before the steps below allocate the output; with ``compile_worker`` on
   a large graph, compiled in a worker process, overlapping the steps below.
4. Call the fuser methods (:mod:`~pyfuse.fx.fusers`, BN folds batched by
   :mod:`~pyfuse.fx.folding`), still mutating nothing, so a failure in any of
   these steps leaves the model exactly as it was.
5. :mod:`~pyfuse.fx.rewrite` the graph in place: O(F) moves, redirects and
   erasures, where the reference copies every node into a new graph.
6. :mod:`~pyfuse.fx.output`: the output GraphModule around the edited graph,
   installing only the modules the graph uses (as ``GraphModule(model, graph)``
   would, without mutating the input's module tree), and its code (or deferred).
"""

from __future__ import annotations

import logging
from typing import Any, Literal, overload

import torch
from torch.fx import GraphModule, Node
from torch.fx.graph import CodeGen

from ..codegen import early_code
from ..compileworker import wanted
from ..engine.flatten import Flat, flatten
from ..engine.gcpause import gc_paused
from ..engine.matching import Match, match_graph
from ..errors import GraphModuleRequired, ModuleRequired, NotAModule, add_note
from ..report import Fused, FuseReport, Skipped, forward_labels, pattern_name
from .checks import check_targets, conflicts, erased_inputs, first_dangling_use
from .folding import Folds, batch_folds
from .fusers import conv_bn_pairs, fast_conv_bn, fast_conv_bn_relu
from .output import build_output
from .plan import Plan, configs, fuse_custom_config_of, plan_for
from .prepare import Fusion, Modules, prepare
from .rewrite import edit, plan_edit

__all__ = ["analyze", "call_fusers", "fuse", "fuse_fx", "record"]

log = logging.getLogger("pyfuse")


def _fuse(
    model: GraphModule,
    is_qat: bool,
    backend_config: Any,
    lazy: bool,
    return_report: bool,
    compile_worker: bool | None,
) -> GraphModule | tuple[GraphModule, FuseReport]:
    plan = plan_for(backend_config)
    report = FuseReport()
    flat, fusions, failure = analyze(model, is_qat, plan, report)
    early = planned = None
    if not lazy and failure is None:
        planned = plan_edit(flat, fusions)
        if planned is not None:
            worker = wanted(len(planned.nodes), compile_worker)
            early = early_code(model.graph, planned, CodeGen(), worker)
    try:
        replaced = call_fusers(fusions, is_qat, failure)
        if return_report:
            record(fusions, report)
        check_targets(model, flat)
        # Nothing above mutated the model; from here on nothing can fail on user input.
        graph = edit(model.graph, fusions, planned)
        del flat, fusions, planned  # (no longer needed: less memory held)
        out = build_output(model, graph, replaced, lazy, early)
    except BaseException:
        if early is not None:
            early.cancel()
        raise
    return (out, report) if return_report else out


@overload
def fuse(
    model: GraphModule,
    is_qat: bool,
    fuse_custom_config: Any = ...,
    backend_config: Any = ...,
    *,
    lazy: bool = ...,
    return_report: Literal[False] = ...,
    compile_worker: bool | None = ...,
) -> GraphModule: ...
@overload
def fuse(
    model: GraphModule,
    is_qat: bool,
    fuse_custom_config: Any = ...,
    backend_config: Any = ...,
    *,
    lazy: bool = ...,
    return_report: Literal[True],
    compile_worker: bool | None = ...,
) -> tuple[GraphModule, FuseReport]: ...
@overload
def fuse(
    model: GraphModule,
    is_qat: bool,
    fuse_custom_config: Any = ...,
    backend_config: Any = ...,
    *,
    lazy: bool = ...,
    return_report: bool,
    compile_worker: bool | None = ...,
) -> GraphModule | tuple[GraphModule, FuseReport]: ...


def fuse(
    model: GraphModule,
    is_qat: bool,
    fuse_custom_config: Any = None,
    backend_config: Any = None,
    *,
    lazy: bool = False,
    return_report: bool = False,
    compile_worker: bool | None = None,
) -> GraphModule | tuple[GraphModule, FuseReport]:
    """Fuse `model` as ``torch.ao.quantization.fx.fuse.fuse`` does.

    Args:
        model: a GraphModule (e.g. from ``torch.fx.symbolic_trace``). Its graph is
            reused by the output, as the reference reuses its modules: pass a copy
            if you still need the input.
        is_qat: fuse for quantization-aware training (e.g. ConvBnReLU2d) instead
            of folding BatchNorm (eval).
        fuse_custom_config: a FuseCustomConfig or its dict form (deprecated).
        backend_config: a BackendConfig or its dict form (deprecated); default
            torch's native backend config.
        lazy: generate the output's code on first use (``_LazyGraphModule``).
        return_report: also return a :class:`FuseReport`.
        compile_worker: on graphs of 4,000+ nodes (with 2+ CPUs), compile the
            output's code in a short-lived second Python process while the pass
            works: faster, at the cost of that process's memory (~100 MiB at 35k
            nodes). None: as the ``PYFUSE_COMPILE_WORKER`` environment variable
            says (``1`` on), else off.

    Returns:
        The fused GraphModule, or ``(GraphModule, FuseReport)``.

    Raises:
        GraphModuleRequired: `model` is not a GraphModule.
        FusionError: a fusion cannot be applied; the model is unchanged. Errors
            from fuser methods and getters propagate with a note naming the
            match, and leave the model unchanged too.
    """
    fuse_custom_config, backend_config = configs(fuse_custom_config, backend_config)
    model = _require_graph_module(model)
    with gc_paused():
        return _fuse(model, is_qat, backend_config, lazy, return_report, compile_worker)


def fuse_fx(
    model: torch.nn.Module,
    fuse_custom_config: Any = None,
    backend_config: Any = None,
    *,
    lazy: bool = False,
    compile_worker: bool | None = None,
) -> GraphModule:
    """pyfuse's ``torch.ao.quantization.quantize_fx.fuse_fx``: trace, then fuse
    (eval; `lazy` and `compile_worker` as :func:`fuse` has them)."""
    from torch.ao.quantization.quantize_fx import attach_preserved_attrs_to_model

    if not isinstance(model, torch.nn.Module):
        raise ModuleRequired(
            f"pyfuse.fuse_fx expects an nn.Module, got {type(model).__name__}"
        )
    fuse_custom_config = fuse_custom_config_of(fuse_custom_config, stacklevel=2)
    preserved = {
        a: getattr(model, a)
        for a in fuse_custom_config.preserved_attributes
        if hasattr(model, a)
    }
    traced = torch.fx.symbolic_trace(model)
    out: GraphModule = fuse(
        traced,
        False,
        fuse_custom_config,
        backend_config,
        lazy=lazy,
        compile_worker=compile_worker,
    )
    attach_preserved_attrs_to_model(out, preserved)
    return out


def analyze(
    model: GraphModule,
    is_qat: bool,
    plan: Plan,
    report: FuseReport,
    skipped_matches: list[Match] | None = None,
) -> tuple[Flat, list[Fusion], Exception | None]:
    """Steps 2-3: the fusions to make, in graph order, with skipped matches
    recorded in `report` (and their matches appended to `skipped_matches`, if
    given). If preparing a match raises, or a node that stays reads a node a match
    removes, the fusions before that point in graph order and the exception: the
    reference calls their fusers before it meets the error. Each fusion whose fused
    node would read a node that is not there holds that error
    (:func:`~pyfuse.fx.checks.erased_inputs`). Mutates nothing."""
    flat = flatten(model.graph, model, plan.compiled)
    modules = Modules(model)
    exclude: list[int] = []
    index: dict[Node, int] | None = None
    while True:
        matches = match_graph(plan.compiled, flat, exclude)
        matches.reverse()  # graph order of the last nodes, as the reference fuses
        fusions, failure = _prepare_all(plan, matches, flat, modules, is_qat)
        erased_inputs(fusions, matches)
        if failure is not None:
            return flat, fusions, failure
        bad = conflicts(fusions, matches, flat, modules) if fusions else []
        if not bad:
            return flat, fusions, None
        if index is None:
            index = {n: i for i, n in enumerate(flat.nodes)}
        for f, reason in bad:
            m = f.match
            exclude += [index[m.last], m.pattern_index]
            skipped = Skipped(
                pattern_name(m.pattern), forward_labels(m.ids, m.claimed), reason
            )
            report.skipped.append(skipped)
            if skipped_matches is not None:
                skipped_matches.append(m)
            log.warning(
                "pyfuse: not fusing %s at %s: %s",
                skipped.pattern,
                skipped.nodes,
                reason,
            )


def _prepare_all(
    plan: Plan, matches: list[Match], flat: Flat, modules: Modules, is_qat: bool
) -> tuple[list[Fusion], Exception | None]:
    """Prepare the matches in graph order, up to the first error the reference
    would meet before fusing the next one (a node reading a removed node, or a
    failing getter or lookup): the fusions before it, and that error."""
    fusions: list[Fusion] = []
    dangling = first_dangling_use(matches)
    for m in matches:
        if dangling is not None and dangling.user < m.last:
            return fusions, dangling.error()
        if not m.plain and m.last not in m.claimed:
            # The pattern's last position is MatchAllNode: the reference never
            # fuses such a match (what it claims is dropped: `dangling`).
            continue
        try:
            fusions.append(prepare(plan, m, flat, modules, is_qat))
        except Exception as e:  # noqa: BLE001 (raised by call_fusers, in the reference's order)
            add_note(e, _while_fusing(m))
            return fusions, e
    return fusions, None if dangling is None else dangling.error()


def call_fusers(
    fusions: list[Fusion], is_qat: bool, failure: Exception | None = None
) -> dict[str, torch.nn.Module]:
    """Call each fusion's fuser method in graph order, then raise the fusion's
    erased input, if any, so that the first error raised is the one the reference
    meets first; then raise `failure` (from preparing the match after the last
    fusion), if any.

    Returns the fused module per root module path; the last fusion at a path
    wins, as in the reference. Mutates nothing the caller owns.
    """
    replaced: dict[str, torch.nn.Module] = {}
    folds = None if is_qat else batch_folds(list(conv_bn_pairs(fusions)))
    for f in fusions:
        replaced[str(f.root_node.target)] = f.fused = _call_one(f, is_qat, folds)
        if f.erased_input is not None:
            raise f.erased_input
    if failure is not None:
        raise failure
    return replaced


def _while_fusing(match: Match) -> str:
    """The note added to an exception raised while preparing or fusing `match`."""
    return (
        f"pyfuse: while fusing {pattern_name(match.pattern)} at nodes "
        f"{[n.name for n in match.claimed]} (the model is unchanged)"
    )


def _call_one(f: Fusion, is_qat: bool, folds: Folds | None) -> torch.nn.Module:
    try:
        fuser = f.fuser
        if fuser is fast_conv_bn or fuser is fast_conv_bn_relu:
            fused = fuser(is_qat, *f.modules, folds=folds)
        else:
            fused = fuser(is_qat, *f.modules)
    except Exception as e:
        add_note(e, _while_fusing(f.match))
        raise
    if not isinstance(fused, torch.nn.Module):
        raise NotAModule(
            f"the fuser method for {pattern_name(f.match.pattern)} at node "
            f"{f.match.last.name!r} returned {type(fused).__name__}, not an nn.Module"
        )
    return fused


def record(fusions: list[Fusion], report: FuseReport) -> None:
    """Add the fusions made to `report`."""
    for f in fusions:
        m = f.match
        nodes = forward_labels(m.ids, m.claimed)
        modules = forward_labels(
            [i for i, n in zip(m.ids, m.claimed, strict=True) if n.op == "call_module"],
            [n for n in m.claimed if n.op == "call_module"],
        )
        report.fused.append(
            Fused(pattern_name(m.pattern), nodes, modules, type(f.fused).__name__)
        )


def _require_graph_module(model: Any) -> GraphModule:
    if not isinstance(model, GraphModule):
        raise GraphModuleRequired(
            f"pyfuse.fuse expects a torch.fx.GraphModule, got {type(model).__name__}; "
            "trace it first (torch.fx.symbolic_trace) or call pyfuse.fuse_fx"
        )
    return model
