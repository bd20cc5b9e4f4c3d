"""One fuzz case: export a random model, fold it with torchao and with pyfuse, and
judge the outcome by the oracle of ``fuzzmodels.expected``."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.fx import GraphModule

from pyfuse import pt2e
from tests.export import helpers as h
from tests.export.fuzzmodels import FuzzNet, Spec, example_input, expected, to_native

aten = torch.ops.aten
_NORMS = (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default)


def _maker(ep: torch.export.ExportedProgram, native: bool) -> Callable[[], GraphModule]:
    def make() -> GraphModule:
        gm = ep.module()
        for name, buf in list(gm.named_buffers()):  # training BNs update them in place
            owner, _, field = name.rpartition(".")
            gm.get_submodule(owner)._buffers[field] = buf.clone()
        return to_native(gm) if native else gm

    return make


def _in_eval(gm: GraphModule, names: set[str]) -> GraphModule:
    """`gm` with the training-mode BatchNorms named `names` in eval mode."""
    for n in gm.graph.nodes:
        if n.name in names and n.target is aten.batch_norm.default:
            n.args = (*n.args[:5], False, *n.args[6:])
    gm.recompile()
    return gm


def _fold(
    spec: Spec,
) -> tuple[GraphModule, list[Any], list[Any], torch.Tensor, Callable[[], GraphModule]]:
    """Export `spec`'s model and fold it with pyfuse: (folded, fused, skipped, input,
    a maker of fresh unfolded copies, with the BatchNorms folded from training
    mode in eval mode: what the fold must equal)."""
    model = FuzzNet(spec)
    x = example_input(spec)
    make = _maker(torch.export.export(model, (x,)), spec.native)
    ours = make()
    reports = [pt2e.fuse_conv_bn_(ours), pt2e.fuse_linear_bn_(ours)]
    fused = [f for r in reports for f in r.fused]
    trained = {f.nodes[1] for f in fused if f.fused_type != "folded"}
    return (
        ours,
        fused,
        [s for r in reports for s in r.skipped],
        x,
        lambda: _in_eval(make(), trained),
    )


def check(spec: Spec, stats: Counter[str] | None = None) -> None:
    """Fold `spec`'s model both ways; raise AssertionError on any outcome the
    oracle does not allow."""
    exp = expected(spec, fold_training=True)
    ours, fused, skipped, x, make = _fold(spec)
    assert len(fused) == len(exp.folds), (fused, exp)
    assert len(skipped) == exp.bn_steps - len(exp.folds), (skipped, exp)
    left = sum(n.target in _NORMS for n in ours.graph.nodes)
    assert left == exp.bn_steps - len(exp.folds)
    tol = h.tolerance(spec.dtype)
    unfolded = h.outputs(make(), (x,))
    conv_ao, linear_ao = h.torchao_folds()
    ref = make()
    raised: Exception | None = None
    try:
        with h.quiet():
            conv_ao(ref)
            linear_ao(ref)
    except Exception as e:  # noqa: BLE001 (torchao's documented crashes)
        raised = e
    if exp.torchao_right:
        assert raised is None, raised
        h.assert_same_fold(ref, ours, (x,))  # (before any other run of `ours`)
        outcome = "identical"
    elif raised is not None:
        outcome = "torchao_raised"
    elif spec.dtype is torch.bfloat16:
        outcome = "torchao_defect_bf16"
    elif h.max_rel_diff(h.outputs(ref, (x,)), unfolded) > 10 * tol:
        outcome = "torchao_wrong"  # the documented defect shows in the outputs
    else:
        # the defect is in torchao's graph, but this model hides it (a ReLU after a
        # BatchNorm zeroing a whole layer for every sample, say)
        outcome = "torchao_defect_masked"
    direct = (
        spec.dtype is not torch.bfloat16
        and h.max_rel_diff(h.outputs(ours, (x,)), unfolded) <= tol
    )
    if not direct and spec.dtype is not torch.float64:
        # Rounding (bf16's always, float32's when a later batch-statistics
        # BatchNorm amplifies it) is no verdict on the fold: the same edit must
        # be exact on the float64 twin of the model.
        twin, _, _, tx, tmake = _fold(dataclasses.replace(spec, dtype=torch.float64))
        assert twin.code == ours.code
        assert h.max_rel_diff(
            h.outputs(twin, (tx,)), h.outputs(tmake(), (tx,))
        ) <= h.tolerance(torch.float64)
        if stats is not None:
            stats["judged_on_float64_twin"] += 1
    else:
        assert direct
    if stats is not None:
        stats["cases"] += 1
        stats[outcome] += 1
        stats["folds"] += len(fused)
        stats["skips"] += len(skipped)
        stats[f"dim{spec.dim}"] += 1
        stats[str(spec.dtype).removeprefix("torch.")] += 1
        stats["native_form"] += spec.native
        for d in exp.torchao_defects:
            stats["defect: " + d] += 1
