"""Prepare: each match turned into a fusion record, nothing mutated yet.

For every match, the backend's root-node getter and extra-input getter are
called and the matched modules looked up (the reference's ``get_modules``), and
the fuser method for their types is found (pyfuse's equivalent where it has one,
:func:`pyfuse.fx.fusers.fast_fuser`). A failure here leaves the model as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx import Node

from ..engine.flatten import Flat
from ..engine.matching import Match
from ..errors import ErasedInput
from .fusers import fast_fuser, new_relu
from .plan import Plan

__all__ = ["Fusion", "Modules", "prepare"]


def _default_root_node(node_pattern: Any) -> Node:
    while not isinstance(node_pattern[-1], Node):
        node_pattern = node_pattern[-1]
    root: Node = node_pattern[-1]
    return root


class Modules:
    """Module lookup by dotted path through ``_modules``, with fused overrides."""

    def __init__(self, root: torch.nn.Module) -> None:
        self.root = root
        self._cache: dict[str, torch.nn.Module | None] = {"": root}

    def get(self, path: str) -> torch.nn.Module | None:
        found = self._cache.get(path, self)
        if found is not self:
            return found  # type: ignore[return-value]
        parent_path, _, name = path.rpartition(".")
        parent = self.get(parent_path)
        mod = None if parent is None else parent._modules.get(name)
        self._cache[path] = mod
        return mod

    def __getitem__(self, path: str) -> torch.nn.Module:
        mod = self.get(path)
        if mod is None:
            raise KeyError(path)
        return mod


@dataclass(slots=True)
class Fusion:
    """One match, prepared: the arguments of its fuser method, and its result."""

    match: Match
    root_node: Node
    root_module: torch.nn.Module  # (the module root_node calls)
    extra_inputs: list[Any]
    modules: Any  # the reference's get_modules(matched_node_pattern)
    fuser: Callable[..., Any]
    # The root node getter returned a node the match does not claim (a MatchAllNode
    # position): the reference keeps that node and calls the fused module again at
    # the match's last node.
    unclaimed_root: bool = False
    # The fused node would read a node that is not there (raised after the fuser
    # method is called, where the reference's copy of the node fails).
    erased_input: ErasedInput | None = None
    fused: torch.nn.Module | None = None


def _convert_node(p: Node, modules: Modules, root_module: torch.nn.Module) -> Any:
    """The reference's ``get_modules`` for one node: its module, a fresh ReLU for
    F.relu, the target of other calls, MatchAllNode for anything else."""
    if p.op == "call_module":
        return modules[str(p.target)]
    if p.op == "call_function" and p.target is torch.nn.functional.relu:
        return new_relu(root_module.training)
    if p.op in ("call_function", "call_method"):
        return p.target
    from torch.ao.quantization.utils import MatchAllNode

    return MatchAllNode


def _matched_modules(
    node_pattern: Any, modules: Modules, root_module: torch.nn.Module
) -> Any:
    """The reference's ``get_modules`` over a whole matched node pattern."""

    def convert(p: Any) -> Any:
        if isinstance(p, (tuple, list)):
            if not p:
                # (a sub-pattern whose head node the match had already recorded;
                # the reference unpacks `n, *args = pattern` and fails here)
                raise ValueError(
                    "not enough values to unpack (expected at least 1, got 0)"
                )
            return tuple(convert(x) for x in p)
        if not isinstance(p, Node):
            return p
        return _convert_node(p, modules, root_module)

    return convert(node_pattern)


def _plain_modules(
    match: Match, flat: Flat, modules: Modules, root_module: torch.nn.Module
) -> Any:
    """`_matched_modules` of a plain match, built from the flattened module table."""
    table = flat.modules
    values = [table[i] for i in match.ids]
    if None in values:  # function and method positions
        for k, node in enumerate(match.claimed):
            if values[k] is None:
                values[k] = _convert_node(node, modules, root_module)
    assert match.shape is not None
    return tuple(match.shape[1](values)[0])


def _matched_types(mods: Any) -> Any:
    from torch.nn.utils.parametrize import type_before_parametrizations

    if isinstance(mods, tuple):
        return tuple(_matched_types(m) for m in mods)
    if isinstance(mods, torch.nn.Module):
        return type_before_parametrizations(mods)
    return mods


def _valid_keys(types: Any) -> Iterable[Any]:
    """Type patterns a fuser may be registered under, MatchAllNode variants too,
    in the order the reference's ``get_fuser_method_new`` tries them."""
    from itertools import product

    from torch.ao.quantization.utils import MatchAllNode

    if isinstance(types, (tuple, list)):
        return product(*(_valid_keys(t) for t in types))
    return (types, MatchAllNode)


def _fuser_for(plan: Plan, types: Any, is_qat: bool) -> Callable[..., Any]:
    """The backend's fuser method for matched `types` (or pyfuse's equivalent)."""
    cache = plan.fuser_cache
    try:
        return cache[types, is_qat]
    except (KeyError, TypeError):
        pass
    for key in _valid_keys(types):
        f = plan.fuser_methods.get(key)
        if f is not None:
            found = fast_fuser(plan.configs.get(key), is_qat) or f
            with contextlib.suppress(TypeError):  # unhashable matched entries
                cache[types, is_qat] = found
            return found
    # The reference raises AssertionError here.
    raise AssertionError(f"did not find fuser method for: {types} ")


def prepare(
    plan: Plan, match: Match, flat: Flat, modules: Modules, is_qat: bool
) -> Fusion:
    """The fusion record of `match`: root node and module, extra inputs, the
    matched modules and the fuser method for them. Raises what the reference
    raises for the match (getter errors, no fuser method); mutates nothing."""
    pattern = match.pattern
    getter = plan.root_getters.get(pattern)
    if getter is None and match.plain:
        # The default getter takes the last node of the nested record, which is
        # the last one the walk reached.
        root_node = match.claimed[-1]
        root_module = flat.modules[match.ids[-1]]
    else:
        root_node = (getter or _default_root_node)(match.node_pattern)
        root_module = None
    extra_getter = plan.extra_getters.get(pattern)
    extra = list(extra_getter(match.node_pattern)) if extra_getter is not None else []
    if root_node.op != "call_module":
        raise AssertionError("Expecting module node to be a call_module Node")
    if root_module is None:
        root_module = modules[str(root_node.target)]
    if not match.plain:
        mods = _matched_modules(match.node_pattern, modules, root_module)
        found = _fuser_for(plan, _matched_types(mods), is_qat)
        return Fusion(
            match,
            root_node,
            root_module,
            extra,
            mods,
            found,
            root_node not in match.claimed,
        )
    # A plain match's module types are the pattern's own: one fuser lookup per pattern.
    mods = _plain_modules(match, flat, modules, root_module)
    key = (match.pattern_index, is_qat)
    fuser = plan.plain_fusers.get(key)
    if fuser is None:
        fuser = plan.plain_fusers[key] = _fuser_for(plan, _matched_types(mods), is_qat)
    unclaimed = getter is not None and root_node not in match.claimed
    return Fusion(match, root_node, root_module, extra, mods, fuser, unclaimed)
