"""Deciding which BatchNorms fold: per-site checks, then per-weight groups.

A *site* is a BatchNorm reading a producer (conv / conv-transpose / linear). It
folds when every check passes: the BatchNorm is in inference mode with running
statistics, the producer's output is read by the BatchNorm only, and its weight
and bias are constants (module attributes, or lifted parameters). Sites are then
grouped by the weight they rewrite: a group folds only when nothing but its own
producers reads that weight (and bias) and all of them feed the same BatchNorm
statistics, so one folded weight is right for every reader. Everything else is
skipped with a reason; nothing here changes the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch.fx import Node

from .match import Sites
from .ops import Norm, Producer, short_name

__all__ = ["Group", "Plan", "Site", "Store", "plan_folds"]

aten = torch.ops.aten


class Store(Protocol):
    """Where a graph's constants live (module attributes, or an ExportedProgram's
    lifted parameters and buffers)."""

    def key(self, node: Node) -> str | None:
        """The name of the constant `node` reads, or None if it reads none."""
        ...

    def readers(self, key: str) -> list[Node]:
        """The nodes reading the constant `key` (get_attr nodes or placeholders)."""
        ...

    def replaceable(self, key: str) -> str | None:
        """Why the constant `key` cannot be replaced by a folded one, or None."""
        ...

    def exists(self, key: str) -> bool:
        """Whether a constant (or any attribute) is named `key`."""
        ...


@dataclass
class Site:
    """A BatchNorm and the producer it reads, with the constants a fold needs."""

    bn: Node
    norm: Norm
    prod: Node
    producer: Producer
    weight_reader: Node  # the node reading the weight constant: prod, or its permute
    weight_node: Node
    weight_key: str
    bias_node: Node | None
    bias_key: str | None
    bn_keys: tuple[str | None, str | None, str, str]  # weight, bias, mean, var
    eps: float
    transpose: bool
    groups: int
    training: bool = False  # a training-mode BatchNorm, folded with running statistics

    @property
    def pattern(self) -> str:
        return f"{short_name(self.prod.target)} -> {short_name(self.bn.target)}"

    def signature(self) -> tuple[Any, ...]:
        return (
            self.bias_key,
            self.bn_keys,
            self.eps,
            self.transpose,
            self.groups,
            self.producer.kind,
        )


@dataclass
class Group:
    """Sites sharing one weight constant, folded once."""

    sites: list[Site]

    @property
    def first(self) -> Site:
        return self.sites[0]


@dataclass
class Plan:
    """The folds to make (in graph order of their first BatchNorm) and the skips."""

    groups: list[Group] = field(default_factory=list)
    skipped: list[tuple[str, tuple[str, ...], str]] = field(default_factory=list)


class _Skip(Exception):
    """A site check failed (internal: carries the reason)."""


def _kind_name(producer: Producer) -> str:
    return (
        "linear"
        if producer.kind in ("linear", "addmm", "mm")
        else ("conv_transpose" if producer.kind == "conv_transpose" else "conv")
    )


def _readers_text(nodes: Sequence[Node]) -> str:
    names = [n.name for n in nodes]
    return ", ".join(names[:3]) + (
        f" and {len(names) - 3} more" if len(names) > 3 else ""
    )


def _other_readers(prod: Node, bn: Node) -> list[Node]:
    """The nodes besides `bn` reading the producer's output."""
    return [u for u in prod.users if u is not bn]


def _norm_args(bn: Node, norm: Norm) -> list[Any]:
    if not bn.kwargs and len(bn.args) == norm.arity:
        return list(bn.args)
    schema = norm.target._schema.arguments
    out: list[Any] = []
    for i, arg in enumerate(schema):
        if arg.name in bn.kwargs:
            out.append(bn.kwargs[arg.name])
        elif i < len(bn.args):
            out.append(bn.args[i])
        elif arg.has_default_value():
            out.append(arg.default_value)
        else:
            raise _Skip(f"BatchNorm argument {arg.name!r} missing")
    return out


def _literal_arg(node: Node, index: int, default: Any) -> Any:
    return node.args[index] if len(node.args) > index else default


def _site(
    bn: Node,
    norm: Norm,
    by_target: dict[Any, Producer],
    store: Store,
    check_rank: bool,
    fold_training: bool,
) -> Site | None:
    """The site at `bn`, None when `bn` does not read a producer; raises _Skip."""
    prod = bn.args[0] if bn.args else bn.kwargs.get("input")
    if not isinstance(prod, Node) or prod.op != "call_function":
        return None
    producer = by_target.get(prod.target)
    if producer is None:
        return None
    what = _kind_name(producer)
    args = _norm_args(bn, norm)
    keys: list[str | None] = []
    for i, name in (
        (1, "weight"),
        (2, "bias"),
        (3, "running_mean"),
        (4, "running_var"),
    ):
        a = args[i]
        if a is None:
            if i >= 3:
                raise _Skip(f"BatchNorm has no {name} (track_running_stats=False)")
            keys.append(None)
            continue
        k = store.key(a) if isinstance(a, Node) else None
        if k is None:
            raise _Skip(f"BatchNorm {name} is not a constant ({a})")
        keys.append(k)
    training = norm.training >= 0 and args[norm.training] is not False
    if training and not (fold_training and args[norm.training] is True):
        raise _Skip("BatchNorm normalizes with batch statistics (training=True)")
    if training:
        # its running statistics fold as they are now: nothing else may read (or,
        # in training mode, update) them during the forward
        shared = list(
            dict.fromkeys(
                u
                for k in (keys[2], keys[3])
                for r in store.readers(str(k))
                for u in r.users
                if u is not bn
            )
        )
        if shared:
            raise _Skip(
                "training-mode BatchNorm's running statistics also read by "
                f"{_readers_text(shared)}"
            )
    eps = args[norm.eps]
    if not isinstance(eps, float | int) or isinstance(eps, bool):
        raise _Skip(f"BatchNorm eps is not a number ({eps!r})")
    others = _other_readers(prod, bn)
    if others:
        raise _Skip(f"{what} output also read by {_readers_text(others)}")
    if prod.kwargs:
        raise _Skip(f"{short_name(prod.target)} arguments given by keyword")
    transpose = producer.kind == "conv_transpose"
    groups = 1
    if producer.kind == "convolution":
        transpose = _literal_arg(prod, 6, False)
        if not isinstance(transpose, bool):
            raise _Skip(f"convolution transposed flag is not a literal ({transpose})")
    if producer.groups >= 0:
        groups = _literal_arg(prod, producer.groups, 1)
        if not isinstance(groups, int) or isinstance(groups, bool):
            raise _Skip(f"{what} groups is not a literal int ({groups})")
    weight_reader = prod
    if producer.kind in ("addmm", "mm"):
        perm = _literal_arg(prod, producer.weight, None)
        if not (
            isinstance(perm, Node)
            and perm.op == "call_function"
            and perm.target is aten.permute.default
            and len(perm.args) == 2
            and isinstance(perm.args[1], list | tuple)
            and list(perm.args[1]) in ([1, 0], [-1, -2], [1, -2], [-1, 0])
            and not perm.kwargs
        ):
            raise _Skip(
                f"{short_name(prod.target)} weight is not permute(weight, [1, 0])"
            )
        if len(perm.users) != 1:
            raise _Skip(
                f"transposed linear weight also read by "
                f"{_readers_text([u for u in perm.users if u is not prod])}"
            )
        if producer.kind == "addmm" and any(a != 1 for a in prod.args[3:5]):
            raise _Skip("addmm with beta or alpha other than 1")
        weight_reader = perm
        weight = perm.args[0]
    else:
        weight = _literal_arg(prod, producer.weight, None)
    if not isinstance(weight, Node) or (wkey := store.key(weight)) is None:
        raise _Skip(f"{what} weight is not a constant ({weight})")
    if (why := store.replaceable(wkey)) is not None:
        raise _Skip(f"{what} weight {why}")
    bias = _literal_arg(prod, producer.bias, None) if producer.bias >= 0 else None
    bkey: str | None = None
    if bias is not None:
        if not isinstance(bias, Node) or (bkey := store.key(bias)) is None:
            raise _Skip(f"{what} bias is not a constant ({bias})")
        if (why := store.replaceable(bkey)) is not None:
            raise _Skip(f"{what} bias {why}")
    if check_rank and producer.kind == "linear":
        x = prod.args[0] if prod.args else None
        val = x.meta.get("val") if isinstance(x, Node) else None
        if not isinstance(val, torch.Tensor):
            raise _Skip(
                "linear input rank unknown (no 'val' meta): BatchNorm may "
                "normalize another dimension than linear transforms"
            )
        if val.ndim != 2:
            raise _Skip(
                f"linear input is {val.ndim}-D: BatchNorm normalizes dim 1, "
                "linear transforms the last dim"
            )
    return Site(
        bn,
        norm,
        prod,
        producer,
        weight_reader,
        weight,
        wkey,
        bias,
        bkey,
        (keys[0], keys[1], str(keys[2]), str(keys[3])),
        float(eps),
        transpose,
        groups,
        training,
    )


def _group_problem(sites: list[Site], store: Store, what: str) -> str | None:
    """Why the sites sharing one weight cannot fold together, or None."""
    first = sites[0]
    readers = {id(s.weight_reader): s for s in sites}
    outside: list[Node] = []
    for r in store.readers(first.weight_key):
        for u in r.users:
            s = readers.get(id(u))
            pos = (
                s.producer.weight if s is not None and s.weight_reader is s.prod else 0
            )
            if (
                s is None
                or u.args[pos] is not r
                or sum(a is r for a in u.args) != 1
                or u.kwargs
            ):
                outside.append(u)
    if outside:
        return f"{what} weight also read by {_readers_text(outside)}"
    if len({s.signature() for s in sites}) > 1:
        return f"{what} weight shared by {len(sites)} {what}s with different BNs"
    if first.bias_key is not None:
        prods = {id(s.prod) for s in sites}
        bias_pos = first.producer.bias
        for r in store.readers(first.bias_key):
            for u in r.users:
                if (
                    id(u) not in prods
                    or u.args[bias_pos] is not r
                    or sum(a is r for a in u.args) != 1
                ):
                    outside.append(u)
        if outside:
            return f"{what} bias also read by {_readers_text(outside)}"
        if (
            first.bias_key in {k for k in first.bn_keys if k is not None}
            or first.bias_key == first.weight_key
        ):
            return f"{what} bias is also a BatchNorm constant"
    return None


def plan_folds(
    sites: Sites,
    producers: Sequence[Producer],
    store: Store,
    *,
    check_rank: bool = True,
    new_bias_name: Callable[[str], str] | None = None,
    fold_training: bool = False,
) -> Plan:
    """Which BatchNorms of `sites` fold into `producers`, and why others do not.

    `new_bias_name(weight_key)` names the bias constant a bias-less producer gets;
    that name must be free. `fold_training`: training-mode BatchNorms fold too,
    with their running statistics (torchao's pt2e folds do; the output then is
    the model's in eval mode).
    """
    by_target = {p.target: p for p in producers}
    plan = Plan()
    by_weight: dict[str, list[Site]] = {}
    order: list[str] = []
    for bn, norm, _paired in sites.norms:
        try:
            site = _site(bn, norm, by_target, store, check_rank, fold_training)
        except _Skip as skip:
            prod = bn.args[0] if bn.args else None
            names = (prod.name, bn.name) if isinstance(prod, Node) else (bn.name,)
            pattern = (
                f"{short_name(prod.target)} -> {short_name(bn.target)}"
                if isinstance(prod, Node)
                else short_name(bn.target)
            )
            plan.skipped.append((pattern, names, str(skip)))
            continue
        if site is None:
            continue
        if site.weight_key not in by_weight:
            by_weight[site.weight_key] = []
            order.append(site.weight_key)
        by_weight[site.weight_key].append(site)
    # A weight key read by a skipped site's producer is caught by the reader check.
    for key in order:
        group = by_weight[key]
        what = _kind_name(group[0].producer)
        why = _group_problem(group, store, what)
        if (
            why is None
            and group[0].bias_key is None
            and new_bias_name is not None
            and store.exists(new_bias_name(key))
        ):
            why = f"the name {new_bias_name(key)!r} for the folded bias is taken"
        if why is not None:
            for s in group:
                plan.skipped.append((s.pattern, (s.prod.name, s.bn.name), why))
            continue
        plan.groups.append(Group(group))
    return plan
