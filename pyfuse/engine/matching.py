"""Matching: run the automaton on a flattened graph, build the match records.

The automaton (C++) decides which node starts which match and which nodes each
match claims; this module turns that into the reference's records: the nested
``matched_node_pattern`` its root-node getters, extra-input getters and fuser
methods expect.

Most matches are *plain*: every position of the pattern claimed a node of its
own (no literal, no node claimed by an earlier match, no node reached twice,
no MatchAllNode, no getattr entry with arguments). Their record only depends on
the pattern, so it is built from the claimed nodes by a function compiled from
the pattern (once, when a match first needs it: :func:`plain_shapes`). The others
replay the reference's walk (O(pattern size), with every match's claims known).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.fx import Graph, Node

from .. import _core
from .flatten import Flat, flatten
from .patterns import (
    USER_CACHE_SIZE,
    CompiledPatterns,
    compile_patterns,
    match_all_node,
)

__all__ = [
    "Match",
    "MatchError",
    "find_matches",
    "match_graph",
    "plain_shape",
    "plain_shapes",
]


Builder = Callable[[Sequence[Any]], tuple[list[Any], tuple[list[Any], ...]]]


_UNBUILT: Any = object()  # (a pattern's shape not built yet)


@functools.lru_cache(maxsize=USER_CACHE_SIZE)
def plain_shapes(patterns: tuple[Any, ...]) -> list[Any]:
    """Per pattern of a set, a slot for its :func:`plain_shape` (cached per set
    by content): filled by :func:`_shapes_of` when a match first needs it, as a
    graph matches few of a config's patterns and each costs an ``exec``."""
    return [_UNBUILT] * len(patterns)


def _shapes_of(
    patterns: tuple[Any, ...], used: Sequence[int]
) -> list[tuple[int, Builder] | None]:
    """:func:`plain_shape` of the patterns at the indices in `used`, built once
    per set (other slots may be unbuilt)."""
    shapes = plain_shapes(patterns)
    for k in set(used):
        if shapes[k] is _UNBUILT:
            shapes[k] = plain_shape(patterns[k])
    return shapes


def plain_shape(pattern: Any) -> tuple[int, Builder] | None:
    """(number of positions, builder) for a pattern without MatchAllNode or a
    getattr entry with arguments, or None.

    ``builder(values)`` nests `values` (one per position, in walk order: head, then
    arguments depth first) as the reference's walk nests the nodes of a plain
    match, and returns ``(record, lists)``: the top-level list, holding tuples for
    the argument sub-patterns, and per position the list its value was recorded in
    (the walk's ``entries`` point at those lists).
    """
    match_all = match_all_node()
    lines: list[str] = []
    owners: list[str] = []

    def emit(pat: Any) -> str:
        name = f"l{len(lines)}"
        head = pat[0] if isinstance(pat, tuple) else pat
        if head is match_all or (head is getattr and len(pat) > 1):
            # (the reference claims a getattr pattern's arguments without checking
            # them or their users: such a match is checked like any other)
            raise LookupError
        lines.append(f"{name} = [v[{len(owners)}]]")
        owners.append(name)
        for sub in pat[1:] if isinstance(pat, tuple) else ():
            if isinstance(sub, tuple):
                lines.append(f"{name}.append(tuple({emit(sub)}))")
            elif sub is match_all:
                raise LookupError
            else:
                lines.append(f"{name}.append(v[{len(owners)}])")
                owners.append(name)
        return name

    try:
        top = emit(pattern)
    except LookupError:
        return None
    source = "def build(v):\n" + "".join(f"    {line}\n" for line in lines)
    source += f"    return {top}, ({', '.join(owners)},)\n"
    scope: dict[str, Any] = {}
    exec(source, scope)  # noqa: S102 (source built from integers only)
    return len(owners), scope["build"]


class Match:
    """One fusion match.

    Attributes:
        index: position in claim order (reverse graph order of `last`).
        last: the node matching started at; the fused node takes its place.
        pattern: the reversed nested-tuple pattern that matched.
        pattern_index: its index in the priority-ordered pattern list.
        ids: flattened indices of the claimed nodes, in walk order.
        claimed: the nodes this match claims, in walk order.
        plain: every pattern position claimed a node of its own.
        node_pattern: the reference's ``matched_node_pattern`` for `last`.
        entries: node name -> (last, pattern, the list the node was recorded in).
    """

    __slots__ = (
        "_entries",
        "_node_pattern",
        "_walk",
        "claimed",
        "ids",
        "index",
        "last",
        "pattern",
        "pattern_index",
        "plain",
        "shape",
    )

    def __init__(
        self,
        walk: _Walk,
        index: int,
        last: Node,
        pattern: Any,
        pattern_index: int,
        ids: list[int],
        claimed: list[Node],
        shape: tuple[int, Builder] | None,
    ) -> None:
        self._walk = walk
        self.index = index
        self.last = last
        self.pattern = pattern
        self.pattern_index = pattern_index
        self.ids = ids
        self.claimed = claimed
        self.plain = shape is not None and shape[0] == len(ids)
        self.shape = shape  # the pattern's plain_shape
        self._node_pattern: list[Any] | None = None
        self._entries: dict[str, tuple[Node, Any, list[Any]]] | None = None

    @property
    def last_index(self) -> int:
        """The flattened index of `last`."""
        return self._walk.roots[self.index]

    @property
    def node_pattern(self) -> list[Any]:
        if self._node_pattern is None:
            self._build()
        assert self._node_pattern is not None
        return self._node_pattern

    @property
    def entries(self) -> dict[str, tuple[Node, Any, list[Any]]]:
        if self._entries is None:
            self._build()
        assert self._entries is not None
        return self._entries

    def _build(self) -> None:
        if not self.plain:
            self._node_pattern, self._entries = self._walk.replay(self)
            return
        assert self.shape is not None
        self._node_pattern, lists = self.shape[1](self.claimed)
        last, pattern = self.last, self.pattern
        self._entries = {
            n.name: (last, pattern, acc)
            for n, acc in zip(self.claimed, lists, strict=True)
        }

    def __repr__(self) -> str:
        return f"Match({self.index}, {self.last.name!r}, {self.pattern!r})"


class _Walk:
    """The reference's apply_match walk, replayed for one match on demand.

    Shared by the matches of one graph. It reads which match claimed each node
    from the core's result (``MatchResult.owner``) and follows the arguments
    through the flattened arrays, in step with the nodes' own ``args``; these are
    read only when a match that is not plain is replayed.
    """

    __slots__ = ("_arg", "_arg_off", "_owner", "_result", "flat", "roots")

    def __init__(self, result: _core.MatchResult, flat: Flat, roots: list[int]) -> None:
        self._result = result
        self.flat = flat
        self.roots = roots  # per match: flattened index of the node it started at
        self._owner: list[int] | None = None
        self._arg: list[int] = []
        self._arg_off: list[int] = []

    def replay(
        self, match: Match
    ) -> tuple[list[Any], dict[str, tuple[Node, Any, list[Any]]]]:
        """`match`'s node pattern and entries, as the reference's walk records them."""
        if self._owner is None:
            self._owner = self._result.owner
            self._arg = self.flat.graph.arg
            self._arg_off = self.flat.graph.arg_off
        owner, args, arg_off = self._owner, self._arg, self._arg_off
        m = match.index
        last, pattern = match.last, match.pattern
        match_all = match_all_node()
        seen: set[Node] = set()
        entries: dict[str, tuple[Node, Any, list[Any]]] = {}

        # (fuse.py's apply_match): a node is recorded where it is first reached
        # unless an earlier match, or this one, claimed it. `at` is the flattened
        # index of `arg` when it is a node.
        def walk(pat: Any, arg: Any, at: int, acc: list[Any]) -> None:
            if isinstance(pat, tuple):
                cur: list[Any] = []
                walk(pat[0], arg, at, cur)
                if isinstance(arg, Node):
                    b = arg_off[at]
                    for k, (sub, a) in enumerate(zip(pat[1:], arg.args, strict=False)):
                        walk(sub, a, args[b + k], cur)
                acc.append(tuple(cur))
                return
            if not isinstance(arg, Node):
                acc.append(arg)  # a literal (the reference crashes here)
                return
            o = owner[at]
            if (0 <= o < m) or arg in seen:
                return
            acc.append(arg)
            if pat is not match_all:
                seen.add(arg)
                entries[arg.name] = (last, pattern, acc)

        top: list[Any] = []
        walk(pattern, last, self.roots[m], top)
        node_pattern = entries[last.name][2] if last.name in entries else top
        return node_pattern, entries


class MatchError(ValueError):
    """The native matcher rejected the flattened graph."""


def _run(
    compiled: CompiledPatterns, flat: Flat, exclude: Sequence[int] = ()
) -> _core.MatchResult:
    res = compiled.automaton.match(flat.graph, list(exclude))
    if res.error:
        node = flat.nodes[res.error_node] if res.error_node >= 0 else None
        if res.missing_module and node is not None:
            raise KeyError(
                f"node {node.name!r} calls module {node.target!r}, which does not "
                "exist in the model"
            )
        where = f" (node {node.name!r})" if node is not None else ""
        raise MatchError(f"pyfuse matcher: {res.error}{where}")
    return res


def match_graph(
    compiled: CompiledPatterns, flat: Flat, exclude: Sequence[int] = ()
) -> list[Match]:
    """All matches in claim order. `exclude` holds (node index, pattern index) pairs."""
    res = _run(compiled, flat, exclude)
    roots, pats, claimed, claimed_off = (
        res.roots,
        res.patterns,
        res.claimed,
        res.claimed_off,
    )
    nodes = flat.nodes
    patterns = compiled.patterns
    out: list[Match] = []
    shapes = _shapes_of(patterns, pats)
    walk = _Walk(res, flat, roots)
    for m, (r, k) in enumerate(zip(roots, pats, strict=True)):
        ids = claimed[claimed_off[m] : claimed_off[m + 1]]
        out.append(
            Match(
                walk,
                m,
                nodes[r],
                patterns[k],
                k,
                ids,
                [nodes[i] for i in ids],
                shapes[k],
            )
        )
    return out


def find_matches(
    root: torch.nn.Module, graph: Graph, patterns: Sequence[Any]
) -> dict[str, tuple[Node, Any, list[Any]]]:
    """The reference's ``_find_matches`` result, without the handler fields.

    Args:
        root: the module owning the graph's call_module targets.
        graph: the FX graph.
        patterns: reversed nested-tuple patterns in priority order.

    Returns:
        node name -> (node matching started at, pattern, matched node pattern).
    """
    compiled = compile_patterns(patterns)
    result: dict[str, tuple[Node, Any, list[Any]]] = {}
    for match in match_graph(compiled, flatten(graph, root, compiled)):
        result.update(match.entries)
    return result
