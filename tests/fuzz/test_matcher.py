"""Differential fuzzing of the matcher: ``find_matches`` against torch's
``_find_matches`` on random graphs and pattern sets (:mod:`tests.fuzz.graphs`).

Properties:

1. pyfuse's matches are the right ones: torch's walk's (same key set, same root node,
   pattern and structure-exact matched node pattern, lists vs tuples included); where
   torch's walk crashes on a documented defect (a module reachable only by an alias
   path: KeyError; a pattern position reaching a literal: AttributeError), the fixed
   walk's (:func:`tests.fuzz.fixed_reference.walk`: every module path, literals
   recorded); where it raises anything else, the same exception type;
2. determinism: two runs on the same graph give identical results and leave the graph
   untouched;
3. pattern order: permuting the pattern set before the (stable) priority sort changes
   the result exactly as it changes torch's;
4. a plain match's record, built from the pattern's compiled shape, equals the walk's.

CI runs 200 examples per property; the long run of property 1 is
``test_matches_equal_reference_long`` (marked ``long``; RELIABILITY.md).
"""

from __future__ import annotations

import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

from pyfuse.engine.flatten import flatten
from pyfuse.engine.matching import Match, match_graph
from pyfuse.engine.matching import find_matches as pyfuse_find_matches
from pyfuse.engine.patterns import compile_patterns
from tests.fuzz.budget import RunStats, fuzz_settings, long_settings, stats_fixture
from tests.fuzz.fixed_reference import REFERENCE_FIND_MATCHES, is_literal_crash, walk
from tests.fuzz.graphs import diff_results, fmt_result, same, scenarios, sort_patterns

DEFAULT_EXAMPLES = 200
#: the current example's outcome (the long run counts them)
OUTCOME: list[str] = []


def expected_matches(gm, sorted_dict):
    """(the right match map or None, the right exception or None, which walk)."""
    try:
        ref = REFERENCE_FIND_MATCHES(gm, gm.graph, sorted_dict)
    except KeyError as e:
        every_path = dict(gm.named_modules(remove_duplicate=False))
        if e.args[0] in dict(gm.named_modules()) or e.args[0] not in every_path:
            return None, e, "torch raised KeyError"
        kind = "alias path"
    except AttributeError as e:
        if not is_literal_crash(e):
            return None, e, "torch raised AttributeError"
        kind = "literal"
    except Exception as e:  # noqa: BLE001 - the right outcome is this exception type
        return None, e, f"torch raised {type(e).__name__}"
    else:
        return {k: v[:3] for k, v in ref.items()}, None, "torch's walk"
    fixed = walk(gm, gm.graph, sorted_dict, alias_paths=True)
    return {k: v[:3] for k, v in fixed.items()}, None, f"fixed walk ({kind})"


def check_against_reference(sc, patterns):
    """Property 1 for one (graph, pattern order). Returns the right match map."""
    sorted_dict = sort_patterns(patterns)
    gm = sc.gm
    want, want_exc, which = expected_matches(gm, sorted_dict)
    if want_exc is not None:
        with pytest.raises(type(want_exc)) as got_exc:
            pyfuse_find_matches(gm, gm.graph, list(sorted_dict))
        assert type(got_exc.value) is type(want_exc), (
            f"{which} ({want_exc!r}); pyfuse raised {got_exc.value!r}"
        )
        OUTCOME.append(which)
        event(which)
        return None
    try:
        got = pyfuse_find_matches(gm, gm.graph, list(sorted_dict))
    except Exception as e:
        raise AssertionError(f"{which} returned; pyfuse raised {e!r}") from e
    diffs = diff_results(want, got)
    if diffs:
        note(repr(sc))
        note(f"{which} = " + fmt_result(want))
        note("pyfuse = " + (fmt_result(got) if isinstance(got, dict) else repr(got)))
    assert not diffs, "\n".join(diffs)
    label = f"{which}: " + ("matches: >=1" if want else "matches: 0")
    OUTCOME.append(label)
    event(label)
    return want


@fuzz_settings(DEFAULT_EXAMPLES)
@given(scenarios())
def test_matches_equal_reference(sc):
    check_against_reference(sc, sc.patterns)


LONG_STATS = RunStats(
    "tests/fuzz/test_matcher.py::test_matches_equal_reference_long", every=1000
)

_long_stats = stats_fixture(LONG_STATS)


@pytest.mark.long
@long_settings()
@given(scenarios())
def test_matches_equal_reference_long(sc):
    """The long run of property 1 (RELIABILITY.md): ``PYFUSE_PBT_EXAMPLES`` cases."""
    OUTCOME.clear()
    check_against_reference(sc, sc.patterns)
    LONG_STATS.add("examples", *OUTCOME)


def _graph_fingerprint(graph):
    return [
        (n.op, n.name, n.target, tuple(n.args), tuple(n.kwargs.items()), tuple(n.users))
        for n in graph.nodes
    ]


@fuzz_settings(DEFAULT_EXAMPLES)
@given(scenarios())
def test_find_matches_deterministic(sc):
    gm = sc.gm
    pats = list(sort_patterns(sc.patterns))
    before = _graph_fingerprint(gm.graph)
    try:
        first = pyfuse_find_matches(gm, gm.graph, pats)
    except Exception as e:  # noqa: BLE001 - a failure must be deterministic too
        with pytest.raises(type(e)):
            pyfuse_find_matches(gm, gm.graph, pats)
        assert _graph_fingerprint(gm.graph) == before
        return
    second = pyfuse_find_matches(gm, gm.graph, pats)
    assert list(first) == list(second)
    for k in first:
        assert len(first[k]) == len(second[k])
        for a, b in zip(first[k], second[k], strict=True):
            assert same(a, b), f"[{k}] {a!r} != {b!r}"
    assert _graph_fingerprint(gm.graph) == before, "find_matches mutated the graph"


@fuzz_settings(DEFAULT_EXAMPLES)
@given(scenarios(), st.data())
def test_pattern_order_same_effect(sc, data):
    perm = data.draw(st.permutations(sc.patterns), label="permuted patterns")
    ref_a = check_against_reference(sc, sc.patterns)
    ref_b = check_against_reference(sc, perm)
    if ref_a is None or ref_b is None:
        return
    if set(ref_a) != set(ref_b) or any(
        not same(ref_a[k], ref_b[k]) for k in ref_a if k in ref_b
    ):
        event("order changed the reference result")


@fuzz_settings(DEFAULT_EXAMPLES)
@given(scenarios())
def test_plain_match_records_equal_the_walk(sc):
    """A plain match's node pattern, built from the pattern's compiled shape, equals
    the walk's record (which property 1 compares with the reference)."""
    compiled = compile_patterns(list(sort_patterns(sc.patterns)))
    try:
        matches = match_graph(compiled, flatten(sc.gm.graph, sc.gm, compiled))
    except KeyError:
        # a module reachable only by an alias path: find_matches resolves it (property
        # 1); match_graph on a flattening by de-duplicated paths reports it
        event("module missing from the flattening")
        return
    plain = [m for m in matches if m.plain]
    event(f"plain matches: {'>=1' if plain else 0}")
    for m in plain:
        built = m.node_pattern
        replay = Match(
            m._walk,
            m.index,
            m.last,
            m.pattern,
            m.pattern_index,
            m.ids,
            m.claimed,
            m.shape,
        )
        replay.plain = False
        assert built == replay.node_pattern, m
        assert type(built) is type(replay.node_pattern)
        got, want = m.entries, replay.entries
        assert list(got) == list(want)
        for name in want:
            assert got[name][:2] == want[name][:2]
            assert got[name][2] == want[name][2]
        # nodes recorded in one list by the walk share one list here too
        assert _sharing(got) == _sharing(want)


def _sharing(entries):
    groups = {}
    for name, (_, _, acc) in entries.items():
        groups.setdefault(id(acc), []).append(name)
    return sorted(groups.values())
