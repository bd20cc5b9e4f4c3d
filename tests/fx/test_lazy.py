"""``pyfuse.fuse(..., lazy=True)`` (README Usage): the same result as the eager pass,
with the code generated on first use.

Before first use, everything that needs no code (graph nodes, module tree and types,
hyper-parameters, training flags, parameters with requires_grad, buffers, state_dict
bit for bit) equals the eager output's and no code has been generated; the first use
(a forward) gives the eager output's result bit for bit; after it, the full exactness
contract holds against the eager output and against torch's pass.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.fx._lazy_graph_module import _LazyGraphModule
from torch.utils._pytree import tree_flatten

import pyfuse
from tests.support.contract import (
    FORWARD_SEED,
    assert_same_fusion,
    reference_fuse,
    single_thread,
)
from tests.support.corpus import BACKENDS, MODELS_BY_NAME

CASES = [
    ("resnet18", "native", "eval"),
    ("resnet18", "native", "qat"),
    ("mobilenet_v2", "fbgemm", "eval"),
    ("onednn_residual", "onednn", "eval"),
    ("decoder_transpose", "qnnpack", "eval"),
    ("multi_user", "native", "qat"),
]


def _traced(name: str, mode: str) -> torch.fx.GraphModule:
    model = MODELS_BY_NAME[name].factory()
    return torch.fx.symbolic_trace(model.train(mode == "qat"))


def _no_code_view(gm: torch.fx.GraphModule) -> dict:
    """What a GraphModule shows without generating code."""
    return {
        "nodes": [
            (n.name, n.op, str(n.target), str(n.args), str(n.kwargs))
            for n in gm.graph.nodes
        ],
        "modules": [
            (n, type(m).__qualname__, m.training, m.extra_repr())
            for n, m in gm.named_modules(remove_duplicate=False)
            if n
        ],
        "params": [(n, p.requires_grad, type(p)) for n, p in gm.named_parameters()],
        "buffers": [n for n, _ in gm.named_buffers()],
        "state_keys": list(gm.state_dict()),
    }


def _forward(gm, inputs):
    """A forward of ``gm`` itself (its first use, if lazy), leaving its state as it was
    (train-mode BN updates its running statistics)."""
    state = {k: v.clone() for k, v in gm.state_dict().items()}
    torch.manual_seed(FORWARD_SEED)
    with torch.no_grad(), single_thread():
        out = gm(*copy.deepcopy(inputs))
    gm.load_state_dict(state)
    return out


@pytest.mark.parametrize(("name", "backend", "mode"), CASES)
def test_lazy_is_the_eager_result_before_and_after_first_use(name, backend, mode):
    is_qat = mode == "qat"
    inputs = MODELS_BY_NAME[name].example_inputs_factory()
    with single_thread():
        eager, eager_report = pyfuse.fuse(
            _traced(name, mode), is_qat, None, BACKENDS[backend](), return_report=True
        )
        lazy, lazy_report = pyfuse.fuse(
            _traced(name, mode),
            is_qat,
            None,
            BACKENDS[backend](),
            lazy=True,
            return_report=True,
        )
    assert lazy_report == eager_report
    assert eager_report.fused, "the case must fuse something"
    assert not isinstance(eager, _LazyGraphModule)

    # before first use: no code yet, everything else the eager output's
    assert isinstance(lazy, _LazyGraphModule)
    assert lazy._needs_recompile(), "code was generated before first use"
    assert _no_code_view(lazy) == _no_code_view(eager)
    eager_sd, lazy_sd = eager.state_dict(), lazy.state_dict()
    for k, v in eager_sd.items():
        assert v.dtype == lazy_sd[k].dtype, k
        assert torch.equal(v, lazy_sd[k]), k
    assert lazy._needs_recompile(), "inspecting the module generated code"

    # first use: a forward, bit for bit the eager output's
    want, got = _forward(eager, inputs), _forward(lazy, inputs)
    want_leaves, want_spec = tree_flatten(want)
    got_leaves, got_spec = tree_flatten(got)
    assert got_spec == want_spec
    for a, b in zip(want_leaves, got_leaves, strict=True):
        assert torch.equal(a, b)
    assert not lazy._needs_recompile(), "the first use generated the code"

    # after first use: the full contract against eager and against torch's pass
    assert lazy.code == eager.code
    assert_same_fusion(eager, lazy, inputs)
    with single_thread():
        ref = reference_fuse(_traced(name, mode), is_qat, None, BACKENDS[backend]())
    assert_same_fusion(ref, lazy, inputs)
