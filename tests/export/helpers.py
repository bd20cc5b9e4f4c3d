"""Shared checks of the export-flow tests: torchao's folds called quietly, and the
full contract between two folded GraphModules."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.fx import GraphModule
from torch.utils._pytree import tree_leaves

META_KEYS = ("nn_module_stack", "stack_trace", "source_fn_stack", "torch_fn")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """torchao warns (3-D linear inputs) and prints when loading: keep tests quiet."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def torchao_folds() -> tuple[
    Callable[[GraphModule], None], Callable[[GraphModule], None]
]:
    """torchao's own pt2e folds, pinned (never the patched bindings)."""
    with quiet():
        from torchao.quantization.pt2e import utils
    return utils._fuse_conv_bn_, utils._fuse_linear_bn_


def outputs(gm: torch.nn.Module, inputs: Sequence[Any]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [t for t in tree_leaves(gm(*inputs)) if isinstance(t, torch.Tensor)]


def _val_sig(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return ("tensor", tuple(v.shape), v.dtype, v.requires_grad)
    if isinstance(v, list | tuple):
        return tuple(_val_sig(x) for x in v)
    return repr(v)


def assert_same_fold(ref: GraphModule, got: GraphModule, inputs: Sequence[Any]) -> None:
    """`got` is `ref` on every contract point: code, nodes and their meta, the
    parameters and buffers (names, order, types, dtypes, requires_grad, bits),
    and outputs (torch.equal)."""
    assert got.code == ref.code
    rn, gn = list(ref.graph.nodes), list(got.graph.nodes)
    assert [n.name for n in gn] == [n.name for n in rn]
    for a, b in zip(rn, gn, strict=True):
        assert (b.op, b.target) == (a.op, a.target), b.name
        assert sorted(b.meta) == sorted(a.meta), b.name
        for k in META_KEYS:
            assert b.meta.get(k) == a.meta.get(k), (b.name, k)
        assert _val_sig(b.meta.get("val")) == _val_sig(a.meta.get("val")), b.name
    rs, gs = ref.state_dict(keep_vars=True), got.state_dict(keep_vars=True)
    assert list(gs) == list(rs)
    for k, a in rs.items():
        b = gs[k]
        assert type(b) is type(a), k
        assert b.dtype == a.dtype, k
        assert b.requires_grad == a.requires_grad, k
        assert torch.equal(b, a), k
    assert [n for n, _ in got.named_parameters()] == [
        n for n, _ in ref.named_parameters()
    ]
    for a, b in zip(outputs(ref, inputs), outputs(got, inputs), strict=True):
        assert torch.equal(a, b)


def max_rel_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Largest |a - b| over the outputs, relative to the outputs' scale."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        x64, y64 = x.double(), y.double()
        scale = 1.0 + float(y64.abs().max()) if y64.numel() else 1.0
        if x64.numel():
            worst = max(worst, float((x64 - y64).abs().max()) / scale)
    return worst


def tolerance(dtype: torch.dtype) -> float:
    """How far a correct fold may move the outputs (relative), per dtype."""
    return {torch.float64: 1e-10, torch.bfloat16: 6e-2, torch.float16: 1e-2}.get(
        dtype, 2e-5
    )
