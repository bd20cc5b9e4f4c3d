"""T7 as a pytest-benchmark suite: reference vs pyfuse on the test corpus's real
architectures (group ``small-<model>-<mode>``); ``python -m bench.small_graphs`` prints
the summed table. Each run fuses a fresh trace (setup, untimed)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.small_graphs import REAL, traced


@pytest.mark.parametrize("mode", ["eval", "qat"])
@pytest.mark.parametrize("impl", ["reference", "pyfuse"])
@pytest.mark.parametrize("model", REAL)
def test_small_graph(benchmark: Any, request: pytest.FixtureRequest, model: str, impl: str, mode: str) -> None:
    qat = mode == "qat"
    fuse = request.getfixturevalue("reference_fuse" if impl == "reference" else "pyfuse_fuse")
    benchmark.group = f"small-{model}-{mode}"
    nodes_before: list[int] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        gm = traced(model, qat)
        nodes_before[:] = [len(gm.graph.nodes)]
        return (gm,), {}

    out = benchmark.pedantic(lambda gm: fuse(gm, qat), setup=setup, rounds=5, iterations=1)
    assert len(out.graph.nodes) < nodes_before[0]  # something was fused
