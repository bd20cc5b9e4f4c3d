"""The package's one cache policy (CONTRIBUTING.md, "Caches"): what is derived from
user-given patterns or configs is cached by content and bounded; only caches of
our own closed sets of values stay unbounded."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.ao.quantization.backend_config.utils  # (set_backend_pattern_config needs it loaded)
from torch import nn
from torch.ao.nn import intrinsic as nni
from torch.ao.quantization.backend_config import (
    BackendConfig,
    BackendPatternConfig,
    get_native_backend_config,
)
from torch.ao.quantization.fuser_method_mappings import _sequential_wrapper2

import pyfuse
from pyfuse.engine import matching, patterns
from pyfuse.engine.patterns import USER_CACHE_SIZE, compile_patterns
from pyfuse.errors import PatternError
from pyfuse.fx import plan

PACKAGE = Path(__file__).resolve().parents[2] / "pyfuse"

#: every cache keyed by user input
USER_CACHES = [patterns._compiled, matching.plain_shapes, plan._cached_plan]


def _pattern_set(k: int) -> list[object]:
    """A pattern set of its own for each `k` (a method name nothing else uses)."""
    return [(nn.ReLU, nn.Conv2d), (nn.ReLU, f"method_{k}")]


def _config(fuser: object) -> BackendConfig:
    return BackendConfig("caches").set_backend_pattern_config(
        BackendPatternConfig((nn.Conv2d, nn.ReLU)).set_fuser_method(fuser)
    )


def _new_fuser() -> Callable[..., nn.Module]:
    """A fuser method of its own (a config's fusers are compared by identity)."""

    def fuse(*is_qat_and_modules: object) -> nn.Module:
        return nn.Sequential(*is_qat_and_modules[1:])

    return fuse


_FUSE = _new_fuser()


def test_an_equal_config_built_again_reuses_the_plan():
    first, again = _config(_FUSE), _config(_FUSE)
    assert first is not again
    assert plan.plan_for(again) is plan.plan_for(first)
    other = plan.plan_for(_config(_new_fuser()))
    assert other is not plan.plan_for(first)  # a different fuser: its own plan


def test_native_configs_built_again_share_one_plan():
    # get_native_backend_config() makes its wrapper closures afresh on every call
    first, again = get_native_backend_config(), get_native_backend_config()
    assert plan.plan_for(again) is plan.plan_for(first)


class _OtherConvReLU(nn.Sequential):
    """A fused class of its own, for a wrapper closure over another class."""


def test_wrapper_closures_share_a_plan_only_over_the_same_class():
    same = [_config(_sequential_wrapper2(nni.ConvReLU2d)) for _ in range(2)]
    other = _config(_sequential_wrapper2(_OtherConvReLU))
    assert plan.plan_for(same[1]) is plan.plan_for(same[0])
    assert plan.plan_for(other) is not plan.plan_for(same[0])
    traced = torch.fx.symbolic_trace(nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU()))
    assert (
        type(pyfuse.fuse(traced, False, None, same[0])._modules["0"]) is nni.ConvReLU2d
    )
    traced = torch.fx.symbolic_trace(nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU()))
    assert type(pyfuse.fuse(traced, False, None, other)._modules["0"]) is _OtherConvReLU


def test_equal_pattern_sets_share_one_automaton():
    assert compile_patterns(_pattern_set(0)) is compile_patterns(_pattern_set(0))
    assert compile_patterns(_pattern_set(0)) is not compile_patterns(_pattern_set(1))


def test_the_pattern_cache_keeps_the_bound_and_evicts_the_least_recent():
    first = compile_patterns(_pattern_set(-1))
    sets = [compile_patterns(_pattern_set(k)) for k in range(2 * USER_CACHE_SIZE)]
    assert patterns._compiled.cache_info().currsize == USER_CACHE_SIZE
    assert compile_patterns(_pattern_set(2 * USER_CACHE_SIZE - 1)) is sets[-1]
    assert compile_patterns(_pattern_set(-1)) is not first  # evicted, rebuilt


def test_the_plan_cache_keeps_the_bound():
    for _ in range(USER_CACHE_SIZE + 8):
        plan.plan_for(_config(_new_fuser()))
    assert plan._cached_plan.cache_info().currsize == USER_CACHE_SIZE


@pytest.mark.parametrize("cache", USER_CACHES, ids=lambda c: c.__qualname__)
def test_every_user_keyed_cache_is_bounded_by_the_policy(cache):
    assert cache.cache_info().maxsize == USER_CACHE_SIZE


def test_an_unhashable_pattern_is_a_pattern_error_naming_it():
    bad = (operator.add, nn.Conv2d, [1])
    with pytest.raises(PatternError) as info:
        compile_patterns([(nn.ReLU, nn.Conv2d), bad])
    assert repr(bad) in str(info.value)
    assert "not hashable" in str(info.value)


def _unbounded_caches() -> list[str]:
    """``file:line name`` of each ``functools.cache`` on a function taking
    arguments without a comment on the decorator's line saying why its keys are
    a closed set."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                text = ast.unparse(deco)
                takes_args = node.args.args or node.args.vararg or node.args.kwarg
                unbounded = text in ("functools.cache", "cache") and takes_args
                if unbounded and "#" not in lines[deco.lineno - 1]:
                    where = path.relative_to(PACKAGE.parent)
                    found.append(f"{where}:{deco.lineno} {node.name}")
    return found


def test_an_unbounded_cache_with_a_key_says_why_the_key_is_closed():
    assert not _unbounded_caches(), (
        "use functools.lru_cache(maxsize=USER_CACHE_SIZE) on a content key, or say "
        f"on the decorator's line why the keys are a closed set: {_unbounded_caches()}"
    )
    # (the check sees the one keyed cache the package has)
    assert (PACKAGE / "export" / "match.py").read_text().count(
        "@functools.cache  # (keyed by"
    ) == 1
