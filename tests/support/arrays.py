"""Builders of the native core's integer arrays, for tests of ``pyfuse._core``.

Encoding (csrc/core/automaton.hpp): a sub-pattern has a head kind (match-all,
label, never, getattr) and children; node arguments are node indices (>= 0) or
literals encoded -(code + 2).
"""

from __future__ import annotations

from pyfuse import _core

MATCH_ALL, LABEL, NEVER, GETATTR = 0, 1, 2, 3


def automaton(subs, top, num_labels=3, module_labels=(1,)):
    """subs: list of (head, label, children) in children-first order."""
    head = [s[0] for s in subs]
    label = [s[1] for s in subs]
    check = [int(bool(s[2])) for s in subs]
    child, off = [], [0]
    for s in subs:
        child += s[2]
        off.append(len(child))
    is_mod = [int(lab in module_labels) for lab in range(num_labels)]
    return _core.Automaton(head, label, check, off, child, top, is_mod, num_labels)


def graph(nodes):
    """nodes: list of (label, users, args)."""
    off = [0]
    args = []
    for _, _, a in nodes:
        args += a
        off.append(len(args))
    return _core.FlatGraph([n[0] for n in nodes], [n[1] for n in nodes], off, args)
