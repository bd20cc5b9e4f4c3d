"""Differential fuzzing of the whole pass: ``pyfuse.fuse`` against torch's
``torch.ao.quantization.fx.fuse.fuse`` on random real models
(:mod:`tests.fuzz.fx_models`), judged by :mod:`tests.fuzz.fx_oracle`: per case, the one
right outcome (fused identically; matches left out with a named reason, the rest
identical; or the exact exception type) and nothing else.

CI runs 150 examples; the long run is ``test_fused_output_long`` (marked ``long``; see
:mod:`tests.fuzz.budget` and RELIABILITY.md).
The hand-made cases below check that the oracle tells each documented reference defect
apart, and what it expects there.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import event, given
from torch import nn

from tests.fuzz.budget import RunStats, fuzz_settings, long_settings, stats_fixture
from tests.fuzz.fx_models import BACKENDS, Case, _init_module, cases, trace
from tests.fuzz.fx_oracle import check_case

DEFAULT_EXAMPLES = 150


def _property(case):
    label = check_case(case)
    event(label)
    return label


@fuzz_settings(DEFAULT_EXAMPLES)
@given(cases())
def test_fused_output_matches_reference(case):
    _property(case)


LONG_STATS = RunStats("tests/fuzz/test_fused_output.py::test_fused_output_long")

_long_stats = stats_fixture(LONG_STATS)


@pytest.mark.long
@long_settings()
@given(cases())
def test_fused_output_long(case):
    """The long run (RELIABILITY.md): ``PYFUSE_PBT_EXAMPLES`` cases."""
    label = _property(case)
    LONG_STATS.add("examples", label, f"backend {case.backend}", f"mode {case.mode}")


# --------------------------------------------------------------------------------------
# the oracle on hand-made models: each documented defect is told apart, and the right
# outcome there is pyfuse's


def case_from(model, inputs, mode="eval", backend="native"):
    """A :class:`Case` from a hand-written model (deterministic weights)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    _init_module(model, gen)
    template = trace(model)
    template.train(mode != "eval")
    return Case(
        template, inputs, mode, mode != "eval", backend, BACKENDS[backend], True, ""
    )


class SharedConvBn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x):
        return self.bn(self.conv(x)) + self.conv(x * 2)


class GetAttrOfFused(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x):
        return self.bn(self.conv(x)) + self.conv.weight.sum()


class GroupedConvTBn(nn.Module):
    def __init__(self, out_channels=4):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, out_channels, 3, groups=2)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return self.bn(self.up(x))


class LinearBnNoAffine(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2, affine=False)

    def forward(self, x):
        return self.bn(self.fc(x))


class ConvAddLiteral(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.conv(x) + 1.0


X4 = (torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(2)),)
_X4_4 = (torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(2)),)
_SKIPPED = (
    "skipped unsafe matches ({}), rest identical; defect (shared / read module): "
    "torch's output differs"
)

ORACLE_CASES = {
    "shared_conv_bn": (
        SharedConvBn,
        X4,
        "native",
        _SKIPPED.format("shared module"),
    ),
    "get_attr_of_fused": (
        GetAttrOfFused,
        X4,
        "native",
        _SKIPPED.format("attribute read"),
    ),
    "grouped_convt_bn": (
        GroupedConvTBn,
        _X4_4,
        "native",
        (
            "identical (fused); defect (grouped ConvTranspose + BN): torch raised "
            "RuntimeError"
        ),
    ),
    "grouped_convt_bn_one_channel_per_group": (
        lambda: GroupedConvTBn(out_channels=2),
        _X4_4,
        "native",
        (
            "identical (fused); defect (grouped ConvTranspose + BN): torch's output "
            "differs"
        ),
    ),
    "linear_bn_no_affine": (
        LinearBnNoAffine,
        (torch.randn(4, 3, generator=torch.Generator().manual_seed(2)),),
        "native",
        "identical (fused); defect (Linear + BN(affine=False)): torch raised TypeError",
    ),
    "onednn_add_literal": (
        ConvAddLiteral,
        X4,
        "onednn",
        "identical (fused); defect (literal): torch raised AttributeError",
    ),
}


@pytest.mark.parametrize("name", list(ORACLE_CASES))
def test_oracle_tells_documented_defect_apart(name):
    factory, inputs, backend, want = ORACLE_CASES[name]
    assert check_case(case_from(factory(), inputs, backend=backend)) == want


def test_oracle_full_contract_on_a_plain_model():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.bn = nn.BatchNorm2d(2)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    for mode in ("eval", "qat"):
        assert check_case(case_from(Plain(), X4, mode)) == "identical (fused)"
