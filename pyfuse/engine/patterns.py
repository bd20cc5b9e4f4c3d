"""Compiling fusion patterns into the native automaton.

A pattern set (reversed nested-tuple patterns, in priority order) is interned
into integer codes and handed to :class:`pyfuse._core.Automaton` once; the result
is cached by the pattern tuple, so every backend config with the same patterns
shares one automaton.

## Caches
Whatever is derived from user-given patterns or configs is cached by content
(an equal input rebuilt finds the entry) and bounded: ``functools.lru_cache(
maxsize=USER_CACHE_SIZE)`` on a hashable content key, least recently used entry
evicted first. A cache keyed by a closed set of our own values (a constant, no
argument) may stay ``functools.cache``.

## Encoding
- *labels* name what a graph node is: ``0`` nothing any pattern names, then one
  label per module class, per function (by identity, as the reference's ``is``
  test) and per method name that occurs as a pattern head.
- *sub-patterns* are hash-consed by Python equality and listed children first.
  Each has a head kind (match-all, label, never, getattr) and children: the
  pattern's elements after its head.
- a *literal* argument of a node is encoded by the id of the sub-pattern it
  equals (the reference's ``node == pattern`` test), or -1.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from typing import Any

import torch
from torch.fx import Node

from .. import _core
from ..errors import MalformedGetattr, PatternError

__all__ = [
    "USER_CACHE_SIZE",
    "CompiledPatterns",
    "compile_patterns",
    "match_all_node",
    "pattern_size",
    "sort_patterns",
]

#: Entries each cache of user-derived values keeps (see "Caches" above).
USER_CACHE_SIZE = 32

# Head kinds (defined in csrc/core/automaton.hpp).
_MATCH_ALL, _LABEL, _NEVER, _GETATTR = (
    _core.HEAD_MATCH_ALL,
    _core.HEAD_LABEL,
    _core.HEAD_NEVER,
    _core.HEAD_GETATTR,
)


@functools.cache  # (no argument: one value)
def match_all_node() -> type:
    """torch's MatchAllNode (imported on first use)."""
    from torch.ao.quantization.utils import MatchAllNode

    return MatchAllNode


def _type_before_parametrizations(module: torch.nn.Module) -> type:
    from torch.nn.utils.parametrize import type_before_parametrizations

    return type_before_parametrizations(module)


class CompiledPatterns:
    """An immutable, compiled pattern set: interning tables plus the automaton."""

    def __init__(self, patterns: Sequence[Any]) -> None:
        self.patterns: tuple[Any, ...] = tuple(patterns)
        match_all = match_all_node()
        self._sub_ids: dict[Any, int] = {}
        self._module_labels: dict[type, int] = {}
        self._func_labels: dict[Any, int] = {}
        self._method_labels: dict[str, int] = {}
        self._label_is_module: list[int] = [0]  # label 0: names nothing
        head: list[int] = []
        label: list[int] = []
        check_args: list[int] = []
        child_off: list[int] = [0]
        child: list[int] = []

        def new_label(is_module: bool) -> int:
            self._label_is_module.append(int(is_module))
            return len(self._label_is_module) - 1

        def head_of(entry: Any, where: Any) -> tuple[int, int]:
            if isinstance(entry, tuple):
                raise PatternError(
                    f"pattern {where!r}: a nested tuple as a pattern head is not "
                    "supported (the head must be a module class, function, method "
                    "name or MatchAllNode)"
                )
            if isinstance(entry, type) and issubclass(entry, match_all):
                if entry is not match_all:
                    raise PatternError(
                        f"pattern {where!r}: subclasses of MatchAllNode are not "
                        "supported"
                    )
                return _MATCH_ALL, 0
            if isinstance(entry, type) and issubclass(entry, torch.nn.Module):
                if entry not in self._module_labels:
                    self._module_labels[entry] = new_label(True)
                return _LABEL, self._module_labels[entry]
            if callable(entry):
                if entry not in self._func_labels:
                    self._func_labels[entry] = new_label(False)
                return (_GETATTR if entry is getattr else _LABEL), self._func_labels[
                    entry
                ]
            if isinstance(entry, str):
                if entry not in self._method_labels:
                    self._method_labels[entry] = new_label(False)
                return _LABEL, self._method_labels[entry]
            return _NEVER, 0

        def intern(sub: Any, where: Any) -> int:
            try:
                found = self._sub_ids.get(sub)
            except TypeError:
                raise PatternError(f"pattern {where!r} is not hashable") from None
            if found is not None:
                return found
            if isinstance(sub, tuple):
                if not sub:
                    raise PatternError(f"pattern {where!r} holds an empty tuple")
                kind, lab = head_of(sub[0], where)
                if kind == _GETATTR and len(sub) != 2:
                    raise MalformedGetattr(
                        f"pattern {where!r}: a getattr pattern needs exactly two "
                        "elements, (getattr, name)"
                    )
                kids = [intern(c, where) for c in sub[1:]]
            else:
                kind, lab = head_of(sub, where)
                if kind == _GETATTR:
                    raise PatternError(
                        f"pattern {where!r}: getattr must be written (getattr, name)"
                    )
                kids = []
            sid = len(head)
            head.append(kind)
            label.append(lab)
            check_args.append(int(bool(kids) and kind != _GETATTR))
            child.extend(kids)
            child_off.append(len(child))
            self._sub_ids[sub] = sid
            return sid

        top = [intern(p, p) for p in self.patterns]
        self.automaton = _core.Automaton(
            head,
            label,
            check_args,
            child_off,
            child,
            top,
            self._label_is_module,
            len(self._label_is_module),
        )
        self.has_module_heads = bool(self._module_labels)
        # (the flattener's tables: see pyfuse.engine.flatten)
        self.interner = _core.Interner(
            self._func_labels,
            self._method_labels,
            self._module_labels,
            self._sub_ids,
            self._resolve_type,
            Node,
        )

    def _resolve_type(self, module: torch.nn.Module) -> int:
        return self._module_labels.get(_type_before_parametrizations(module), 0)


def compile_patterns(patterns: Sequence[Any]) -> CompiledPatterns:
    """The compiled automaton for `patterns` (priority order), cached by content.

    Raises:
        PatternError: a pattern is not hashable (named), or not a valid pattern.
    """
    key = tuple(patterns)
    try:
        hash(key)
    except TypeError:
        bad = next(p for p in key if not _hashable(p))
        raise PatternError(
            f"fusion pattern {bad!r} is not hashable (patterns are tuples of "
            "module classes, functions, method names and MatchAllNode)"
        ) from None
    return _compiled(key)


@functools.lru_cache(maxsize=USER_CACHE_SIZE)
def _compiled(patterns: tuple[Hashable, ...]) -> CompiledPatterns:
    return CompiledPatterns(patterns)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def pattern_size(pattern: Any) -> int:
    """Count of entries, the reference's sort key for fusion patterns."""
    if isinstance(pattern, tuple):
        return sum(pattern_size(p) for p in pattern)
    return 1


def sort_patterns(patterns: Sequence[Any]) -> list[Any]:
    """Longest first, ties in given order; non-tuple patterns last."""
    return sorted(
        patterns, key=lambda p: -pattern_size(p) if isinstance(p, tuple) else 1
    )
