"""Hypothesis fuzzing of pyfuse.pt2e against torchao on random exported models
(see fuzzmodels for the generator and the oracle), and mutation tests showing the
fuzzer catches a broken pyfuse."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed

from pyfuse.export import plan
from tests.export.fuzzcheck import check
from tests.export.fuzzmodels import Spec, specs


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny convolutions: threads only add contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


EXAMPLES = int(os.environ.get("PYFUSE_EXPORT_FUZZ_EXAMPLES", "40"))
SEED = int(os.environ.get("PYFUSE_EXPORT_FUZZ_SEED", "20261130"))


@hseed(SEED)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(specs())
def test_fuzz_pt2e_against_torchao(spec: Spec) -> None:
    check(spec)


def _catches(budget: int) -> bool:
    """Whether the fuzzer finds a failing case within `budget` examples."""

    @hseed(SEED)
    @settings(
        max_examples=budget,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(specs())
    def run(spec: Spec) -> None:
        check(spec)

    try:
        run()
    except AssertionError:
        return True
    return False


def test_mutation_folding_multi_reader_producers_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(plan, "_other_readers", lambda *_: [])
    assert _catches(200)


def test_mutation_folding_shared_weights_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(plan, "_group_problem", lambda *_: None)
    assert _catches(200)


def test_fuzzer_runs_real_cases() -> None:
    """The generator reaches both torchao-right and torchao-defect cases."""
    from collections import Counter

    from hypothesis import given as g

    stats: Counter[str] = Counter()

    @hseed(SEED)
    @settings(max_examples=30, deadline=None, database=None, phases=[Phase.generate])
    @g(specs())
    def run(spec: Spec) -> None:
        check(spec, stats)

    run()
    assert stats["cases"] == 30, stats
    assert stats["identical"] > 0
    assert stats["torchao_wrong"] > 0
    assert stats["torchao_raised"] > 0
    assert stats["folds"] > 0
