"""The plan: what a backend config means for the pass, built once and cached.

A plan holds the config's patterns in the reference's priority order compiled
into the automaton, and the fuser methods, root-node getters and extra-input
getters the reference would look up per match. :func:`configs` handles the
config arguments (and their deprecated dict forms) exactly as the reference does.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..engine.patterns import (
    USER_CACHE_SIZE,
    CompiledPatterns,
    compile_patterns,
    sort_patterns,
)
from .fusers import sequence_class

__all__ = [
    "Plan",
    "configs",
    "fuse_custom_config_of",
    "make_plan",
    "native_plan",
    "plan_for",
]


@dataclass(frozen=True)
class Plan:
    """Everything a pass needs from a backend config, built once per config."""

    compiled: CompiledPatterns
    fuser_methods: dict[Any, Callable[..., Any]]
    configs: dict[Any, Any]
    root_getters: dict[Any, Callable[..., Any]]
    extra_getters: dict[Any, Callable[..., Any]]
    fuser_cache: dict[Any, Callable[..., Any]] = field(default_factory=dict)
    plain_fusers: dict[tuple[int, bool], Callable[..., Any]] = field(
        default_factory=dict
    )


def make_plan(backend_config: Any) -> Plan:
    """The plan of a BackendConfig (uncached: see :func:`plan_for`)."""
    from torch.ao.quantization.backend_config.utils import (
        get_fuser_method_mapping,
        get_fusion_pattern_to_extra_inputs_getter,
        get_fusion_pattern_to_root_node_getter,
    )

    by_pattern = {
        p: c
        for p, c in backend_config._pattern_complex_format_to_config.items()
        if c.fuser_method is not None
    }
    return Plan(
        compile_patterns(sort_patterns(list(by_pattern))),
        get_fuser_method_mapping(backend_config),
        by_pattern,
        get_fusion_pattern_to_root_node_getter(backend_config),
        get_fusion_pattern_to_extra_inputs_getter(backend_config),
    )


@functools.cache  # (no argument: torch's one native config)
def native_plan() -> Plan:
    """The plan of torch's native backend config (the default), built once."""
    from torch.ao.quantization.backend_config import get_native_backend_config

    return make_plan(get_native_backend_config())


def plan_for(backend_config: Any) -> Plan:
    """The cached plan of `backend_config` (None: the native one).

    Cached by content, so an equal config built again reuses the plan.
    """
    if backend_config is None:
        return native_plan()
    return _cached_plan(_ByContent(backend_config))


_WRAPPED = object()  # (marks a wrapper closure's class in a plan's key)


def _fuser_key(method: Any) -> Any:
    """`method` as a plan's key compares it: by identity, but for torch's wrapper
    closures, which ``get_native_backend_config()`` makes afresh on every call
    (two that wrap the same class fuse alike)."""
    cls = sequence_class(method)
    return method if cls is None else (_WRAPPED, cls)


class _ByContent:
    """A backend config compared by what a plan reads from it: its patterns and
    their fuser methods and getters."""

    __slots__ = ("config", "key")

    def __init__(self, config: Any) -> None:
        self.config = config
        self.key = tuple(
            (p, _fuser_key(c.fuser_method), c._root_node_getter, c._extra_inputs_getter)
            for p, c in config._pattern_complex_format_to_config.items()
        )

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByContent) and self.key == other.key


@functools.lru_cache(maxsize=USER_CACHE_SIZE)
def _cached_plan(config: _ByContent) -> Plan:
    return make_plan(config.config)


def fuse_custom_config_of(fuse_custom_config: Any, stacklevel: int) -> Any:
    """A FuseCustomConfig from None, itself or its (deprecated) dict form."""
    from torch.ao.quantization.fx.custom_config import FuseCustomConfig

    if fuse_custom_config is None:
        return FuseCustomConfig()
    if isinstance(fuse_custom_config, dict):
        warnings.warn(
            "Passing a fuse_custom_config_dict to fuse is deprecated and will not be "
            "supported in a future version. Please pass in a FuseCustomConfig instead.",
            FutureWarning,
            stacklevel=stacklevel + 1,
        )
        return FuseCustomConfig.from_dict(fuse_custom_config)
    return fuse_custom_config


def configs(fuse_custom_config: Any, backend_config: Any) -> tuple[Any, Any]:
    """The reference's handling of the config arguments, warnings included."""
    from torch.ao.quantization.backend_config import BackendConfig

    fuse_custom_config = fuse_custom_config_of(fuse_custom_config, stacklevel=3)
    if isinstance(backend_config, dict):
        warnings.warn(
            "Passing a backend_config_dict to prepare is deprecated and will not be "
            "supported in a future version. Please pass in a BackendConfig instead.",
            FutureWarning,
            stacklevel=3,
        )
        backend_config = BackendConfig.from_dict(backend_config)
    return fuse_custom_config, backend_config
