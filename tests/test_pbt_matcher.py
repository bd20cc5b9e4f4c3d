"""Property-based differential tests: ``pyfuse.engine.matching.find_matches`` vs the reference
``torch.ao.quantization.fx.fuse._find_matches``.

Graphs are built directly with the ``torch.fx.Graph`` API (no tracing) over a random
module tree, and matched against random pattern sets (subsets of the native / onednn
backend fusion patterns plus randomly generated reversed-nested-tuple patterns).

Properties:
  1. pyfuse's matches equal the reference's (same key set; for each key the same root
     node, the same pattern and the structure-exact matched node pattern, lists vs tuples
     included).
  2. determinism: two pyfuse runs on the same graph give identical results and leave the
     graph untouched.
  3. pattern order: permuting the pattern set before the (stable) priority sort changes
     the result exactly the way it changes the reference's.

Examples where the reference itself raises (a literal argument reached by a pattern
position -> AttributeError, a module path hidden by ``named_modules`` de-duplication ->
KeyError, ...) are rejected; the generators keep them rare.

Example count: ``PYFUSE_PBT_EXAMPLES`` (default 200 per test), e.g.
``PYFUSE_PBT_EXAMPLES=20000 python -m pytest tests/test_pbt_matcher.py``.
Running this file as a script prints generator statistics against the reference alone.
"""

from __future__ import annotations

import operator
import os
import sys
import warnings
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st
from torch import nn
from torch.fx import Graph, GraphModule, Node
from torch.nn.utils import parametrize

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torch.ao.quantization
    from torch.ao.quantization.backend_config import get_native_backend_config
    from torch.ao.quantization.backend_config.onednn import (
        get_onednn_backend_config,
    )
    from torch.ao.quantization.fx.fuse import _find_matches as _ref_find_matches
    from torch.ao.quantization.fx.fuse_handler import DefaultFuseHandler
    from torch.ao.quantization.fx.pattern_utils import _sorted_patterns_dict
    from torch.ao.quantization.utils import MatchAllNode

from pyfuse import _core
from pyfuse.engine.flatten import flatten
from pyfuse.engine.matching import Match, match_graph
from pyfuse.engine.matching import find_matches as _pf_find_matches
from pyfuse.engine.patterns import compile_patterns

_N_EXAMPLES = int(os.environ.get("PYFUSE_PBT_EXAMPLES", "200"))
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=_N_EXAMPLES,
    database=None,  # do not litter the repo with .hypothesis/
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
# applied per test (not loaded globally, so other test files keep their own settings)
ci_settings = settings(settings.get_profile("ci"))

# --------------------------------------------------------------------------------------
# vocabulary


class MyConv2d(nn.Conv2d):
    """User subclass of Conv2d: must NOT match a Conv2d pattern entry."""


class _Ident(nn.Module):
    def forward(self, x):
        return x


def _parametrized(m):
    parametrize.register_parametrization(m, "weight", _Ident())
    return m


# module kind name -> factory.  Param* kinds are parametrized (type_before_parametrizations
# gives the original class).
MODULE_KINDS = {
    "Conv1d": lambda: nn.Conv1d(1, 1, 1),
    "Conv2d": lambda: nn.Conv2d(1, 1, 1),
    "Conv3d": lambda: nn.Conv3d(1, 1, 1),
    "ConvTranspose1d": lambda: nn.ConvTranspose1d(1, 1, 1),
    "ConvTranspose2d": lambda: nn.ConvTranspose2d(1, 1, 1),
    "Linear": lambda: nn.Linear(1, 1),
    "BatchNorm1d": lambda: nn.BatchNorm1d(1),
    "BatchNorm2d": lambda: nn.BatchNorm2d(1),
    "BatchNorm3d": lambda: nn.BatchNorm3d(1),
    "ReLU": nn.ReLU,
    "LeakyReLU": nn.LeakyReLU,
    "Tanh": nn.Tanh,
    "MyConv2d": lambda: MyConv2d(1, 1, 1),
    "ParamConv2d": lambda: _parametrized(nn.Conv2d(1, 1, 1)),
    "ParamMyConv2d": lambda: _parametrized(MyConv2d(1, 1, 1)),
    "ParamLinear": lambda: _parametrized(nn.Linear(1, 1)),
}
# kinds most graphs are made of (the rest appear through pattern planting / decoys)
COMMON_KINDS = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose2d",
    "Linear",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "ReLU",
    "MyConv2d",
    "ParamConv2d",
]
# pattern type -> module kinds with exactly that type_before_parametrizations
KINDS_FOR_TYPE = {
    nn.Conv1d: ["Conv1d"],
    nn.Conv2d: ["Conv2d", "Conv2d", "ParamConv2d"],
    nn.Conv3d: ["Conv3d"],
    nn.ConvTranspose1d: ["ConvTranspose1d"],
    nn.ConvTranspose2d: ["ConvTranspose2d"],
    nn.Linear: ["Linear", "Linear", "ParamLinear"],
    nn.BatchNorm1d: ["BatchNorm1d"],
    nn.BatchNorm2d: ["BatchNorm2d"],
    nn.BatchNorm3d: ["BatchNorm3d"],
    nn.ReLU: ["ReLU"],
    nn.LeakyReLU: ["LeakyReLU"],
    nn.Tanh: ["Tanh"],
    MyConv2d: ["MyConv2d", "ParamMyConv2d"],
}
# look-alikes that must not match
DECOY_KINDS = {
    nn.Conv2d: ["MyConv2d", "ConvTranspose2d", "Conv1d"],
    nn.Conv1d: ["Conv2d"],
    nn.BatchNorm2d: ["BatchNorm1d", "BatchNorm3d"],
    nn.Linear: ["Conv1d"],
    MyConv2d: ["Conv2d", "ParamConv2d"],
}

PAT_MODULES = [
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose2d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.ReLU,
    MyConv2d,
]
PAT_FUNCTIONS = [F.relu, torch.relu, operator.add, torch.add]
PAT_METHODS = ["relu", "add", "size"]
_BINARY_HEADS = {operator.add, torch.add, "add"}

_NAMES = {
    F.relu: "F.relu",
    torch.relu: "torch.relu",
    operator.add: "operator.add",
    torch.add: "torch.add",
    getattr: "getattr",
    F.leaky_relu: "F.leaky_relu",
    torch.tanh: "torch.tanh",
    MatchAllNode: "MatchAllNode",
}


def _fmt(x):
    """Readable repr of patterns / args / node patterns."""
    if isinstance(x, Node):
        return x.name
    if isinstance(x, tuple):
        inner = ", ".join(_fmt(i) for i in x)
        return "(" + inner + ("," if len(x) == 1 else "") + ")"
    if isinstance(x, list):
        return "[" + ", ".join(_fmt(i) for i in x) + "]"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k!r}: {_fmt(v)}" for k, v in x.items()) + "}"
    try:
        if x in _NAMES:
            return _NAMES[x]
    except TypeError:
        pass
    if isinstance(x, type):
        mod = "nn." if x.__module__.startswith("torch.nn") else ""
        return mod + x.__name__
    return repr(x)


def _native_patterns():
    bc = get_native_backend_config()
    return [
        p
        for p, c in bc._pattern_complex_format_to_config.items()
        if c.fuser_method is not None
    ]


def _onednn_patterns():
    bc = get_onednn_backend_config()
    return [
        p
        for p, c in bc._pattern_complex_format_to_config.items()
        if c.fuser_method is not None
    ]


with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    NATIVE_PATTERNS = _native_patterns()
    ONEDNN_PATTERNS = _onednn_patterns()


# --------------------------------------------------------------------------------------
# cheap draw helpers (hypothesis strategy construction per draw is costly)

_INT_STRATEGIES = {}


def _int(draw, lo, hi):
    s = _INT_STRATEGIES.get((lo, hi))
    if s is None:
        s = _INT_STRATEGIES[(lo, hi)] = st.integers(lo, hi)
    return draw(s)


def _pick(draw, seq):
    seq = list(seq) if not isinstance(seq, (list, tuple)) else seq
    return seq[_int(draw, 0, len(seq) - 1)]


# --------------------------------------------------------------------------------------
# pattern strategies

_LITERAL_ENTRIES = [0, 1, 2, None, 1.5, (1, 2)]
_LITERALS = [
    0,
    1,
    2,
    3,
    -1,
    0.5,
    -1.0,
    2.0,
    "a",
    "shape",
    "relu",
    None,
    (0, 1),
    (2, 3),
    (),
]


def _gen_pattern(draw, depth=0, top=True):
    """A reversed nested tuple pattern over the shared vocabulary."""
    r = _int(draw, 0, 99)
    if not top and r < 14:
        return MatchAllNode
    if not top and r < 16:
        return _pick(draw, _LITERAL_ENTRIES)  # literal entry (rare)
    if r < 19:
        return (getattr, _pick(draw, ["shape", "shape", "dtype"]))
    kind = _int(draw, 0, 9)
    if kind < 6:
        head = _pick(draw, PAT_MODULES)
    elif kind < 9:
        head = _pick(draw, PAT_FUNCTIONS)
    else:
        head = _pick(draw, PAT_METHODS)
    if top and _int(draw, 0, 19) == 0:
        head = MatchAllNode  # (MatchAllNode, ...) at the top: very rare
    if depth >= 3 or _int(draw, 0, 4) == 0:
        # leaf: bare entry
        if top and _int(draw, 0, 1) == 1:
            return (head,)
        return head
    if _int(draw, 0, 4) == 0:
        n_args = _int(draw, 0, 3)
    else:
        n_args = 2 if head in _BINARY_HEADS else 1
    args = tuple(_gen_pattern(draw, depth + 1, top=False) for _ in range(n_args))
    return (head, *args)


_SWAPS = {
    nn.ReLU: [F.relu, torch.relu, "relu"],
    F.relu: [nn.ReLU, torch.relu],
    torch.relu: [F.relu, "relu"],
    operator.add: [torch.add, "add"],
    torch.add: [operator.add, "add"],
    "add": [operator.add],
    nn.Conv2d: [MyConv2d, nn.ConvTranspose2d],
    MyConv2d: [nn.Conv2d],
}


def _variant(draw, p):
    """Same-length variant of p: one entry replaced by MatchAllNode or a look-alike."""
    if not isinstance(p, tuple) or len(p) < 2:
        alts = _SWAPS.get(p) if not isinstance(p, tuple) else None
        return _pick(draw, alts) if alts else p
    i = _int(draw, 0, len(p) - 1)
    e = p[i]
    if isinstance(e, tuple) and e and e[0] is not getattr:
        new = _variant(draw, e)
    elif i > 0 and _int(draw, 0, 1) == 0:
        new = MatchAllNode
    else:
        alts = _SWAPS.get(e) if not isinstance(e, tuple) else None
        new = _pick(draw, alts) if alts else MatchAllNode if i > 0 else e
    return (*p[:i], new, *p[i + 1 :])


@st.composite
def random_patterns(draw):
    return _gen_pattern(draw)


@st.composite
def pattern_lists(draw):
    """A list of distinct patterns (dict-deduplicated, like a backend config), unsorted."""
    source = _pick(draw, ["native", "onednn", "random", "mixed", "mixed"])
    pats = []
    if source in ("native", "mixed"):
        pats += [_pick(draw, NATIVE_PATTERNS) for _ in range(_int(draw, 0, 12))]
    if source in ("onednn", "mixed"):
        pats += [_pick(draw, ONEDNN_PATTERNS) for _ in range(_int(draw, 0, 12))]
    if source in ("random", "mixed"):
        pats += [
            _gen_pattern(draw)
            for _ in range(_int(draw, 0 if source == "mixed" else 1, 8))
        ]
    if source == "native" and _int(draw, 0, 3) == 0:
        pats = list(NATIVE_PATTERNS)
    if not pats:
        pats = [_pick(draw, NATIVE_PATTERNS)]
    # same-length overlapping variants, so that the order of ties matters
    for _ in range(_int(draw, 0, 4) // 2 * _int(draw, 1, 3)):
        pats.append(_variant(draw, _pick(draw, pats)))
    pats = list(dict.fromkeys(pats))
    # shuffle (ties in the priority sort keep this order)
    for i in range(len(pats) - 1, 0, -1):
        j = _int(draw, 0, i)
        pats[i], pats[j] = pats[j], pats[i]
    return pats


def sort_patterns(pats):
    """Priority order exactly as the reference computes it."""
    return _sorted_patterns_dict(dict.fromkeys(pats, DefaultFuseHandler))


# --------------------------------------------------------------------------------------
# graph strategy


class Scenario:
    def __init__(self, gm, patterns, plan):
        self.gm = gm
        self.patterns = patterns  # unsorted list
        self.plan = plan  # module path -> kind (aliases marked)

    def node_table(self):
        rows = []
        for n in self.gm.graph.nodes:
            tgt = n.target if isinstance(n.target, str) else _fmt(n.target)
            rows.append(
                f"  {n.op:<13} {n.name:<16} {tgt!s:<16} args={_fmt(n.args)}"
                + (f" kwargs={_fmt(n.kwargs)}" if n.kwargs else "")
                + f" users={[u.name for u in n.users]}"
            )
        return "\n".join(rows)

    def __repr__(self):
        pats = ",\n  ".join(_fmt(p) for p in sort_patterns(self.patterns))
        return (
            f"Scenario(\n modules={self.plan}\n graph (opcode name target args users):\n"
            f"{self.node_table()}\n sorted patterns=[\n  {pats}]\n)"
        )


@st.composite
def scenarios(draw, max_ops=24):
    patterns = draw(pattern_lists())
    plan = {}  # path -> kind or ("alias", other_path)
    counter = [0]
    allow_alias = _int(draw, 0, 39) == 0
    aliased = []

    def new_path(kind):
        i = counter[0]
        counter[0] += 1
        prefix = _pick(draw, ["", "", "", "b0.", "b1.", "b0.c0."])
        path = f"{prefix}m{i}"
        if allow_alias and not aliased and plan and _int(draw, 0, 4) == 0:
            aliased.append(path)
            # same instance registered under a second name: named_modules() hides it
            other = _pick(
                draw, sorted(p for p, k in plan.items() if isinstance(k, str))
            )
            plan[path] = ("alias", other)
        else:
            plan[path] = kind
        return path

    def path_for_kind(kind):
        existing = [p for p, k in plan.items() if k == kind]
        if existing and _int(draw, 0, 2) > 0:
            return _pick(draw, existing)  # same target called again
        return new_path(kind)

    def path_for_type(t):
        if t in DECOY_KINDS and _int(draw, 0, 9) == 0:
            return path_for_kind(_pick(draw, DECOY_KINDS[t]))
        kinds = KINDS_FOR_TYPE.get(t)
        if kinds is None:
            return path_for_kind(_pick(draw, COMMON_KINDS))
        return path_for_kind(_pick(draw, kinds))

    g = Graph()
    vals = [g.placeholder(f"x{i}") for i in range(_int(draw, 1, 3))]
    has_get_attr_target = []

    def pick():
        r = _int(draw, 0, 9)
        if r < 5:
            return vals[-1]
        if r < 8:
            return vals[-min(len(vals), _int(draw, 1, 3))]
        return vals[_int(draw, 0, len(vals) - 1)]

    def literal():
        return _pick(draw, _LITERALS)

    def maybe_literal_arg():
        # literal args mixed with node args (kept rare in binary ops: a pattern position
        # reaching a literal makes the reference raise)
        return literal() if _int(draw, 0, 14) == 0 else pick()

    def add(node):
        vals.append(node)
        return node

    def random_op():
        k = _int(draw, 0, 99)
        if k < 30:
            path = (
                _pick(draw, sorted(plan))
                if plan and _int(draw, 0, 1) == 1
                else new_path(_pick(draw, COMMON_KINDS))
            )
            v = _int(draw, 0, 19)
            if v == 0:
                return add(g.call_module(path, (pick(), pick())))
            if v == 1:
                return add(g.call_module(path, (pick(), literal())))
            if v == 2:
                return add(g.call_module(path, (), {"input": pick()}))
            return add(g.call_module(path, (pick(),)))
        if k < 42:
            v = _int(draw, 0, 9)
            if v == 0:
                return add(g.call_function(F.relu, (pick(),), {"inplace": False}))
            if v == 1:
                return add(g.call_function(F.relu, (pick(), False)))
            return add(g.call_function(F.relu, (pick(),)))
        if k < 48:
            return add(g.call_function(torch.relu, (pick(),)))
        if k < 56:
            return add(g.call_function(operator.add, (pick(), maybe_literal_arg())))
        if k < 62:
            v = _int(draw, 0, 29)
            if v == 0:
                return add(g.call_function(torch.add, (pick(), pick()), {"alpha": 2}))
            if v == 1:
                return add(g.call_function(torch.add, (pick(),), {"other": pick()}))
            if v == 2:
                return add(
                    g.call_function(torch.add, ((pick(), 1), pick()))
                )  # tuple literal holding a node
            if v in (3, 4):
                return add(g.call_function(torch.add, (pick(), pick()), {"alpha": 2}))
            if v == 5:
                return add(g.call_function(torch.add, (pick(),), {"other": pick()}))
            return add(g.call_function(torch.add, (pick(), maybe_literal_arg())))
        if k < 67:
            name = _pick(draw, ["shape", "shape", "dtype"])
            return add(g.call_function(getattr, (pick(), name)))
        if k < 72:
            return add(g.call_method("relu", (pick(),)))
        if k < 77:
            return add(g.call_method("add", (pick(), maybe_literal_arg())))
        if k < 82:
            if _int(draw, 0, 1) == 1:
                return add(g.call_method("size", (pick(), _int(draw, 0, 2))))
            return add(g.call_method("size", (pick(),)))
        if k < 86:
            v = _int(draw, 0, 3)
            if v == 0 and plan:
                target = _pick(draw, sorted(plan))  # a module as an attribute
            elif v == 1:
                target = "p"
            else:
                target = "buf"
            has_get_attr_target.append(target)
            return add(g.get_attr(target))
        if k < 89:
            return add(g.call_function(F.leaky_relu, (pick(),)))
        if k < 92:
            return add(g.call_function(torch.tanh, (pick(),)))
        # plain module call with a fresh decoy
        return add(
            g.call_module(
                new_path(
                    _pick(
                        draw,
                        [
                            "MyConv2d",
                            "ParamMyConv2d",
                            "ParamLinear",
                            "LeakyReLU",
                            "Tanh",
                            "ConvTranspose1d",
                        ],
                    )
                ),
                (pick(),),
            )
        )

    def head_node(head, args):
        if isinstance(head, type) and issubclass(head, nn.Module):
            if not args:
                args = [pick()]
            return add(g.call_module(path_for_type(head), tuple(args)))
        if isinstance(head, str):
            if not args or not isinstance(args[0], Node):
                args = [pick(), *args[1:]]  # `self` of a method call must be a node
            return add(g.call_method(head, tuple(args)))
        if callable(head) and not (
            isinstance(head, type) and issubclass(head, MatchAllNode)
        ):
            if not args:
                args = [pick()]
            if head is operator.add:  # FX codegen of `a + b` needs two operands
                while len(args) < 2:
                    args.append(pick())
            return add(g.call_function(head, tuple(args)))
        return random_op()

    def plant(p, depth=0):
        """Instantiate pattern p (roughly) as nodes; returns the node / value for p."""
        if isinstance(p, type) and issubclass(p, MatchAllNode):
            return maybe_literal_arg() if _int(draw, 0, 4) == 0 else pick()
        if isinstance(p, tuple):
            head, *subs = p
            if head is getattr:
                name = (
                    subs[0] if len(subs) == 1 and isinstance(subs[0], str) else "shape"
                )
                return add(g.call_function(getattr, (pick(), name)))
            if _int(draw, 0, 19) == 0 and subs:  # perturb arity
                subs = subs[:-1] if _int(draw, 0, 1) == 1 else [*subs, subs[-1]]
            args = []
            for s in subs:
                if _int(draw, 0, 14) == 0:
                    args.append(pick())  # break the chain here
                else:
                    args.append(plant(s, depth + 1))
            return head_node(head, args)
        if isinstance(p, type) or callable(p) or isinstance(p, str):
            return head_node(p, [])
        return p  # literal entry: used as the literal argument

    n_ops = _int(draw, 1, max_ops)
    for _ in range(n_ops):
        if patterns and _int(draw, 0, 99) < 40:
            v = plant(_pick(draw, patterns))
            if not isinstance(v, Node):
                random_op()
        else:
            random_op()

    outs = [vals[-1]]
    for _ in range(_int(draw, 0, 2)):
        outs.append(pick())
    g.output(outs[0] if len(outs) == 1 else tuple(outs))

    root = nn.Module()
    root.register_buffer("buf", torch.zeros(1))
    root.p = nn.Parameter(torch.zeros(1))
    instances = {}
    for path, kind in plan.items():
        *prefix, field = path.split(".")
        parent = root
        for item in prefix:
            if not hasattr(parent, item):
                setattr(parent, item, nn.Module())
            parent = getattr(parent, item)
        m = instances[kind[1]] if isinstance(kind, tuple) else MODULE_KINDS[kind]()
        instances[path] = m
        setattr(parent, field, m)
    gm = GraphModule(root, g)
    gm.graph.lint()  # generated graphs must be valid FX graphs
    return Scenario(gm, patterns, plan)


# --------------------------------------------------------------------------------------
# comparison helpers


class RefRaised(Exception):
    pass


def run_reference(gm, sorted_dict):
    try:
        res = _ref_find_matches(gm, gm.graph, sorted_dict)
    except (AttributeError, KeyError, TypeError, AssertionError, IndexError) as e:
        raise RefRaised(f"{type(e).__name__}: {e}") from e
    return {k: v[:3] for k, v in res.items()}


def same(a, b):
    """Structure-exact equality: Nodes by identity, list vs tuple distinguished."""
    if isinstance(a, Node) or isinstance(b, Node):
        return a is b
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=False))
    return a == b


def diff_results(ref, got):
    """Returns a list of human-readable differences ([] if equal)."""
    out = []
    if not isinstance(got, dict):
        return [f"pyfuse returned {type(got).__name__}, not dict"]
    if set(ref) != set(got):
        out.append(
            f"key sets differ: only reference={sorted(set(ref) - set(got))} "
            f"only pyfuse={sorted(set(got) - set(ref))}"
        )
    for k in ref:
        if k not in got:
            continue
        rv, gv = ref[k], got[k]
        if not isinstance(gv, tuple) or len(gv) != 3:
            out.append(f"[{k}] pyfuse value is not a 3-tuple: {gv!r}")
            continue
        names = ("root_node", "pattern", "matched_node_pattern")
        for i in range(3):
            if not same(rv[i], gv[i]):
                out.append(
                    f"[{k}] {names[i]}: reference={_fmt(rv[i])} pyfuse={_fmt(gv[i])}"
                )
    return out


def fmt_result(res):
    return (
        "{\n"
        + "".join(
            f"  {k!r}: (root={v[0].name}, pattern={_fmt(v[1])}, nodes={_fmt(v[2])})\n"
            for k, v in res.items()
        )
        + "}"
    )


def _graph_fingerprint(graph):
    return [
        (n.op, n.name, n.target, tuple(n.args), tuple(n.kwargs.items()), tuple(n.users))
        for n in graph.nodes
    ]


def check_against_reference(sc, patterns):
    """Core differential check for one (graph, pattern order). Returns the ref result."""
    sorted_dict = sort_patterns(patterns)
    gm = sc.gm
    try:
        ref = run_reference(gm, sorted_dict)
    except RefRaised as e:
        # reference defect / invalid model: no comparison (recorded for the statistics)
        kind = str(e).split(":")[0]
        try:
            _pf_find_matches(gm, gm.graph, list(sorted_dict))
            outcome = "pyfuse returned normally"
        except Exception as pe:  # noqa: BLE001 - informational only
            outcome = f"pyfuse raised {type(pe).__name__}"
        event(f"reference raised {kind}; {outcome}")
        assume(False)
    got = _pf_find_matches(gm, gm.graph, list(sorted_dict))
    diffs = diff_results(ref, got)
    if diffs:
        note(repr(sc))
        note("reference = " + fmt_result(ref))
        note("pyfuse    = " + (fmt_result(got) if isinstance(got, dict) else repr(got)))
    assert not diffs, "\n".join(diffs)
    event("matches: 0" if not ref else "matches: >=1")
    return ref


# --------------------------------------------------------------------------------------
# properties


@ci_settings
@given(scenarios())
def test_matches_equal_reference(sc):
    check_against_reference(sc, sc.patterns)


@ci_settings
@given(scenarios())
def test_find_matches_deterministic(sc):
    gm = sc.gm
    pats = list(sort_patterns(sc.patterns))
    before = _graph_fingerprint(gm.graph)
    try:
        first = _pf_find_matches(gm, gm.graph, pats)
    except Exception as e:  # noqa: BLE001 - a failure must be deterministic too
        with pytest.raises(type(e)):
            _pf_find_matches(gm, gm.graph, pats)
        assert _graph_fingerprint(gm.graph) == before
        return
    second = _pf_find_matches(gm, gm.graph, pats)
    assert list(first) == list(second)
    for k in first:
        assert len(first[k]) == len(second[k])
        for a, b in zip(first[k], second[k], strict=False):
            assert same(a, b), f"[{k}] {_fmt(a)} != {_fmt(b)}"
    assert _graph_fingerprint(gm.graph) == before, "find_matches mutated the graph"


@ci_settings
@given(scenarios(), st.data())
def test_pattern_order_same_effect(sc, data):
    perm = data.draw(st.permutations(sc.patterns), label="permuted patterns")
    ref_a = check_against_reference(sc, sc.patterns)
    ref_b = check_against_reference(sc, perm)
    if set(ref_a) != set(ref_b) or any(
        not same(ref_a[k], ref_b[k]) for k in ref_a if k in ref_b
    ):
        event("order changed the reference result")


# --------------------------------------------------------------------------------------
# hand-written regressions


def _gm(build, mods):
    root = nn.Module()
    for path, m in mods.items():
        setattr(root, path, m)
    g = Graph()
    build(g)
    return GraphModule(root, g)


def _compare(gm, patterns):
    sorted_dict = sort_patterns(patterns)
    ref = run_reference(gm, sorted_dict)
    if _pf_find_matches is not None:
        got = _pf_find_matches(gm, gm.graph, list(sorted_dict))
        diffs = diff_results(ref, got)
        assert not diffs, (
            "\n".join(diffs)
            + "\nreference="
            + fmt_result(ref)
            + "\npyfuse="
            + fmt_result(got)
        )
    return ref


def _nodes(gm):
    return {n.name: n for n in gm.graph.nodes}


ADD_CONV_BN = (operator.add, (nn.BatchNorm2d, nn.Conv2d), MatchAllNode)


def _pf_required():
    """(pyfuse's matcher is imported at the top: a missing build fails the module)"""


def test_regression_same_relu_twice_in_one_add():
    _pf_required()

    def build(g):
        x = g.placeholder("x")
        c = g.call_module("conv", (x,))
        r = g.call_module("relu", (c,))
        a = g.call_function(operator.add, (r, r))
        g.output(a)

    mods = {"conv": nn.Conv2d(1, 1, 1), "relu": nn.ReLU()}
    # the relu node is one user-edge of add: max_uses=1 holds; the second occurrence of an
    # already-claimed node is dropped from the node pattern (here: an empty tuple)
    gm = _gm(build, mods)
    n = _nodes(gm)
    ref = _compare(gm, [(operator.add, (nn.ReLU, nn.Conv2d), (nn.ReLU, nn.Conv2d))])
    assert same(ref["add"][2], [n["add"], (n["relu"], n["conv"]), ()])
    gm = _gm(build, mods)
    n = _nodes(gm)
    ref = _compare(gm, [(operator.add, nn.ReLU, nn.ReLU), (nn.ReLU, nn.Conv2d)])
    assert same(ref["add"][2], [n["add"], n["relu"]])
    assert "conv" not in ref
    ref = _compare(_gm(build, mods), list(NATIVE_PATTERNS))
    assert set(ref) == {"relu", "conv"}
    _compare(_gm(build, mods), list(ONEDNN_PATTERNS))


def test_regression_conv_with_two_users_breaks_chain():
    _pf_required()

    def build(g):
        x = g.placeholder("x")
        c = g.call_module("conv", (x,))
        b = g.call_module("bn", (c,))
        r = g.call_function(F.relu, (b,))
        g.output((r, c))

    gm = _gm(build, {"conv": nn.Conv2d(1, 1, 1), "bn": nn.BatchNorm2d(1)})
    ref = _compare(gm, list(NATIVE_PATTERNS))
    assert set(ref) == {"relu", "bn"}  # (F.relu, BatchNorm2d); conv left alone
    assert ref["relu"][1] == (F.relu, nn.BatchNorm2d)


def test_regression_subclass_does_not_match_parametrized_does():
    _pf_required()

    def build(g):
        x = g.placeholder("x")
        c1 = g.call_module("sub", (x,))
        r1 = g.call_module("relu", (c1,))
        c2 = g.call_module("par", (r1,))
        b2 = g.call_module("bn", (c2,))
        r2 = g.call_module("relu", (b2,))
        g.output(r2)

    mods = {
        "sub": MyConv2d(1, 1, 1),
        "relu": nn.ReLU(),
        "par": _parametrized(nn.Conv2d(1, 1, 1)),
        "bn": nn.BatchNorm2d(1),
    }
    ref = _compare(_gm(build, mods), list(NATIVE_PATTERNS))
    assert set(ref) == {"relu_1", "bn", "par"}
    # a parametrized subclass matches its own (user) class only
    mods["sub"] = _parametrized(MyConv2d(1, 1, 1))
    ref = _compare(_gm(build, mods), [(nn.ReLU, MyConv2d), (nn.ReLU, nn.Conv2d)])
    assert ref["relu"][1] == (nn.ReLU, MyConv2d)


def test_regression_same_module_called_twice():
    _pf_required()

    def build(g):
        x = g.placeholder("x")
        c1 = g.call_module("conv", (x,))
        b = g.call_module("bn", (c1,))
        c2 = g.call_module("conv", (b,))
        r = g.call_function(torch.relu, (c2,))
        r2 = g.call_method("relu", (r,))
        g.output(r2)

    mods = {"conv": nn.Conv2d(1, 1, 1), "bn": nn.BatchNorm2d(1)}
    ref = _compare(_gm(build, mods), [*list(NATIVE_PATTERNS), (torch.relu, nn.Conv2d)])
    assert set(ref) == {"relu", "conv_1", "bn", "conv"}
    ref = _compare(
        _gm(build, mods),
        [*list(NATIVE_PATTERNS), (torch.relu, nn.Conv2d), ("relu", torch.relu)],
    )
    assert set(ref) == {"relu_1", "relu", "bn", "conv"}  # conv_1 left alone


def test_regression_getattr_pattern_claims_its_input():
    _pf_required()

    def build(g):
        x = g.placeholder("x")
        c = g.call_module("conv", (x,))
        r = g.call_module("relu", (c,))
        s = g.call_function(getattr, (r, "shape"))
        d = g.call_function(getattr, (r, "dtype"))
        g.output((s, d))

    mods = {"conv": nn.Conv2d(1, 1, 1), "relu": nn.ReLU()}
    gm = _gm(build, mods)
    n = _nodes(gm)
    ref = _compare(gm, [(getattr, "shape"), (nn.ReLU, nn.Conv2d)])
    # the getattr pattern's "shape" entry is applied to node.args[0]: the relu (2 users)
    # is claimed, so (ReLU, Conv2d) never gets to start at it
    assert set(ref) == {"getattr_1", "relu"}
    assert ref["relu"][1] == (getattr, "shape")
    assert same(ref["relu"][2], [n["getattr_1"], n["relu"]])
    ref = _compare(
        _gm(build, mods), [(getattr, "dtype"), (getattr, "shape"), (nn.ReLU, nn.Conv2d)]
    )
    assert set(ref) == {"getattr_1", "getattr_2", "relu"}
    _compare(_gm(build, mods), [(nn.ReLU, nn.Conv2d), (getattr, "dtype")])


def test_regression_matchall_repeated_and_already_claimed():
    _pf_required()

    def build(g):
        x = g.placeholder("x")
        c = g.call_module("conv", (x,))
        r = g.call_module("relu", (c,))
        a = g.call_function(operator.add, (r, c))
        c2 = g.call_module("conv2", (a,))
        s = g.call_function(getattr, (c2, "shape"))
        a2 = g.call_function(torch.add, (c2, c2))
        g.output((a2, s))

    mods = {"conv": nn.Conv2d(1, 1, 1), "relu": nn.ReLU(), "conv2": nn.Conv2d(1, 1, 1)}
    pats = [
        (torch.add, MatchAllNode, MatchAllNode),
        (getattr, "shape"),
        (operator.add, (nn.ReLU, MatchAllNode), MatchAllNode),
    ]
    gm = _gm(build, mods)
    n = _nodes(gm)
    ref = _compare(gm, pats)
    assert same(ref["add"][2], [n["add"], (n["relu"], n["conv"]), n["conv"]])
    _compare(_gm(build, mods), list(ONEDNN_PATTERNS))


def test_regression_kwargs_ignored_and_arity():
    _pf_required()

    def build(g):
        x = g.placeholder("x")
        y = g.placeholder("y")
        c = g.call_module("conv", (x,))
        r = g.call_function(F.relu, (c,), {"inplace": False})
        c2 = g.call_module("conv2", (r,))
        a = g.call_function(torch.add, (c2,), {"other": y})
        g.output(a)

    mods = {"conv": nn.Conv2d(1, 1, 1), "conv2": nn.Conv2d(1, 1, 1)}
    ref = _compare(_gm(build, mods), [*list(ONEDNN_PATTERNS), (torch.add, nn.Conv2d)])
    assert ref["add"][1] == (torch.add, nn.Conv2d)
    assert ref["relu"][1] == (F.relu, nn.Conv2d)


@pytest.mark.parametrize("first", [0, 1])
def test_regression_tie_order(first):
    _pf_required()

    def build(g):
        x = g.placeholder("x")
        c = g.call_module("conv", (x,))
        r = g.call_function(F.relu, (c,))
        g.output(r)

    pats = [(F.relu, MatchAllNode), (F.relu, nn.Conv2d)]
    if first:
        pats.reverse()
    ref = _compare(_gm(build, {"conv": nn.Conv2d(1, 1, 1)}), pats)
    assert ref["relu"][1] == pats[0]


# --------------------------------------------------------------------------------------
# C++ core, directly: pyfuse._core (stubs in pyfuse/_core.pyi; encoding and contracts in
# csrc/core/automaton.hpp). Two kinds of checks:
#   * differential: graphs and patterns encoded into the documented integer arrays by an
#     encoder written here from that documentation (not pyfuse's), matched by
#     Automaton.match, compared with the reference's claims, roots, patterns and claim
#     order (match_map insertion order);
#   * robustness: the documented contract "Automaton(...) throws std::invalid_argument
#     (ValueError) on malformed input" and "match never throws for bad graph input: it
#     reports it in the result", on random (often malformed) arrays. A native crash
#     would take the test session down, so those run in a child process.


_H_MATCH_ALL, _H_LABEL, _H_NEVER, _H_GETATTR = 0, 1, 2, 3  # automaton.hpp `Head`
_K_MISSING_MODULE = -1


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
        return -1 if sid is None else -(sid + 2)

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


def _ref_match_map(gm, sorted_dict):
    try:
        return _ref_find_matches(gm, gm.graph, sorted_dict)
    except (AttributeError, KeyError, TypeError, AssertionError, IndexError) as e:
        raise RefRaised(f"{type(e).__name__}: {e}") from e


@ci_settings
@given(scenarios())
def test_core_automaton_equals_reference(sc):
    sorted_dict = sort_patterns(sc.patterns)
    pats = list(sorted_dict)
    enc = _DocEncoder(pats)
    nodes, flat = enc.graph(sc.gm)
    res = enc.automaton().match(flat)
    try:
        ref = _ref_match_map(sc.gm, sorted_dict)
    except RefRaised as e:
        kind = str(e).split(":")[0]
        # the core reports a missing module exactly where the reference raises KeyError
        if kind == "KeyError" and res.error:
            assert res.missing_module, res.error
        event(f"reference raised {kind}; core error={bool(res.error)}")
        assume(False)
    assert res.error == "", res.error
    note(repr(sc))
    note("reference = " + fmt_result({k: v[:3] for k, v in ref.items()}))
    note(
        f"core: roots={res.roots} patterns={res.patterns} claimed={res.claimed} "
        f"claimed_off={res.claimed_off} owner={res.owner}"
    )
    # claim order == the reference's match_map insertion order
    assert [nodes[i].name for i in res.claimed] == list(ref)
    assert len(res.claimed_off) == len(res.roots) + 1 == len(res.patterns) + 1
    for m, (r, k) in enumerate(zip(res.roots, res.patterns, strict=True)):
        for i in res.claimed[res.claimed_off[m] : res.claimed_off[m + 1]]:
            name = nodes[i].name
            assert res.owner[i] == m
            assert ref[name][0] is nodes[r], name
            assert same(ref[name][1], pats[k]), name
    assert sum(o >= 0 for o in res.owner) == len(ref)


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
                arg.append(-(_int(draw, -1, n_sub - 1) + 2))  # literal code (or -1)
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
    import subprocess

    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_core_contract_on_malformed_arrays():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        state = Path(d) / "case.txt"
        p = _run_core_child(["--core-fuzz", str(_N_EXAMPLES), str(state)])
        last = state.read_text() if state.exists() else "<none>"
    assert p.returncode == 0, (
        f"core fuzz child exited with {p.returncode} (negative = killed by signal)\n"
        f"last case (auto, graph, exclude) = {last}\n--- stderr tail ---\n{p.stderr[-3000:]}"
    )


_CORE_CRASH_SNIPPETS = {
    # child_off not monotone, first slice larger than `child` (empty)
    "automaton_child_off": (
        "from pyfuse import _core\n"
        "try:\n"
        "    _core.Automaton([0, 0], [0, 0], [0, 0], [0, 5, 0], [], [], [], 0)\n"
        "    print('constructed')\n"
        "except ValueError as e:\n"
        "    print('ValueError', e)\n"
    ),
    # arg_off not monotone, first slice larger than `arg` (empty)
    "match_arg_off": (
        "from pyfuse import _core\n"
        "a = _core.Automaton([1], [0], [0], [0, 0], [], [0], [0], 1)\n"
        "r = a.match(_core.FlatGraph([0, 0], [0, 0], [0, 5, 0], []))\n"
        "assert r.error, 'malformed graph accepted'\n"
        "print('error:', r.error)\n"
    ),
}


@pytest.mark.parametrize("case", sorted(_CORE_CRASH_SNIPPETS))
def test_core_regression_nonmonotone_offsets(case):
    import subprocess

    p = subprocess.run(
        [sys.executable, "-c", _CORE_CRASH_SNIPPETS[case]],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, (
        f"exit code {p.returncode} (-11 = SIGSEGV)\n{_CORE_CRASH_SNIPPETS[case]}\n{p.stderr[-2000:]}"
    )
    assert "constructed" not in p.stdout  # the documented contract: ValueError


# --------------------------------------------------------------------------------------
# development statistics: python tests/test_pbt_matcher.py [N]

if __name__ == "__main__" and sys.argv[1:2] == ["--core-fuzz"]:
    _core_fuzz_main(int(sys.argv[2]), sys.argv[3])
elif __name__ == "__main__":
    import collections
    import time

    N = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    stats = collections.Counter()
    sizes = []

    @settings(
        max_examples=N,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(scenarios(), st.data())
    def _collect(sc, data):
        stats["examples"] += 1
        sizes.append(len(sc.gm.graph.nodes))
        sd = sort_patterns(sc.patterns)
        try:
            ref = run_reference(sc.gm, sd)
        except RefRaised as e:
            stats["ref raised " + str(e).split(":")[0]] += 1
            return
        stats["ref ok"] += 1
        if ref:
            stats[">=1 match"] += 1
        stats["matched keys total"] += len(ref)
        stats["matches (roots)"] += sum(1 for k, v in ref.items() if v[0].name == k)
        perm = data.draw(st.permutations(sc.patterns))
        try:
            ref2 = run_reference(sc.gm, sort_patterns(perm))
        except RefRaised:
            return
        if set(ref) != set(ref2) or any(
            not same(ref[k], ref2[k]) for k in ref if k in ref2
        ):
            stats["order changed result"] += 1

    t = time.time()
    _collect()
    dt = time.time() - t
    print(
        f"{N} examples in {dt:.1f}s; nodes mean {sum(sizes) / len(sizes):.1f} max {max(sizes)}"
    )
    for k, v in sorted(stats.items()):
        print(f"  {k:<40} {v}")


@ci_settings
@given(scenarios())
def test_plain_match_records_equal_the_walk(sc):
    """A plain match's node pattern, built from the pattern's compiled shape, equals
    the reference walk's record (which `find_matches` compares with the reference)."""
    compiled = compile_patterns(list(sort_patterns(sc.patterns)))
    try:
        matches = match_graph(compiled, flatten(sc.gm.graph, sc.gm, compiled))
    except Exception:  # noqa: BLE001 - errors are compared by the other properties
        assume(False)
    plain = [m for m in matches if m.plain]
    event(f"plain matches: {'>=1' if plain else 0}")
    for m in plain:
        built = m.node_pattern
        replay = Match(m._walk, m.index, m.last, m.pattern, m.pattern_index, m.ids, m.claimed, m.shape)
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
