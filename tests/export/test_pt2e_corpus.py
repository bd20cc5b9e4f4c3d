"""Differential corpus: every test-corpus model, exported in eval mode, folded by
torchao's pt2e folds and by pyfuse.pt2e; the full contract where torchao is right,
the unfolded model where it is not."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pyfuse import pt2e
from tests.export.helpers import (
    assert_same_fold,
    max_rel_diff,
    outputs,
    quiet,
    tolerance,
    torchao_folds,
)
from tests.support.corpus import MODELS

# Models where torchao's fold changes the model's output or raises, and what pyfuse
# reports instead.
TORCHAO_WRONG = {
    # conv outputs also read by an add / returned: torchao folds them anyway
    "multi_user": {"conv output also read by add", "conv output also read by output"},
    # weight computed by a parametrization (not a get_attr): torchao raises ValueError
    "parametrized_conv_bn": {"conv weight is not a constant (mul)"},
}


def _export(
    name: str,
) -> tuple[torch.export.ExportedProgram, tuple[torch.Tensor, ...], torch.nn.Module]:
    cm = next(m for m in MODELS if m.name == name)
    model = cm.factory().eval()
    inputs = cm.example_inputs_factory()
    return torch.export.export(model, inputs), inputs, model


# Part of the quick suite (./dev pyvers, other Pythons and torch versions): 2-D, 3-D
# and 1-D convs, a transposed conv, linears, and a model torchao folds wrongly.
QUICK_MODELS = ("tiny_conv_bn_relu", "resnet18", "video3d", "mlp", "decoder_transpose")
QUICK_MODELS += ("audio1d", "multi_user")


def _names(quick: tuple[str, ...]) -> list[Any]:
    return [
        pytest.param(m.name, marks=[pytest.mark.quick] if m.name in quick else [])
        for m in MODELS
    ]


@pytest.mark.parametrize("name", _names(QUICK_MODELS))
def test_corpus_model(name: str) -> None:
    ep, inputs, model = _export(name)
    conv_ao, linear_ao = torchao_folds()
    ours = ep.module()
    report = pt2e.fuse_conv_bn_(ours)
    linear_report = pt2e.fuse_linear_bn_(ours)
    skipped = {s.reason for s in report.skipped + linear_report.skipped}
    ref = ep.module()
    if name not in TORCHAO_WRONG:
        with quiet():
            conv_ao(ref)
            linear_ao(ref)
        assert_same_fold(ref, ours, inputs)
        assert not skipped
        return
    assert skipped == TORCHAO_WRONG[name]
    unfolded = outputs(model, inputs)
    assert max_rel_diff(outputs(ours, inputs), unfolded) <= tolerance(torch.float32)
    try:
        with quiet():
            conv_ao(ref)
            linear_ao(ref)
    except ValueError:
        return  # torchao refuses the model
    assert max_rel_diff(outputs(ref, inputs), unfolded) > 1e-2  # torchao is wrong


def test_corpus_folds_something() -> None:
    """The corpus exercises the fold: most models hold foldable pairs."""
    folded = 0
    for cm in MODELS[:8]:
        ep, _, _ = _export(cm.name)
        gm = ep.module()
        folded += len(pt2e.fuse_conv_bn_(gm).fused) + len(
            pt2e.fuse_linear_bn_(gm).fused
        )
    assert folded >= 100
