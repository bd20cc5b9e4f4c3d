"""Reference vs pyfuse, side by side, per workload and size (see conftest.py).

Groups: ``fuse-resnet-<nodes>``, ``fuse-mixed-<nodes>``, ``fuse-onednn-<nodes>``
(reference, pyfuse eager, pyfuse lazy) and ``match-<nodes>`` (flatten + match:
the reference's ``_find_matches`` vs ``pyfuse.engine.matching.find_matches``).

Every benchmark checks its last output: the fusion count and node count are the
expected ones, and pyfuse's ``.code`` equals the reference's on the same workload.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest

from pyfuse.bench import workloads as W
from tests.support.contract import same_matches, sorted_fusion_handlers

IMPLS = ["reference", "pyfuse", "pyfuse-lazy"]


def _bench_fuse(
    benchmark: Any,
    request: pytest.FixtureRequest,
    kind: str,
    n_blocks: int,
    impl: str,
    rounds: int,
    qat: bool,
) -> None:
    wl = W.make_workload(kind, n_blocks, qat=qat)
    benchmark.group = f"fuse-{kind}-{wl.nodes}"
    benchmark.extra_info.update(nodes=wl.nodes, fusions=wl.expected_fusions, is_qat=qat)
    cfg = wl.backend_config()
    if impl == "reference":
        fuse: Callable[..., Any] = request.getfixturevalue("reference_fuse")
        kwargs: dict[str, Any] = {}
    else:
        fuse = request.getfixturevalue("pyfuse_fuse")
        kwargs = {"lazy": True} if impl == "pyfuse-lazy" else {}

    snapshots: list[dict[str, Any]] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        gm = wl.fresh()
        snapshots[:] = [W.module_snapshot(gm)]
        gc.collect()
        return (gm,), {}

    def target(gm: Any) -> Any:
        return fuse(gm, wl.is_qat, None, cfg, **kwargs)

    out = benchmark.pedantic(
        target, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0
    )

    assert W.count_fusions(out, snapshots[0]) == wl.expected_fusions
    assert W.node_count(out) == wl.expected_nodes_after
    codes: dict[tuple[str, int, bool], str] = request.getfixturevalue("reference_codes")
    if impl == "reference":
        codes[(wl.kind, wl.n_blocks, wl.is_qat)] = out.code
    else:
        get_code: Callable[[W.Workload], str] = request.getfixturevalue(
            "reference_code"
        )
        assert out.code == get_code(wl)
        if impl == "pyfuse-lazy":
            out.recompile()  # real codegen now; must still agree
            assert out.code == get_code(wl)


@pytest.mark.parametrize("impl", IMPLS)
def test_fuse_resnet(benchmark, request, resnet_blocks, impl, rounds, qat):
    _bench_fuse(benchmark, request, "resnet", resnet_blocks, impl, rounds, qat)


@pytest.mark.parametrize("impl", IMPLS)
def test_fuse_mixed(benchmark, request, mixed_blocks, impl, rounds, qat):
    _bench_fuse(benchmark, request, "mixed", mixed_blocks, impl, rounds, qat)


@pytest.mark.parametrize("impl", IMPLS)
def test_fuse_onednn(benchmark, request, onednn_blocks, impl, rounds, qat):
    _bench_fuse(benchmark, request, "onednn", onednn_blocks, impl, rounds, qat)


_MATCH_CACHE: dict[int, tuple[Any, dict[Any, Any], dict[str, Any]]] = {}


def _match_input(n_blocks: int) -> tuple[Any, dict[Any, Any], dict[str, Any]]:
    """(input, sorted handlers, reference result) per size, built once: matching
    does not modify its input, so all rounds and both sides share it."""
    from torch.ao.quantization.fx.fuse import _find_matches

    if n_blocks not in _MATCH_CACHE:
        _MATCH_CACHE.clear()
        wl = W.make_workload("resnet", n_blocks)
        gm = wl.fresh()
        handlers = sorted_fusion_handlers(wl.backend_config())
        _MATCH_CACHE[n_blocks] = (gm, handlers, _find_matches(gm, gm.graph, handlers))
    return _MATCH_CACHE[n_blocks]


@pytest.mark.parametrize("impl", ["reference", "pyfuse"])
def test_match(benchmark, match_blocks, impl, rounds):
    gm, handlers, expected = _match_input(match_blocks)
    n_nodes = W.node_count(gm)
    benchmark.group = f"match-{n_nodes}"
    benchmark.extra_info.update(nodes=n_nodes)
    if impl == "reference":
        from torch.ao.quantization.fx.fuse import _find_matches

        def target() -> Any:
            return _find_matches(gm, gm.graph, handlers)

    else:
        from pyfuse.engine.matching import find_matches

        patterns = list(handlers)

        def target() -> Any:
            return find_matches(gm, gm.graph, patterns)

    def setup() -> None:
        gc.collect()

    result = benchmark.pedantic(
        target, setup=setup, rounds=rounds, iterations=1, warmup_rounds=1
    )
    assert len({v[0] for v in result.values()}) == 2 * match_blocks
    assert same_matches(expected, result)
