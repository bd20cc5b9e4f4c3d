"""Mutation tests: deliberately broken stand-ins for pyfuse must make the fuzzers fail
within their CI example budgets.

Each mutant monkeypatches one pyfuse internal for the duration of a test (pytest's
``monkeypatch`` restores it), then runs the fuzzer's property on the CI budget with a
fixed seed and no shrinking, and asserts that hypothesis reports a failure, and that
the failure is the one the mutant causes. The same run without a mutant passes
(``test_the_same_runs_pass_unmutated``), so a failure is the mutant's doing.
"""

from __future__ import annotations

import pytest
import torch
import torch.fx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from pyfuse import _core
from pyfuse.engine import matching
from pyfuse.fx import fusers, pipeline
from tests.fuzz.fx_models import cases
from tests.fuzz.fx_oracle import check_case
from tests.fuzz.graphs import scenarios
from tests.fuzz.test_fused_output import DEFAULT_EXAMPLES as FUSE_EXAMPLES
from tests.fuzz.test_fused_output import ORACLE_CASES, case_from
from tests.fuzz.test_matcher import DEFAULT_EXAMPLES as MATCHER_EXAMPLES
from tests.fuzz.test_matcher import check_against_reference

SEED = 20261130


def _run_fuzzer(prop, strategy, examples):
    """``prop`` over ``examples`` generated cases (fixed seed, no shrinking)."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis_seed(SEED)
    @given(strategy)
    def run(case):
        prop(case)

    run()


def _fuse_fuzzer_fails(match: str) -> str:
    with pytest.raises(AssertionError, match=match) as info:
        _run_fuzzer(check_case, cases(), FUSE_EXAMPLES)
    return str(info.value)


# --------------------------------------------------------------------------------------
# the fused-output fuzzer


def test_mutant_raising_instead_of_skipping_fails_the_fuse_fuzzer(monkeypatch):
    """A pass that raises IndexError wherever pyfuse would leave an unsafe match
    unfused (a shared module, an attribute read, an unclaimed root read elsewhere)."""
    conflicts = pipeline.conflicts

    def raising(*args, **kwargs):
        bad = conflicts(*args, **kwargs)
        if bad:
            raise IndexError("mutant: raises where pyfuse skips")
        return bad

    monkeypatch.setattr(pipeline, "conflicts", raising)
    _fuse_fuzzer_fails(r"pyfuse raised IndexError\(mutant")


def test_mutant_skipping_every_fusion_fails_the_fuse_fuzzer(monkeypatch):
    """A pass that leaves every match unfused, each with a reason in the report."""
    monkeypatch.setattr(
        pipeline,
        "conflicts",
        lambda fusions, *_: [(f, "mutant: skips everything") for f in fusions],
    )
    _fuse_fuzzer_fails(
        r"skipped matches: expected|pyfuse returned|differ|names neither|names none"
    )


def test_mutant_finding_no_match_fails_the_fuse_fuzzer(monkeypatch):
    """A pass whose matcher finds nothing (the model comes back unfused, no report)."""
    monkeypatch.setattr(pipeline, "match_graph", lambda *_: [])
    _fuse_fuzzer_fails(r"differ|raised|returned|skipped matches: expected")


def test_mutant_fusing_a_shared_module_fails_the_fuse_fuzzer(monkeypatch):
    """A pass that fuses a module called at several sites anyway (keeps every other
    safety check)."""
    conflicts = pipeline.conflicts

    def sharing(*args, **kwargs):
        return [(f, r) for f, r in conflicts(*args, **kwargs) if "sites" not in r]

    monkeypatch.setattr(pipeline, "conflicts", sharing)
    _fuse_fuzzer_fails(r"skipped matches: expected|pyfuse returned|pyfuse raised")


def test_mutant_sharing_a_folded_modules_attributes_fails_the_fuse_fuzzer(monkeypatch):
    """A pass whose eval fold copies a conv or linear sharing everything its
    ``__dict__`` holds but the containers (a list inside a tuple attribute, which
    the reference's deepcopy copies, stays the input's)."""

    def shallow(module):
        d = module.__dict__
        if d.get("_buffers") or d.get("_modules"):
            return None
        return _core.shell(module.__class__, d)

    monkeypatch.setattr(fusers, "_shell_copy", shallow)
    _fuse_fuzzer_fails(r"what the output shares with its input differs")


def test_mutant_raising_a_parent_type_fails_the_fuse_fuzzer(monkeypatch):
    """A pass whose fuser errors come out as a bare Exception (a parent of every type
    the reference raises): the exact type is required."""
    call_one = pipeline._call_one

    def widened(*args, **kwargs):
        try:
            return call_one(*args, **kwargs)
        except Exception as e:
            raise Exception(f"mutant: {e}") from e  # noqa: TRY002

    monkeypatch.setattr(pipeline, "_call_one", widened)
    _fuse_fuzzer_fails(r"pyfuse raised Exception\(mutant")


def test_mutant_failing_on_a_literal_like_torch_fails_the_oracle(monkeypatch):
    """A pass that fails where torch's does on a pattern position reaching a literal
    (README "Differences": pyfuse fuses), with torch's own exception type. Random
    models rarely reach a literal in a fusion that can succeed: the oracle's
    hand-made case."""
    call_one = pipeline._call_one

    def like_torch(f, *args, **kwargs):
        if any(not isinstance(n, torch.fx.Node) for n in _leaves(f.match.node_pattern)):
            raise AttributeError("mutant: 'float' object has no attribute 'name'")
        return call_one(f, *args, **kwargs)

    monkeypatch.setattr(pipeline, "_call_one", like_torch)
    factory, inputs, backend, _ = ORACLE_CASES["onednn_add_literal"]
    with pytest.raises(AssertionError, match=r"returned .*pyfuse raised .*mutant"):
        check_case(case_from(factory(), inputs, backend=backend))


def _leaves(p):
    if isinstance(p, (tuple, list)):
        return [x for q in p for x in _leaves(q)]
    return [p]


@pytest.mark.parametrize(
    ("case", "fold"),
    [
        ("grouped_convt_bn", "grouped_convtranspose_bn"),
        ("linear_bn_no_affine", "linear_bn_no_affine"),
    ],
)
def test_mutant_failing_on_a_fold_like_torch_fails_the_oracle(monkeypatch, case, fold):
    """A pass that fails as torch does on a grouped ConvTranspose + BN or a Linear +
    BN(affine=False) in eval (rare in random models: the oracle's hand-made cases)."""
    ref_type = {"grouped_convt_bn": RuntimeError, "linear_bn_no_affine": TypeError}

    def like_torch(*_args):
        raise ref_type[case]("mutant: fails as torch does")

    monkeypatch.setattr(fusers, fold, like_torch)
    factory, inputs, backend, _ = ORACLE_CASES[case]
    with pytest.raises(AssertionError, match=r"returned .*pyfuse raised .*mutant"):
        check_case(case_from(factory(), inputs, backend=backend))


# --------------------------------------------------------------------------------------
# the matcher fuzzer


def _matcher_fuzzer_fails(match: str) -> str:
    with pytest.raises(AssertionError, match=match) as info:
        _run_fuzzer(
            lambda sc: check_against_reference(sc, sc.patterns),
            scenarios(),
            MATCHER_EXAMPLES,
        )
    return str(info.value)


def test_mutant_matcher_finding_nothing_fails_the_matcher_fuzzer(monkeypatch):
    monkeypatch.setattr(matching, "match_graph", lambda *_: [])
    _matcher_fuzzer_fails(r"key sets differ")


def test_mutant_matcher_dropping_the_first_match_fails_the_matcher_fuzzer(monkeypatch):
    """A matcher that loses one match (the last in graph order) of each graph."""
    match_graph = matching.match_graph
    monkeypatch.setattr(matching, "match_graph", lambda *a: match_graph(*a)[1:])
    _matcher_fuzzer_fails(r"key sets differ")


def test_mutant_matcher_ignoring_alias_paths_fails_the_matcher_fuzzer(monkeypatch):
    """A matcher that, like torch, raises KeyError for a module reachable only by an
    alias path (README "Differences": pyfuse resolves it)."""
    find_matches = matching.find_matches

    def strict(root, graph, patterns):
        paths = dict(root.named_modules())
        for n in graph.nodes:
            if n.op == "call_module" and n.target not in paths:
                raise KeyError(n.target)
        return find_matches(root, graph, patterns)

    monkeypatch.setattr("tests.fuzz.test_matcher.pyfuse_find_matches", strict)
    _matcher_fuzzer_fails(r"fixed walk \(alias path\) returned; pyfuse raised KeyError")


def test_the_same_runs_pass_unmutated():
    _run_fuzzer(check_case, cases(), FUSE_EXAMPLES)
    _run_fuzzer(
        lambda sc: check_against_reference(sc, sc.patterns),
        scenarios(),
        MATCHER_EXAMPLES,
    )
