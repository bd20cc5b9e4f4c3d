"""Folding BatchNorms into a GraphModule in place (``ExportedProgram.module()``).

The edit torchao's pt2e fold makes, made once per group instead of once per
BatchNorm with a whole-graph pass each: the folded weight and bias replace the
producer's parameters under the same attribute names (a bias-less producer gets
``<weight>_bias`` and a ``get_attr`` node before it), the BatchNorm's readers
read the producer, and dead code is removed once at the end. Every folded tensor
is computed before the graph is touched, and the edit keeps a journal, so a
failure leaves the module as it was.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch.fx import GraphModule, Node

from ..codegen import recompile
from ..engine.gcpause import gc_paused
from ..report import Fused, FuseReport, Skipped
from .dce import eliminate_dead_code
from .match import find_sites
from .ops import Producer
from .plan import Group, Site, plan_folds
from .weights import fold_weights

__all__ = ["ModuleStore", "fold_module"]

_MISSING = object()


def bias_name(weight_key: str) -> str:
    """The attribute torchao names the folded bias of a bias-less producer."""
    return weight_key + "_bias"


class ModuleStore:
    """Constants of a GraphModule: the attributes its get_attr nodes read."""

    def __init__(self, gm: GraphModule, get_attrs: Sequence[Node]) -> None:
        self.gm = gm
        self._owners: dict[str, Any] = {"": gm}  # dotted path -> object there
        self._readers: dict[str, list[Node]] = {}
        for n in get_attrs:
            if isinstance(n.target, str):
                self._readers.setdefault(n.target, []).append(n)

    def key(self, node: Node) -> str | None:
        return (
            node.target
            if node.op == "get_attr" and isinstance(node.target, str)
            else None
        )

    def readers(self, key: str) -> list[Node]:
        return self._readers.get(key, [])

    def owner(self, key: str) -> tuple[Any, str]:
        """(the object holding attribute `key`, the attribute's name), or (None, name)."""
        path, _, field = key.rpartition(".")
        try:
            return self._owners[path], field
        except KeyError:
            pass
        obj, parent = self.owner(path)
        found = None
        if isinstance(obj, torch.nn.Module):  # what Module.__getattr__ looks up
            found = obj._modules.get(parent)
        if found is None and obj is not None:
            found = getattr(obj, parent, None)
        self._owners[path] = found
        return found, field

    def replaceable(self, key: str) -> str | None:
        owner, field = self.owner(key)
        if not isinstance(owner, torch.nn.Module):
            return f"{key!r} is not an attribute of a module"
        if not isinstance(owner._parameters.get(field), torch.nn.Parameter):
            return f"{key!r} is not a parameter"
        return None

    def exists(self, key: str) -> bool:
        owner, field = self.owner(key)
        return owner is not None and hasattr(owner, field)

    def tensor(self, key: str, node: Node) -> torch.Tensor:
        owner, field = self.owner(key)
        value: Any = _MISSING
        if isinstance(owner, torch.nn.Module):  # what Module.__getattr__ looks up
            value = owner._parameters.get(field, _MISSING)
            if value is _MISSING:
                value = owner._buffers.get(field, _MISSING)
        if value is _MISSING and owner is not None:
            value = getattr(owner, field, _MISSING)
        if value is _MISSING:
            raise RuntimeError(
                f"node {node.name!r} reads {key!r}, which does not exist in the module"
            )
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"node {node.name!r} reads {key!r}, which is not a tensor")
        return value


class _Journal:
    """The graph and module edits made so far, to undo them on failure."""

    def __init__(self) -> None:
        self._undo: list[Any] = []

    def set_param(
        self, owner: torch.nn.Module, field: str, value: torch.nn.Parameter
    ) -> None:
        old = (
            owner._parameters.get(field, _MISSING)
            if field in owner._parameters
            else _MISSING
        )
        self._undo.append(("param", owner, field, old))
        owner.register_parameter(field, value)

    def set_args(self, node: Node, args: tuple[Any, ...]) -> None:
        self._undo.append(("args", node, node.args))
        node.args = args

    def redirect(self, old: Node, new: Node) -> None:
        for user in list(old.users):
            self._undo.append(("both", user, user.args, user.kwargs))
        old.replace_all_uses_with(new)

    def added(self, node: Node) -> None:
        self._undo.append(("node", node))

    def rollback(self) -> None:
        for entry in reversed(self._undo):
            kind = entry[0]
            if kind == "param":
                _, owner, field, old = entry
                if old is _MISSING:
                    del owner._parameters[field]
                else:
                    owner._parameters[field] = old
            elif kind == "args":
                entry[1].args = entry[2]
            elif kind == "both":
                entry[1].args = entry[2]
                entry[1].kwargs = entry[3]
            else:
                node = entry[1]
                node.graph.erase_node(node)
        self._undo.clear()


def _compute(
    group: Group, store: ModuleStore
) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    s = group.first

    def get(key: str | None, node: Node | None) -> torch.Tensor | None:
        return None if key is None or node is None else store.tensor(key, node)

    bn_args = s.bn.args
    bw_key, bb_key, rm_key, rv_key = s.bn_keys
    bw = get(bw_key, bn_args[1] if bw_key is not None else None)  # type: ignore[arg-type]
    bb = get(bb_key, bn_args[2] if bb_key is not None else None)  # type: ignore[arg-type]
    rm = store.tensor(rm_key, s.bn)
    rv = store.tensor(rv_key, s.bn)
    w = store.tensor(s.weight_key, s.weight_node)
    b = get(s.bias_key, s.bias_node)
    return fold_weights(
        s.producer.kind, s.transpose, s.groups, w, b, rm, rv, s.eps, bw, bb
    )


def _redirect_norm(journal: _Journal, bn: Node, prod: Node, tuple_output: bool) -> None:
    if not tuple_output:
        journal.redirect(bn, prod)
        return
    for user in list(bn.users):
        if (
            user.op == "call_function"
            and user.target is operator.getitem
            and user.args[1] == 0
        ):
            journal.redirect(user, prod)


def _apply(
    gm: GraphModule,
    store: ModuleStore,
    group: Group,
    weight: torch.nn.Parameter,
    bias: torch.nn.Parameter,
    journal: _Journal,
) -> None:
    s = group.first
    graph = gm.graph
    owner, field = store.owner(s.weight_key)
    journal.set_param(owner, field, weight)
    bowner, bfield = store.owner(s.bias_key or bias_name(s.weight_key))
    journal.set_param(bowner, bfield, bias)
    for site in group.sites:
        prod = site.prod
        if s.bias_key is None:
            with graph.inserting_before(prod):
                get_bias = graph.get_attr(bias_name(s.weight_key))
            journal.added(get_bias)
            if site.producer.kind != "linear" and "val" in prod.meta:
                get_bias.meta["val"] = prod.meta["val"].fake_mode.from_tensor(
                    bias, static_shapes=True
                )
            args = list(prod.args)
            if len(args) == 2:
                args.append(None)
            args[2] = get_bias
            journal.set_args(prod, tuple(args))
        _redirect_norm(journal, site.bn, prod, site.norm.tuple_output)


def how(site: Site) -> str:
    """The report's word for a fold."""
    return (
        "folded, training-mode BatchNorm: running statistics"
        if site.training
        else "folded"
    )


def fold_module(
    gm: GraphModule, producers: Sequence[Producer], *, check_rank: bool
) -> FuseReport:
    """Fold every safe BatchNorm of `gm` into `producers`, in place."""
    with gc_paused():  # the pass only allocates; see gc_paused
        return _fold_module(gm, producers, check_rank=check_rank)


def _fold_module(
    gm: GraphModule, producers: Sequence[Producer], *, check_rank: bool
) -> FuseReport:
    sites = find_sites(gm.graph, gm, producers)
    report = FuseReport()
    if not sites.any_norm:
        return report
    store = ModuleStore(gm, sites.get_attrs)
    plan = plan_folds(
        sites,
        producers,
        store,
        check_rank=check_rank,
        new_bias_name=bias_name,
        fold_training=True,
    )
    folded = [(g, *_compute(g, store)) for g in plan.groups]  # before any edit
    journal = _Journal()
    try:
        for group, weight, bias in folded:
            _apply(gm, store, group, weight, bias, journal)
    except BaseException:
        journal.rollback()
        raise
    graph = gm.graph
    eliminate_dead_code(graph)
    for group, _w, _b in folded:
        for site in group.sites:
            bn = site.bn
            if not bn._erased and not bn.users:
                graph.erase_node(bn)
    recompile(gm)  # gm.recompile(), the text written by the native emitter
    for group, _w, _b in folded:
        s = group.first
        attrs = (s.weight_key, s.bias_key or bias_name(s.weight_key))
        for site in group.sites:
            report.fused.append(
                Fused(site.pattern, (site.prod.name, site.bn.name), attrs, how(site))
            )
    report.skipped.extend(Skipped(p, n, r) for p, n, r in plan.skipped)
    return report
