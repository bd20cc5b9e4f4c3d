"""The benchmark workloads (``pyfuse bench``), fused by pyfuse eager and lazy, are
torch's result under the full exactness contract (code, module tree, bit-identical
state, outputs): the claim README's benchmark table rests on. The benchmark smoke run
itself only checks fusion and node counts and the code."""

from __future__ import annotations

import pytest
import torch

import pyfuse
from pyfuse.bench import workloads as W
from tests.support.contract import assert_same_fusion, reference_fuse, single_thread

X = (torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0)),)


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
@pytest.mark.parametrize("qat", [False, True], ids=["eval", "qat"])
@pytest.mark.parametrize("kind", ["resnet", "mixed", "onednn"])
def test_workload_fuses_exactly_as_the_reference(kind, qat, lazy):
    wl = W.make_workload(kind, 3, qat=qat)
    with single_thread():
        ref = reference_fuse(wl.fresh(), qat, None, wl.backend_config())
        out = pyfuse.fuse(wl.fresh(), qat, None, wl.backend_config(), lazy=lazy)
    assert W.node_count(out) == wl.expected_nodes_after
    if lazy:
        out.real_recompile()  # its first use (tests/fx/test_lazy.py checks before it)
    assert_same_fusion(ref, out, X)
