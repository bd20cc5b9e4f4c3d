"""``Trap``: a backend config whose fuser methods and getters misbehave on their k-th
call (raise, return a non-module, return a root node the fused node cannot be), to
test what a failure part-way leaves behind."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
from torch import nn
from torch.ao.quantization.backend_config import (
    BackendConfig,
    BackendPatternConfig,
)
from torch.ao.quantization.utils import MatchAllNode


class Boom(Exception):
    """Raised by an instrumented fuser method or getter."""


def default_root(node_pattern):
    while not isinstance(node_pattern[-1], torch.fx.Node):
        node_pattern = node_pattern[-1]
    return node_pattern[-1]


def nodes_in(node_pattern) -> list[torch.fx.Node]:
    if isinstance(node_pattern, (tuple, list)):
        return [n for p in node_pattern for n in nodes_in(p)]
    return [node_pattern] if isinstance(node_pattern, torch.fx.Node) else []


def module_node_after(last: torch.fx.Node) -> torch.fx.Node | None:
    """The first call_module node computed from `last`: a root node the fused node,
    put in `last`'s place, cannot be (it would read `last` or a node after it). The
    reference fails looking that node up (KeyError); pyfuse checks it first."""
    reached = {last}
    for n in last.graph.nodes:
        if n in reached or not any(a in reached for a in n.all_input_nodes):
            continue
        if n.op == "call_module":
            return n
        reached.add(n)
    return None


def matched_modules(pattern, mods) -> list[nn.Module]:
    """The modules a fuser method got for ``pattern`` (same nesting), except those at
    MatchAllNode positions, which are not part of the match."""
    if isinstance(pattern, tuple):
        return [
            m for p, x in zip(pattern, mods, strict=True) for m in matched_modules(p, x)
        ]
    if pattern is MatchAllNode or not isinstance(mods, nn.Module):
        return []
    return [mods]


class Trap:
    """Instruments a backend config: counts fuser / root-getter / extra-getter calls
    and misbehaves on call number ``at`` of ``kind``:

    - ``raise``: the fuser method raises Boom
    - ``root_raise`` / ``extra_raise``: the root-node / extra-inputs getter raises Boom
    - ``return_int``: the fuser method returns 42
    - ``root_outside``: the root-node getter returns a call_module node computed from
      the match's last node
    """

    def __init__(self, kind: str = "", at: int = 0):
        self.kind, self.at = kind, at
        self.fuser_calls: list[tuple[Any, ...]] = []
        self.root_calls: list[Any] = []
        self.extra_calls: list[Any] = []

    def fuser(self, orig, pattern):
        def fuser_method(is_qat, *mods):
            self.fuser_calls.append((pattern, mods))
            if len(self.fuser_calls) == self.at:
                if self.kind == "raise":
                    raise Boom(f"fuser call {self.at}")
                if self.kind == "return_int":
                    return 42
            return orig(is_qat, *mods)

        return fuser_method

    def root(self, orig):
        def root_node_getter(node_pattern):
            self.root_calls.append(node_pattern)
            if len(self.root_calls) == self.at:
                if self.kind == "root_raise":
                    raise Boom(f"root getter call {self.at}")
                if self.kind == "root_outside":
                    return module_node_after(nodes_in(node_pattern)[0])
            return orig(node_pattern)

        return root_node_getter

    def extra(self, orig):
        def extra_inputs_getter(node_pattern):
            self.extra_calls.append(node_pattern)
            if len(self.extra_calls) == self.at and self.kind == "extra_raise":
                raise Boom(f"extra inputs getter call {self.at}")
            return orig(node_pattern) if orig is not None else []

        return extra_inputs_getter

    def config(self, base: BackendConfig) -> BackendConfig:
        """``base``'s fusion patterns, same fuser methods and fused modules, wrapped."""
        out = BackendConfig(f"trap_{self.kind}_{self.at}")
        for c in base.configs:
            if c.fuser_method is None:
                continue
            if c._pattern_complex_format is not None:
                p = BackendPatternConfig()
                p._set_pattern_complex_format(c._pattern_complex_format)
            else:
                p = BackendPatternConfig(c.pattern)
            # the fuser gets modules nested like the complex-format pattern, or flat in
            # forward order like the simple-format one
            p.set_fuser_method(
                self.fuser(c.fuser_method, c._pattern_complex_format or c.pattern)
            )
            if c.fused_module is not None:
                p.set_fused_module(c.fused_module)
            p._set_root_node_getter(self.root(c._root_node_getter or default_root))
            p._set_extra_inputs_getter(self.extra(c._extra_inputs_getter))
            out.set_backend_pattern_config(p)
        return out
