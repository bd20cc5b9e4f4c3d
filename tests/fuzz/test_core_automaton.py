"""Differential and robustness fuzzing of the native core (``pyfuse._core``), directly.

- differential: graphs and patterns encoded into the documented integer arrays
  (``csrc/core/automaton.hpp``) by an encoder written here from that documentation
  (not pyfuse's), matched by ``Automaton.match`` and compared with the right walk
  (torch's, or the fixed walk where torch's crashes on a literal): claims, roots,
  patterns and claim order (match_map insertion order). Where a module is reachable
  only by an alias path, the core must report the missing module (the encoder looks
  modules up by de-duplicated paths, as torch does);
- robustness: the documented contract "Automaton(...) throws std::invalid_argument
  (ValueError) on malformed input" and "match never throws for bad graph input: it
  reports it in the result", on random (often malformed) arrays. A native crash
  would take the test session down, so those run in a child process
  (``python -m tests.fuzz.test_core_automaton --core-fuzz N STATE``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from torch import nn
from torch.fx import Graph, GraphModule, Node

from pyfuse import _core
from tests.fuzz.budget import fuzz_settings
from tests.fuzz.fixed_reference import REFERENCE_FIND_MATCHES, is_literal_crash, walk
from tests.fuzz.graphs import _int, _pick, fmt_result, same, scenarios, sort_patterns

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch.ao.quantization.utils import MatchAllNode

DEFAULT_EXAMPLES = 200
REPO = Path(__file__).resolve().parents[2]

# automaton.hpp's head kinds and missing-module label, as the bindings export them
_H_MATCH_ALL, _H_LABEL = _core.HEAD_MATCH_ALL, _core.HEAD_LABEL
_H_NEVER, _H_GETATTR = _core.HEAD_NEVER, _core.HEAD_GETATTR
_K_MISSING_MODULE = _core.MISSING_MODULE


class _DocEncoder:
    """Encodes a pattern list (priority order) as automaton.hpp documents it."""

    def __init__(self, patterns):
        from torch.nn.utils.parametrize import type_before_parametrizations

        self._tbp = type_before_parametrizations
        self.patterns = list(patterns)
        self.module_labels, self.func_labels, self.method_labels = {}, {}, {}
        self.label_is_module = [0]  # label 0 names nothing
        self.sub_ids = {}
        self.head, self.label, self.check_args, self.child_off, self.child = (
            [],
            [],
            [],
            [0],
            [],
        )
        self.top = [self._intern(p) for p in self.patterns]

    def _new_label(self, is_module):
        self.label_is_module.append(int(is_module))
        return len(self.label_is_module) - 1

    def _head(self, e):
        if isinstance(e, type) and issubclass(e, MatchAllNode):
            return _H_MATCH_ALL, 0
        if isinstance(e, type) and issubclass(e, nn.Module):
            if e not in self.module_labels:
                self.module_labels[e] = self._new_label(True)
            return _H_LABEL, self.module_labels[e]
        if callable(e):
            if id(e) not in self.func_labels:
                self.func_labels[id(e)] = self._new_label(False)
            return (_H_GETATTR if e is getattr else _H_LABEL), self.func_labels[id(e)]
        if isinstance(e, str):
            if e not in self.method_labels:
                self.method_labels[e] = self._new_label(False)
            return _H_LABEL, self.method_labels[e]
        return _H_NEVER, 0

    def _intern(self, sub):
        if sub in self.sub_ids:
            return self.sub_ids[sub]
        if isinstance(sub, tuple):
            kind, lab = self._head(sub[0])
            kids = [self._intern(c) for c in sub[1:]]
        else:
            (kind, lab), kids = self._head(sub), []
        sid = len(self.head)
        self.head.append(kind)
        self.label.append(lab)
        self.check_args.append(int(bool(kids) and kind != _H_GETATTR))
        self.child.extend(kids)
        self.child_off.append(len(self.child))
        self.sub_ids[sub] = sid
        return sid

    def automaton(self):
        return _core.Automaton(
            self.head,
            self.label,
            self.check_args,
            self.child_off,
            self.child,
            self.top,
            self.label_is_module,
            len(self.label_is_module),
        )

    def _literal(self, a):
        try:
            sid = self.sub_ids.get(a)
        except TypeError:  # unhashable: equals no pattern
            sid = None
        return _core.literal_arg(-1 if sid is None else sid)

    def graph(self, gm):
        modules = dict(gm.named_modules())
        nodes = list(gm.graph.nodes)
        index = {n: i for i, n in enumerate(nodes)}
        label, users, arg_off, arg = [], [], [0], []
        for n in nodes:
            if n.op == "call_module":
                m = modules.get(n.target)
                lab = (
                    _K_MISSING_MODULE
                    if m is None
                    else self.module_labels.get(self._tbp(m), 0)
                )
            elif n.op == "call_function":
                lab = self.func_labels.get(id(n.target), 0)
            elif n.op == "call_method":
                lab = self.method_labels.get(n.target, 0)
            else:
                lab = 0
            label.append(lab)
            users.append(len(n.users))
            arg.extend(
                index[a] if isinstance(a, Node) else self._literal(a) for a in n.args
            )
            arg_off.append(len(arg))
        return nodes, _core.FlatGraph(label, users, arg_off, arg)


def _right_claims(gm, sorted_dict):
    """torch's walk, or the fixed walk where it crashes on a literal; None where the
    walk looks up a module reachable only by an alias path (the core must report it
    missing)."""
    try:
        return REFERENCE_FIND_MATCHES(gm, gm.graph, sorted_dict), "torch's walk"
    except KeyError as e:
        if e.args[0] not in dict(gm.named_modules(remove_duplicate=False)):
            raise AssertionError(f"torch's walk: {e!r}, not an alias path") from e
        return None, "alias path"
    except AttributeError as e:
        if not is_literal_crash(e):
            raise AssertionError(f"torch's walk: {e!r}, not on a literal") from e
    try:  # past the literal, the walk may still meet a module missing from named_modules
        return walk(gm, gm.graph, sorted_dict), "fixed walk (literal)"
    except KeyError as e:
        if e.args[0] not in dict(gm.named_modules(remove_duplicate=False)):
            raise AssertionError(f"fixed walk: {e!r}, not an alias path") from e
        return None, "alias path"


@fuzz_settings(DEFAULT_EXAMPLES)
@given(scenarios())
def test_core_automaton_equals_reference(sc):
    note(repr(sc))
    check_core(sc.gm, sc.patterns)


def check_core(gm, patterns):
    """The core's claims, roots and patterns are the right walk's."""
    sorted_dict = sort_patterns(patterns)
    pats = list(sorted_dict)
    enc = _DocEncoder(pats)
    nodes, flat = enc.graph(gm)
    res = enc.automaton().match(flat)
    ref, which = _right_claims(gm, sorted_dict)
    with contextlib.suppress(InvalidArgument):  # (outside hypothesis: no event)
        event(which)
    if ref is None:
        # the core reports a missing module exactly where torch raises KeyError
        assert res.error, "a module missing from the flattening was not reported"
        assert res.missing_module, res.error
        return which
    assert res.error == "", res.error
    with contextlib.suppress(InvalidArgument):  # (outside hypothesis: no note)
        note(f"{which} = " + fmt_result({k: v[:3] for k, v in ref.items()}))
        note(
            f"core: roots={res.roots} patterns={res.patterns} claimed={res.claimed} "
            f"claimed_off={res.claimed_off} owner={res.owner}"
        )
    # claim order == the walk's match_map insertion order
    assert [nodes[i].name for i in res.claimed] == list(ref)
    assert len(res.claimed_off) == len(res.roots) + 1 == len(res.patterns) + 1
    for m, (r, k) in enumerate(zip(res.roots, res.patterns, strict=True)):
        for i in res.claimed[res.claimed_off[m] : res.claimed_off[m + 1]]:
            name = nodes[i].name
            assert res.owner[i] == m
            assert ref[name][0] is nodes[r], name
            assert same(ref[name][1], pats[k]), name
    assert sum(o >= 0 for o in res.owner) == len(ref)
    return which


def _alias_past_a_literal():
    """m1 is an alias of m0 (hidden by named_modules()); the output reads a tuple."""
    root = nn.Module()
    root.m0 = nn.Conv2d(1, 1, 1)
    root.m1 = root.m0
    g = Graph()
    m0 = g.call_module("m0", (g.placeholder("x0"),))
    m1 = g.call_module("m1", (m0,))
    g.output((m1, m1))
    return GraphModule(root, g)


@pytest.mark.parametrize(
    ("patterns", "which"),
    [
        # torch crashes on the output's tuple first; past it, the walk looks m1 up
        ([(nn.ReLU, nn.Conv1d), (MatchAllNode, MatchAllNode)], "alias path"),
        # (MatchAllNode, MatchAllNode) claims m1 before any pattern looks it up
        ([(MatchAllNode, MatchAllNode), (nn.ReLU, nn.Conv1d)], "fixed walk (literal)"),
    ],
)
def test_core_on_an_alias_past_a_literal(patterns, which):
    """Found by this fuzzer: torch's walk crashing on a literal hid a later alias."""
    assert check_core(_alias_past_a_literal(), patterns) == which


# ---- robustness (child process) ------------------------------------------------------

_INT32_MIN = -(2**31)


@st.composite
def core_inputs(draw):
    """Arrays for Automaton(...) / FlatGraph(...): valid ones, and ones with one defect."""
    # ---- pattern arrays (valid first, then maybe one defect)
    num_labels = _int(draw, 1, 4)
    n_sub = _int(draw, 0, 6)
    head, label, check_args, child_off, child = [], [], [], [0], []
    for s in range(n_sub):
        h = _int(draw, 0, 3) if s else _pick(draw, [0, 1, 2])
        kids = (
            [_int(draw, 0, s - 1) for _ in range(1 if h == 3 else _int(draw, 0, 3))]
            if s
            else []
        )
        if h == 3 and not kids:
            h = 1
        head.append(h)
        label.append(_int(draw, 0, num_labels - 1))
        check_args.append(_int(draw, 0, 1))
        child.extend(kids)
        child_off.append(len(child))
    top = [_int(draw, 0, n_sub - 1) for _ in range(_int(draw, 0, 4))] if n_sub else []
    auto = {
        "head": head,
        "label": label,
        "check_args": check_args,
        "child_off": child_off,
        "child": child,
        "top": top,
        "label_is_module": [_int(draw, 0, 1) for _ in range(num_labels)],
        "num_labels": num_labels,
    }
    if _int(draw, 0, 3) == 0:
        d = _int(draw, 0, 9)
        if d == 2:
            auto["num_labels"] = -1
        elif d == 1:
            auto[
                _pick(draw, ["head", "label", "check_args", "label_is_module"])
            ].append(0)
        elif d == 0 and n_sub >= 2:  # interior offsets arbitrary, ends kept
            if _int(draw, 0, 1):
                auto["child"], auto["child_off"][-1] = [], 0
            for i in range(1, n_sub):
                auto["child_off"][i] = _int(draw, -2, len(auto["child"]) + 6)
        elif d == 3:
            auto["child_off"][-1] += _pick(draw, [-1, 1])
        elif d == 4 and child:
            auto["child"][_int(draw, 0, len(child) - 1)] = _pick(
                draw, [-1, n_sub, n_sub + 3]
            )
        elif d == 5 and n_sub:
            auto["label"][_int(draw, 0, n_sub - 1)] = _pick(draw, [-1, num_labels])
        elif d == 6 and n_sub:
            auto["head"][_int(draw, 0, n_sub - 1)] = _pick(draw, [-1, 4])
        elif d == 7:
            auto["top"].append(_pick(draw, [-1, n_sub]))
        elif d == 8 and n_sub:
            auto["head"][_int(draw, 0, n_sub - 1)] = 3  # getattr with != 1 child, maybe
        else:
            auto["child_off"] = [_int(draw, -3, 9) for _ in range(n_sub + 1)]
    # ---- graph arrays
    n = _int(draw, 0, 7)
    g_label, users, arg_off, arg = [], [], [0], []
    for i in range(n):
        g_label.append(_int(draw, -1, num_labels - 1))
        users.append(_int(draw, 0, 3))
        for _ in range(_int(draw, 0, 3)):
            if i and _int(draw, 0, 2):
                arg.append(_int(draw, 0, i - 1))
            else:
                arg.append(_core.literal_arg(_int(draw, -1, n_sub - 1)))
        arg_off.append(len(arg))
    graph = {"label": g_label, "users": users, "arg_off": arg_off, "arg": arg}
    exclude = []
    for _ in range(_int(draw, 0, 2) if n and top else 0):
        exclude += [_int(draw, 0, n - 1), _int(draw, 0, len(top) - 1)]
    if _int(draw, 0, 2) == 0:
        d = _int(draw, 0, 9)
        if d == 1:
            graph[_pick(draw, ["label", "users", "arg_off"])].append(0)
        elif d == 0 and n >= 2:  # interior offsets arbitrary, ends kept
            if _int(draw, 0, 1):
                graph["arg"], graph["arg_off"][-1] = [], 0
            for i in range(1, n):
                graph["arg_off"][i] = _int(draw, -2, len(graph["arg"]) + 6)
        elif d == 2:
            graph["arg_off"][-1] += _pick(draw, [-1, 1])
        elif d == 3 and arg:
            graph["arg"][_int(draw, 0, len(arg) - 1)] = _pick(
                draw, [n, n + 5, 2**31 - 1]
            )
        elif d == 4 and arg:
            graph["arg"][_int(draw, 0, len(arg) - 1)] = _pick(
                draw, [-(n_sub + 2), -(n_sub + 9), _INT32_MIN]
            )
        elif d == 5 and n:
            graph["label"][_int(draw, 0, n - 1)] = _pick(
                draw, [-2, num_labels, _INT32_MIN]
            )
        elif d == 6 and n:
            graph["users"][_int(draw, 0, n - 1)] = -1
        elif d == 7:
            exclude.append(0)
        elif d == 8:
            exclude += [_pick(draw, [-1, n, 0]), _pick(draw, [-1, len(top), 0])]
        else:
            graph["arg_off"] = [_int(draw, -3, 9) for _ in range(n + 1)]
    return auto, graph, exclude


def _check_core_case(auto, graph, exclude):
    """The documented contract for one input. Raises AssertionError on violation."""
    try:
        a = _core.Automaton(**auto)
    except ValueError:
        return "automaton rejected"
    fg = _core.FlatGraph(**graph)
    r = a.match(fg, exclude)  # must not raise
    if r.error:
        return "graph rejected"
    n = len(graph["label"])
    assert len(r.owner) == n
    assert len(r.claimed_off) == len(r.roots) + 1 == len(r.patterns) + 1
    assert r.claimed_off[0] == 0
    assert r.claimed_off[-1] == len(r.claimed)
    assert all(0 <= x < n for x in r.roots + r.claimed)
    assert all(0 <= k < len(auto["top"]) for k in r.patterns)
    assert len(set(r.claimed)) == len(r.claimed)
    return "matched"


def _core_fuzz_main(n_examples, state_path):
    """Child-process entry: fuzz the core, recording each case before running it."""

    @settings(
        max_examples=n_examples,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(core_inputs())
    def run(case):
        Path(state_path).write_text(repr(case))
        event(_check_core_case(*case))

    run()
    Path(state_path).unlink()


def _run_core_child(args, timeout=900):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "tests.fuzz.test_core_automaton", *args],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_core_contract_on_malformed_arrays():
    with tempfile.TemporaryDirectory() as d:
        state = Path(d) / "case.txt"
        p = _run_core_child(["--core-fuzz", str(DEFAULT_EXAMPLES), str(state)])
        last = state.read_text() if state.exists() else "<none>"
    assert p.returncode == 0, (
        f"core fuzz child exited with {p.returncode} (negative = killed by signal)\n"
        f"last case (auto, graph, exclude) = {last}\n--- stderr tail ---\n{p.stderr[-3000:]}"
    )


if __name__ == "__main__" and sys.argv[1:2] == ["--core-fuzz"]:
    _core_fuzz_main(int(sys.argv[2]), sys.argv[3])
