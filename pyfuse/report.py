"""What a fusion pass did: the report types both flows return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FuseReport", "Fused", "Skipped", "pattern_name"]


@dataclass(frozen=True)
class Fused:
    """A fusion pyfuse made (or would make)."""

    pattern: str
    nodes: tuple[str, ...]
    modules: tuple[str, ...]
    fused_type: str


@dataclass(frozen=True)
class Skipped:
    """A match left unfused, and why."""

    pattern: str
    nodes: tuple[str, ...]
    reason: str


@dataclass
class FuseReport:
    """What a fusion pass did: the fusions made and the matches it skipped."""

    fused: list[Fused] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def pattern_name(pattern: Any) -> str:
    """Forward-order, readable form of a reversed nested-tuple pattern."""

    def name(entry: Any) -> str:
        return getattr(entry, "__name__", None) or repr(entry)

    if not isinstance(pattern, tuple):
        return name(pattern)
    head, *args = pattern
    parts = [pattern_name(a) for a in args]
    inner = parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"
    return f"{inner} -> {name(head)}" if parts else name(head)
