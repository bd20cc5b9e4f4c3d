"""Random FX graphs and pattern sets for the matcher fuzzers.

Graphs are built directly with the ``torch.fx.Graph`` API (no tracing) over a random
module tree (sometimes with a module registered under a second, alias path that
``named_modules()`` hides), and matched against random pattern sets (subsets of the
native / onednn backend fusion patterns plus randomly generated reversed-nested-tuple
patterns). The strategy is :func:`scenarios`; :func:`sort_patterns` gives the
reference's priority order; :func:`same` / :func:`diff_results` compare match maps
structure-exactly.
"""

from __future__ import annotations

import operator
import warnings

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn
from torch.fx import Graph, GraphModule, Node
from torch.nn.utils import parametrize

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch.ao.quantization.backend_config import get_native_backend_config
    from torch.ao.quantization.backend_config.onednn import (
        get_onednn_backend_config,
    )
    from torch.ao.quantization.fx.fuse_handler import DefaultFuseHandler
    from torch.ao.quantization.fx.pattern_utils import _sorted_patterns_dict
    from torch.ao.quantization.utils import MatchAllNode

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
# comparing match maps


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
