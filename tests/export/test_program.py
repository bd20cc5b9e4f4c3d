"""pyfuse's fold_batch_norm on ExportedPrograms: the corpus as exported and after
run_decompositions(), the defects kept, the input untouched, save/load, and the
fuzzer's random models."""

from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import Iterator

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hseed
from torch import nn
from torch.export import ExportedProgram

from pyfuse import pt2e
from pyfuse.export.program import fold_batch_norm, fold_program
from tests.export.fuzzmodels import FuzzNet, Spec, example_input, expected, specs
from tests.export.helpers import max_rel_diff, outputs, tolerance
from tests.support.corpus import MODELS

aten = torch.ops.aten
_NORMS = (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default)


def _decompose(ep: ExportedProgram) -> ExportedProgram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree notice
        return ep.run_decompositions()


def _fingerprint(ep: ExportedProgram) -> tuple[object, ...]:
    return (
        str(ep.graph),
        str(ep.graph_signature),
        [(k, id(v), v.clone()) for k, v in ep.state_dict.items()],
    )


def _same_fingerprint(a: tuple[object, ...], b: tuple[object, ...]) -> None:
    assert a[:2] == b[:2]
    for (k1, i1, t1), (k2, i2, t2) in zip(a[2], b[2], strict=True):  # type: ignore[call-overload]
        assert (k1, i1) == (k2, i2)
        assert torch.equal(t1, t2)


def _norm_nodes(ep: ExportedProgram) -> int:
    return sum(n.target in _NORMS for n in ep.graph.nodes)


def _check_program(
    ep: ExportedProgram, inputs: tuple[torch.Tensor, ...], model: nn.Module, folds: int
) -> ExportedProgram:
    before = _fingerprint(ep)
    folded, report = fold_program(ep)
    _same_fingerprint(before, _fingerprint(ep))  # the input program is untouched
    assert len(report.fused) == folds
    assert _norm_nodes(folded) == _norm_nodes(ep) - folds
    signature_targets = {s.target for s in folded.graph_signature.input_specs}
    for f in report.fused:
        assert set(f.modules) <= set(folded.state_dict)
    for key in ep.state_dict:
        if key not in folded.state_dict:  # only BatchNorm constants leave
            assert key.rsplit(".", 1)[-1] in (
                "weight",
                "bias",
                "running_mean",
                "running_var",
                "num_batches_tracked",
            )
            assert key not in signature_targets
    assert set(folded.state_dict) <= signature_targets
    expected_out = outputs(model, inputs)
    assert max_rel_diff(outputs(folded.module(), inputs), expected_out) <= 1e-5
    buf = io.BytesIO()
    torch.export.save(folded, buf)
    buf.seek(0)
    loaded = torch.export.load(buf)
    assert max_rel_diff(outputs(loaded.module(), inputs), expected_out) <= 1e-5
    return folded


# run_decompositions() takes half a minute on these; their blocks are the same as
# resnet18/50's and efficientnet's, which are decomposed
SLOW_TO_DECOMPOSE = ("resnet152", "densenet121", "deep_chain")


# (part of the quick suite: ./dev pyvers)
QUICK_PROGRAMS = ("tiny_conv_bn_relu", "resnet18", "mlp", "decoder_transpose")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            m.name, marks=[pytest.mark.quick] if m.name in QUICK_PROGRAMS else []
        )
        for m in MODELS
    ],
)
def test_corpus_program(name: str) -> None:
    cm = next(m for m in MODELS if m.name == name)
    model = cm.factory().eval()
    inputs = cm.example_inputs_factory()
    ep = torch.export.export(model, inputs)
    gm = ep.module()
    folds = len(pt2e.fuse_conv_bn_(gm).fused) + len(pt2e.fuse_linear_bn_(gm).fused)
    _check_program(ep, inputs, model, folds)
    if name not in SLOW_TO_DECOMPOSE:
        _check_program(_decompose(ep), inputs, model, folds)


@pytest.mark.quick
def test_defects_stay_unfolded() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(3)
            self.bn2 = nn.BatchNorm2d(3)
            self.fc = nn.Linear(3, 3)
            self.bn3 = nn.BatchNorm1d(3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = self.conv(x)
            z = self.bn2(self.conv(self.bn1(y) + y))
            h = self.fc(z.mean((2, 3)))
            return self.bn3(h), h

    model = M().eval()
    with torch.no_grad():
        for bn in (model.bn1, model.bn2, model.bn3):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 6, 6)
    for ep in (torch.export.export(model, (x,)),):
        for program in (ep, _decompose(ep)):
            folded, report = fold_program(program)
            assert report.fused == []
            reasons = sorted({s.reason for s in report.skipped})
            assert "conv output also read by add" in reasons
            assert any(
                r.startswith(("linear output also read by", "transposed linear"))
                for r in reasons
            )
            assert (
                max_rel_diff(outputs(folded.module(), (x,)), outputs(model, (x,)))
                < 1e-6
            )


def test_rejects_a_graph_module() -> None:
    ep = torch.export.export(
        nn.Sequential(nn.Conv2d(1, 1, 1)).eval(), (torch.randn(1, 1, 2, 2),)
    )
    with pytest.raises(TypeError, match="ExportedProgram"):
        fold_batch_norm(ep.module())  # type: ignore[arg-type]


@pytest.fixture
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("_one_thread")
@hseed(20261130)
@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(specs())
def test_fuzz_program(spec: Spec) -> None:
    """Random models: the oracle's folds, as exported and decomposed, and the
    program's outputs stay the model's."""
    # bfloat16 models are run in float32 here: a batch-statistics BN amplifies
    # bf16 rounding past any fixed tolerance, folded or not (the pt2e fuzzer judges
    # bf16 exactly, on a float64 twin of the same folded code)
    if spec.dtype == torch.bfloat16:
        spec = dataclasses.replace(spec, dtype=torch.float32)
    model = FuzzNet(spec)
    x = example_input(spec)
    ep = torch.export.export(model, (x,))
    exp = expected(spec)
    for program in (ep, _decompose(ep)):
        ref = outputs(program.module(), (x,))
        folded, report = fold_program(program)
        assert len(report.fused) == len(exp.folds)
        assert max_rel_diff(outputs(folded.module(), (x,)), ref) <= tolerance(
            spec.dtype
        )
