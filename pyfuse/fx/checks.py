"""Validity checks: what the reference would get wrong or fail on, found first.

All of them read the prepared fusions and the graph and mutate nothing, so the
pass can refuse (or skip a match) with the model untouched:

* :func:`conflicts`: a fusion whose root module is also used elsewhere in a way
  the fusion would change (skipped, and the graph matched again);
* :func:`first_dangling_use`: a node that stays in the graph but reads a node a
  match removes (the reference fails there with a KeyError);
* :func:`erased_inputs`: the fused node would read a node that is not there
  (recorded on the fusion, raised after its fuser is called, as the reference
  meets it);
* :func:`check_targets`: a get_attr / call_module target that does not exist.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx import GraphModule, Node

from ..engine.flatten import Flat
from ..engine.matching import Match
from ..errors import ErasedInput
from ..report import pattern_name
from .prepare import Fusion, Modules

__all__ = [
    "Dangling",
    "check_targets",
    "conflicts",
    "erased_inputs",
    "first_dangling_use",
    "read_outside",
    "removed_nodes",
    "simple",
]


def conflicts(
    fusions: list[Fusion], matches: list[Match], flat: Flat, modules: Modules
) -> list[tuple[Fusion, str]]:
    """Fusions whose root module is used elsewhere in a way the fusion would break.

    Replacing the module at the root's path changes every other use of it, so a
    fusion is only safe when every other call of that module is the root of a
    fusion of the same shape (same pattern, same modules), or there is none.
    """
    out = _unclaimed_root_conflicts(fusions, matches)
    if not flat.get_attrs and not flat.nested:
        if not flat.repeated:
            return out  # every module is called once, none holds another, none is read
        calls_of = Counter(id(m) for m in flat.modules if m is not None)
        if all(calls_of[id(f.root_module)] < 2 for f in fusions):
            return out  # (the modules called at several sites are not roots)
    flagged = {id(f) for f, _ in out}
    # Sites the fusions erase (claimed, not a root) no longer call their module.
    erased = {n for f in fusions for n in f.match.claimed if n is not f.root_node}
    calls: Counter[int] = Counter(
        id(m)
        for m, n in zip(flat.modules, flat.nodes, strict=True)
        if m is not None and n not in erased
    )
    shape: dict[int, set[tuple[Any, ...]]] = {}
    roots: Counter[int] = Counter()
    for f in fusions:
        mid = id(f.root_module)
        roots[mid] += 1
        sig = (f.match.pattern_index, *((n.op, n.target) for n in f.match.claimed))
        shape.setdefault(mid, set()).add(sig)
    paths = {str(f.root_node.target) for f in fusions}
    attr_users: Counter[str] = Counter()
    for i in flat.get_attrs:
        target = str(flat.nodes[i].target)
        parts = target.split(".")
        for k in range(1, len(parts) + 1):
            prefix = ".".join(parts[:k])
            if prefix in paths:
                attr_users[prefix] += 1
    for f in fusions:
        path = str(f.root_node.target)
        mid = id(f.root_module)
        reason = ""
        if calls[mid] > 1 and (calls[mid] != roots[mid] or len(shape[mid]) > 1):
            reason = (
                f"module {path!r} is called at {calls[mid]} sites and not every "
                "site fuses the same way; fusing would change the other sites"
            )
        elif attr_users[path]:
            reason = f"module {path!r} is also read by get_attr nodes"
        else:
            parts = path.split(".")
            for k in range(1, len(parts)):
                outer = ".".join(parts[:k])
                parent = modules.get(outer)
                if parent is not None and calls[id(parent)]:
                    reason = (
                        f"module {path!r} is inside module {outer!r}, which is called"
                    )
                    break
        if reason and id(f) not in flagged:
            out.append((f, reason))
    return out


def _unclaimed_root_conflicts(
    fusions: list[Fusion], matches: list[Match]
) -> list[tuple[Fusion, str]]:
    """Fusions whose root node is not claimed by their match and is used elsewhere.

    Such a node stays in the graph and, like the reference, pyfuse calls the fused
    module again at the match's last node; the node itself then calls the fused
    module too. That is harmless only when nothing else reads its result and no
    other match removes it.
    """
    unclaimed = [f for f in fusions if f.unclaimed_root]
    if not unclaimed:
        return []
    claimed_anywhere = {n for f in fusions for n in f.match.claimed}
    removed = removed_nodes(matches)
    out = []
    for f in unclaimed:
        if unavailable_input(f, removed) is not None:
            continue  # the fusion fails its input check, as the reference does
        root, inside = f.root_node, set(f.match.claimed)
        what = f"the root node getter returned {root.name!r}, which the match does not claim"
        if root in claimed_anywhere:
            out.append((f, f"{what} and another match fuses"))
        elif any(u not in inside for u in root.users):
            user = next(u for u in root.users if u not in inside)
            out.append(
                (f, f"{what} and {user.name!r} also uses; fusing would change it")
            )
    return out


def simple(f: Fusion) -> bool:
    """A plain match with the default root and no extra inputs, whose edit needs no
    check: each claimed node but the last has one user, the node above it in the
    match (the automaton's rule), and the root is the match's last leaf."""
    return f.match.plain and f.root_node is f.match.claimed[-1] and not f.extra_inputs


def read_outside(f: Fusion) -> bool:
    """Whether a node the fusion removes or moves is read outside its match (by
    a node another match removes: `first_dangling_use` rejects the others)."""
    inside = set(f.match.claimed)
    return any(
        u not in inside
        for n in f.match.claimed
        if n is not f.match.last
        for u in n.users
    )


def removed_nodes(matches: list[Match]) -> set[Node]:
    """The nodes the matches remove: claimed, and not a match's last node (a root
    that is not last moves into its last node's place). The reference does not
    copy them, whether or not the match's fusion is reached."""
    return {n for m in matches for n in m.claimed if n is not m.last}


def unavailable_input(f: Fusion, removed: set[Node]) -> Node | None:
    """A node the fused node, put in the match's last node's place, would read but
    that is not there: removed by a fusion, or not before it. The reference looks
    each input up among the nodes it has copied so far."""
    used: list[Node] = []
    torch.fx.map_arg(
        (f.root_node.args, f.root_node.kwargs, f.extra_inputs), used.append
    )
    last = f.match.last
    return next((a for a in used if a in removed or not a < last), None)


def erased_inputs(fusions: list[Fusion], matches: list[Match]) -> None:
    """Record on each fusion the ErasedInput (a KeyError, as the reference's) its
    fused node would meet reading a node that is not there
    (:func:`unavailable_input`); `matches` are all the graph's matches, whose
    claims the reference skips even past its first error.

    Only a match that is not plain can claim a node another node reads, so when
    every match is plain only fusions that are not :func:`simple` need a look.
    """
    every = any(not m.plain for m in matches)
    removed: set[Node] | None = None
    for f in fusions:
        if not every and simple(f):
            continue
        if removed is None:
            removed = removed_nodes(matches)
        a = unavailable_input(f, removed)
        if a is not None:
            last = f.match.last
            where = (
                "which a fusion removes"
                if a in removed
                else f"which comes after {last.name!r}"
            )
            f.erased_input = ErasedInput(
                f"cannot fuse {pattern_name(f.match.pattern)} at node "
                f"{last.name!r}: the fused node would use {a.name!r}, {where}"
            )


def check_targets(model: GraphModule, flat: Flat) -> None:
    """Every get_attr / call_module target must exist, or building the output
    would fail (AttributeError, as the reference's GraphModule raises) half-way."""
    labels = flat.graph.label
    missing = [i for i, lab in enumerate(labels) if lab < 0]
    for i in [*missing, *flat.get_attrs]:
        node = flat.nodes[i]
        obj: Any = model
        for atom in str(node.target).split("."):
            if not hasattr(obj, atom):
                raise AttributeError(
                    f"node {node.name!r} ({node.op}) refers to {node.target!r}, but "
                    f"{type(obj).__name__} has no attribute {atom!r}; the model is unchanged"
                )
            obj = getattr(obj, atom)


@dataclass(slots=True)
class Dangling:
    """A node left in the graph that reads a node a match removes."""

    user: Node
    node: Node
    match: Match

    def error(self) -> ErasedInput:
        return ErasedInput(
            f"cannot fuse {pattern_name(self.match.pattern)} at node "
            f"{self.match.last.name!r}: it removes {self.node.name!r}, which "
            f"{self.user.name!r} also uses"
        )


def first_dangling_use(matches: list[Match]) -> Dangling | None:
    """The first node, in graph order, that stays in the graph but reads a node a
    match removes. The reference copies the graph in order and fails there
    (KeyError). Only a match that is not plain can claim a node used elsewhere:
    a getattr pattern's arguments are claimed unchecked, and a match whose last
    position is MatchAllNode removes what it claims without replacing its last node.
    """
    odd = [m for m in matches if not m.plain]
    if not odd:
        return None
    claimed = {n for m in matches for n in m.claimed}
    first: Dangling | None = None
    for m in odd:
        for n in m.claimed:
            if n is m.last:
                continue
            for u in n.users:
                if u not in claimed and (first is None or u < first.user):
                    first = Dangling(u, n, m)
    return first
