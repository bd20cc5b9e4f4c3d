"""The C++ automaton through pyfuse._core, on hand-checked arrays.

Encoding: tests/support/arrays.py.
"""

from __future__ import annotations

import pytest

from pyfuse import _core
from tests.support.arrays import LABEL, MATCH_ALL, NEVER, automaton, graph

# Labels: 1 = Conv (module), 2 = ReLU. Sub-patterns: 0 Conv, 1 (ReLU, Conv), 2 ReLU.
CONV_RELU = [(LABEL, 1, []), (LABEL, 2, [0]), (LABEL, 2, [])]


def test_empty_graph():
    res = automaton(CONV_RELU, [1]).match(graph([]))
    assert (res.error, res.roots, res.owner) == ("", [], [])


def test_one_chain_claims_both_nodes():
    # x -> conv -> relu
    g = graph([(0, 1, []), (1, 1, [0]), (2, 0, [1])])
    res = automaton(CONV_RELU, [1, 2]).match(g)
    assert res.roots == [2]
    assert res.patterns == [0]
    assert res.owner == [-1, 0, 0]
    assert res.claimed == [2, 1]
    assert res.claimed_off == [0, 2]


def test_non_root_with_two_users_breaks_the_chain():
    g = graph([(0, 1, []), (1, 2, [0]), (2, 0, [1]), (0, 0, [1])])
    res = automaton(CONV_RELU, [1, 2]).match(g)
    assert res.roots == [2]  # only the bare ReLU pattern
    assert res.patterns == [1]
    assert res.owner == [-1, -1, 0, -1]


def test_priority_order_and_first_claim_wins():
    # conv -> relu -> relu: the last relu takes (ReLU, ReLU?) no: patterns are
    # (ReLU, Conv) then ReLU; reverse order visits relu#2 first (ReLU only).
    g = graph([(0, 1, []), (1, 1, [0]), (2, 1, [1]), (2, 0, [2])])
    res = automaton(CONV_RELU, [1, 2]).match(g)
    assert res.roots == [3, 2]
    assert res.patterns == [1, 0]
    assert res.owner == [-1, 1, 1, 0]


def test_match_all_child_claims_nothing():
    # (Add(label 2), MatchAll, Conv): node 2 = add(x, conv)
    subs = [(MATCH_ALL, 0, []), (LABEL, 1, []), (LABEL, 2, [0, 1])]
    g = graph([(0, 1, []), (1, 1, [0]), (2, 0, [0, 1])])
    res = automaton(subs, [2]).match(g)
    assert res.owner == [-1, 0, 0]


def test_literal_argument_equal_to_subpattern():
    # sub 0 is a 'never' literal entry (e.g. the int 1); add(conv, 1) matches (Add, Conv, 1)
    subs = [(NEVER, 0, []), (LABEL, 1, []), (LABEL, 2, [1, 0])]
    g = graph([(0, 1, []), (1, 1, [0]), (2, 0, [1, -(0 + 2)])])
    assert automaton(subs, [2]).match(g).roots == [2]
    g2 = graph([(0, 1, []), (1, 1, [0]), (2, 0, [1, -1])])  # literal equal to nothing
    assert automaton(subs, [2]).match(g2).roots == []


def test_arity_must_match():
    g = graph([(0, 2, []), (1, 1, [0]), (2, 0, [1, 0])])
    assert automaton(CONV_RELU, [1]).match(g).roots == []


def test_exclusion_falls_through_to_next_pattern():
    g = graph([(0, 1, []), (1, 1, [0]), (2, 0, [1])])
    res = automaton(CONV_RELU, [1, 2]).match(g, [2, 0])
    assert (res.roots, res.patterns) == ([2], [1])


def test_missing_module_is_reported_where_tested():
    g = graph([(0, 1, []), (-1, 1, [0]), (2, 0, [1])])
    res = automaton(CONV_RELU, [1, 2]).match(g)
    assert res.missing_module
    assert res.error_node == 1


@pytest.mark.parametrize(
    "nodes",
    [
        [(0, 1, [5])],  # argument after the node
        [(0, 1, []), (7, 0, [0])],  # label out of range
        [(0, -1, [])],  # negative users
        [(0, 0, [-999])],  # literal code out of range
    ],
)
def test_bad_graph_is_an_error_not_a_crash(nodes):
    res = automaton(CONV_RELU, [1]).match(graph(nodes))
    assert res.error


def test_bad_offsets_and_exclusions():
    a = automaton(CONV_RELU, [1])
    bad = _core.FlatGraph([0, 0], [0, 0], [0, 5, 1], [0])
    assert a.match(bad).error
    assert a.match(graph([(0, 0, [])]), [0]).error  # odd exclude
    assert a.match(graph([(0, 0, [])]), [3, 0]).error  # node out of range


@pytest.mark.parametrize(
    "subs,top",
    [
        ([(LABEL, 1, [0])], [0]),  # child not earlier
        ([(9, 1, [])], [0]),  # unknown head
        ([(LABEL, 7, [])], [0]),  # label out of range
        ([(LABEL, 1, [])], [3]),  # top out of range
    ],
)
def test_bad_patterns_raise_value_error(subs, top):
    with pytest.raises(ValueError):
        automaton(subs, top)
