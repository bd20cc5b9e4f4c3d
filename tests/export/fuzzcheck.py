"""One fuzz case: export a random model, fold it with torchao and with pyfuse, and
judge the outcome by the oracle of ``fuzzmodels.expected``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

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


def check(spec: Spec, stats: Counter[str] | None = None) -> None:
    """Fold `spec`'s model both ways; raise AssertionError on any outcome the
    oracle does not allow."""
    model = FuzzNet(spec)
    x = example_input(spec)
    ep = torch.export.export(model, (x,))
    make = _maker(ep, spec.native)
    exp = expected(spec)
    unfolded = h.outputs(make(), (x,))
    ours = make()
    reports = [pt2e.fuse_conv_bn_(ours), pt2e.fuse_linear_bn_(ours)]
    fused = [f for r in reports for f in r.fused]
    skipped = [s for r in reports for s in r.skipped]
    assert len(fused) == len(exp.folds), (fused, exp)
    assert len(skipped) == exp.bn_steps - len(exp.folds), (skipped, exp)
    left = sum(n.target in _NORMS for n in ours.graph.nodes)
    assert left == exp.bn_steps - len(exp.folds)
    tol = h.tolerance(spec.dtype)
    ours_out = h.outputs(ours, (x,))
    assert h.max_rel_diff(ours_out, unfolded) <= tol
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
        h.assert_same_fold(ref, ours, (x,))
        outcome = "identical"
    else:
        if raised is None and spec.dtype in (torch.float32, torch.float64):
            # the documented defect shows: torchao's output is not the model's
            assert h.max_rel_diff(h.outputs(ref, (x,)), unfolded) > 10 * tol
        outcome = "torchao_raised" if raised is not None else "torchao_wrong"
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
