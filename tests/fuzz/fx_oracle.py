"""The fused-output fuzzer's oracle: for one generated case, the one outcome that is
right, and a check that pyfuse produced exactly it.

The right outcome is what the fixed reference (:mod:`tests.fuzz.fixed_reference`:
torch's own pass, pinned, with the documented defects fixed) produces, where
additionally a match whose fusion would change another use of its module is left
out of the walk (the walk then tries the next pattern at that node, as pyfuse's
exclusion does), until no such match is left: a module called at several sites
that do not all fuse the same way, a module inside a called module, a module whose
attributes a get_attr reads, a root node the match does not claim that is read
elsewhere or removed by another match (README "Differences" rows 1, 2, 7). These
checks apply when every match can be prepared (getters, module lookup, fuser
lookup) and no node left in the graph reads a node a match removes; otherwise the
pass fails with the error the walk meets, and nothing is left out.

Then, per case, exactly one of:

- the fixed reference returns: pyfuse returns a model passing the full exactness
  contract against it (code, nodes, module tree and types, bit-identical state,
  flags, outputs), and its report lists exactly the left-out matches (by their
  nodes), each with a reason naming the module path or the root node;
- the fixed reference raises: pyfuse raises the same exception type, or one of the
  documented pyfuse subclasses named in :data:`DOCUMENTED_SUBCLASSES`.

Anything else fails the case. Before that, pyfuse's matcher must return torch's
walk exactly (property 1), and so must the fixed walk with nothing excluded.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import warnings

import torch
import torch.fx
import torch.nn.functional as F
from hypothesis import event, note
from hypothesis.errors import InvalidArgument
from torch import nn
from torch.fx import Node
from torch.nn.utils import parametrize
from torch.utils._pytree import tree_flatten

from tests.fuzz.fixed_reference import (
    REFERENCE_FIND_MATCHES,
    Fixes,
    is_literal_crash,
    run_fixed,
    walk,
)
from tests.fuzz.fx_models import trace
from tests.fuzz.graphs import same
from tests.support.contract import (
    REFERENCE_FUSE,
    assert_same_fusion,
    objects_of,
    shared_with,
    single_thread,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch.ao.quantization.backend_config.utils import (
        get_fuser_method_mapping,
        get_fusion_pattern_to_extra_inputs_getter,
        get_fusion_pattern_to_root_node_getter,
    )
    from torch.ao.quantization.fuser_method_mappings import get_fuser_method_new
    from torch.ao.quantization.fx.fuse_handler import (
        _get_fusion_pattern_to_fuse_handler_cls,
    )
    from torch.ao.quantization.fx.pattern_utils import _sorted_patterns_dict
    from torch.ao.quantization.utils import MatchAllNode

import pyfuse
from pyfuse.engine.matching import find_matches as pyfuse_find_matches
from pyfuse.errors import ErasedInput, NotAModule

#: pyfuse exceptions accepted where the right outcome is the exact type on the left
#: (both documented in RELIABILITY.md: a FusionError that is also the reference's type)
DOCUMENTED_SUBCLASSES: dict[type, tuple[type, ...]] = {
    KeyError: (ErasedInput,),  # the fused node would read a node a fusion removes
    TypeError: (NotAModule,),  # a fuser method returned something not a Module
}


def _note(msg):
    """hypothesis.note, also usable outside a hypothesis test (the hand-made cases)."""
    with contextlib.suppress(InvalidArgument):
        note(msg)


def _event(msg):
    with contextlib.suppress(InvalidArgument):
        event(msg)


# --------------------------------------------------------------------------------------
# which matches the fixed reference leaves out


class _Fusing:
    """One match the walk would fuse (its last node is matched by the pattern head)."""

    def __init__(self, last, pattern, node_pattern, claimed):
        self.last = last
        self.pattern = pattern
        self.node_pattern = node_pattern
        self.claimed = claimed
        self.root = None
        self.extra = []

    @property
    def key(self):
        return (self.last, self.pattern)


def _default_root(node_pattern):
    while not isinstance(node_pattern[-1], Node):
        node_pattern = node_pattern[-1]
    return node_pattern[-1]


def _fusing_matches(gm, matches):
    """The matches the reference fuses, in graph order of their last nodes."""
    claims: dict[Node, list[Node]] = collections.defaultdict(list)
    by_name = {n.name: n for n in gm.graph.nodes}
    for name, entry in matches.items():
        claims[entry[0]].append(by_name[name])
    out = []
    for n in gm.graph.nodes:
        entry = matches.get(n.name)
        if entry is not None and entry[0] is n:
            out.append(_Fusing(n, entry[1], entry[2], claims[n]))
    return out


def _fails_before_fusing(gm, backend_config, matches, fusing):
    """Whether the pass fails before the fusers are called: a match that cannot be
    prepared (getter, module lookup, fuser lookup), or a node left in the graph that
    reads a node a match removes (the reference's KeyError on copying it).
    Fills in each fusion's root node and extra inputs."""
    named = dict(gm.named_modules())
    root_getters = get_fusion_pattern_to_root_node_getter(backend_config)
    extra_getters = get_fusion_pattern_to_extra_inputs_getter(backend_config)
    fuser_map = get_fuser_method_mapping(backend_config)
    claimed = {n for n in gm.graph.nodes if n.name in matches}
    last_nodes = {f.last for f in fusing}
    removed = claimed - last_nodes
    for n in gm.graph.nodes:
        if n not in claimed and any(a in removed for a in n.all_input_nodes):
            return True
    for f in fusing:
        try:
            f.root = root_getters.get(f.pattern, _default_root)(f.node_pattern)
            getter = extra_getters.get(f.pattern)
            f.extra = list(getter(f.node_pattern)) if getter is not None else []
            if f.root.op != "call_module":
                return True
            root_module = named[str(f.root.target)]
            mods = _modules_of(f.node_pattern, named, root_module)
            get_fuser_method_new(_types_of(mods), fuser_map)
        except Exception:  # noqa: BLE001 - the pass fails here, whatever the error
            return True
    return False


def _modules_of(p, named, root_module):
    if isinstance(p, (tuple, list)):
        n, *args = p  # ValueError on (), as in the reference
        return (
            _modules_of(n, named, root_module),
            *(_modules_of(a, named, root_module) for a in args),
        )
    if not isinstance(p, Node):
        return p
    if p.op == "call_module":
        return named[p.target]
    if p.op == "call_function" and p.target is F.relu:
        return nn.ReLU()
    if p.op in ("call_function", "call_method"):
        return p.target
    return MatchAllNode


def _types_of(m):
    if isinstance(m, tuple):
        return tuple(_types_of(x) for x in m)
    if isinstance(m, nn.Module):
        return parametrize.type_before_parametrizations(m)
    return m


def unsafe_fusions(gm, fusing):
    """(fusion, reason) for each fusion that would change another use of its module:
    README's "Differences" rows 1, 2 and 7."""
    modules = dict(gm.named_modules(remove_duplicate=False))
    out: dict[int, tuple[_Fusing, str]] = {}
    claimed_anywhere = {n for f in fusing for n in f.claimed}
    removed = {n for f in fusing for n in f.claimed if n is not f.last}
    # a root node the match does not claim, read elsewhere or removed by another match
    for f in fusing:
        if f.root in f.claimed:
            continue
        inputs: list[Node] = []
        torch.fx.map_arg((f.root.args, f.root.kwargs, f.extra), inputs.append)
        if any(a in removed or not a < f.last for a in inputs):
            continue  # the fused node's input check fails: the pass raises
        inside = set(f.claimed)
        if f.root in claimed_anywhere or any(u not in inside for u in f.root.users):
            out[id(f)] = (f, f"unclaimed root node {f.root.name!r}")
    # call sites that stay: not claimed, or the root of their match
    erased = {n for f in fusing for n in f.claimed if n is not f.root}
    calls = collections.Counter(
        id(modules.get(n.target))
        for n in gm.graph.nodes
        if n.op == "call_module" and n not in erased
    )
    roots = collections.Counter()
    shapes: dict[int, set] = collections.defaultdict(set)
    for f in fusing:
        mid = id(modules[f.root.target])
        roots[mid] += 1
        shapes[mid].add((f.pattern, *((n.op, n.target) for n in f.claimed)))
    attrs = [n.target for n in gm.graph.nodes if n.op == "get_attr"]
    for f in fusing:
        path = f.root.target
        mid = id(modules[path])
        reason = ""
        if calls[mid] > 1 and (calls[mid] != roots[mid] or len(shapes[mid]) > 1):
            reason = f"module {path!r} called at {calls[mid]} sites"
        elif any(t == path or t.startswith(path + ".") for t in attrs):
            reason = f"module {path!r} read by get_attr"
        else:
            parts = path.split(".")
            for k in range(1, len(parts)):
                outer = ".".join(parts[:k])
                if calls[id(modules.get(outer))] and outer in modules:
                    reason = f"module {path!r} inside called module {outer!r}"
                    break
        if reason and id(f) not in out:
            out[id(f)] = (f, reason)
    return list(out.values())


class Expected:
    """The right outcome of one case."""

    def __init__(self):
        self.exc: BaseException | None = None  # the fixed reference raised this
        self.gm = None  # or returned this
        self.skipped: list[tuple[_Fusing, str]] = []  # matches left out, with why
        self.fixes: set[str] = set()
        self.shared: set[tuple] = set()  # where the output holds its input's objects

    def __repr__(self):
        what = f"raises {self.exc!r}" if self.exc is not None else "returns"
        left = [(sorted(n.name for n in f.claimed), r) for f, r in self.skipped]
        return f"Expected({what}, skipped={left}, fixes={sorted(self.fixes)})"


def expected_outcome(case) -> Expected:
    """Run the fixed reference on a fresh trace of ``case``'s model."""
    exp = Expected()
    fixes = Fixes()
    exclude: set = set()
    gm = trace(case.make())  # the walk does not change it
    config = case.backend_factory()
    handlers = _sorted_patterns_dict(_get_fusion_pattern_to_fuse_handler_cls(config))
    for _ in range(50):
        matches = walk(gm, gm.graph, handlers, frozenset(exclude), fixes)
        fusing = _fusing_matches(gm, matches)
        if not fusing or _fails_before_fusing(gm, config, matches, fusing):
            break
        bad = unsafe_fusions(gm, fusing)
        if not bad:
            break
        for f, reason in bad:
            exp.skipped.append((f, reason))
            exclude.add(f.key)
    else:
        raise AssertionError("the fixed reference's exclusions do not settle")
    fresh = trace(case.make())
    exclude = {(_by_name(fresh, last.name), p) for last, p in exclude}
    inputs = objects_of(fresh)
    try:
        with single_thread():
            exp.gm = run_fixed(
                fresh, case.is_qat, case.backend_factory(), frozenset(exclude), fixes
            )
    except Exception as e:  # noqa: BLE001 - the right outcome is this exception type
        exp.exc = e
    else:
        exp.shared = shared_with(exp.gm, inputs)
    exp.fixes = fixes.used
    return exp


def _by_name(gm, name):
    return next(n for n in gm.graph.nodes if n.name == name)


# --------------------------------------------------------------------------------------
# property 1: pyfuse's matches are the reference's


def check_matches(gm, backend_config):
    """pyfuse's ``find_matches`` equals torch's ``_find_matches``, and so does the
    fixed walk with nothing excluded (where torch's walk does not crash)."""
    handlers = _sorted_patterns_dict(
        _get_fusion_pattern_to_fuse_handler_cls(backend_config)
    )
    try:
        ref = REFERENCE_FIND_MATCHES(gm, gm.graph, handlers)
    except Exception as e:
        if not is_literal_crash(e):
            raise AssertionError(f"torch's walk raised {e!r}, not on a literal") from e
        return
    got = pyfuse_find_matches(gm, gm.graph, list(handlers))
    mine = walk(gm, gm.graph, handlers)
    assert list(mine) == list(ref), "the fixed walk's match order differs from torch's"
    for name, other in (("pyfuse", got), ("the fixed walk", mine)):
        assert set(other) == set(ref), (
            f"{name}: matched nodes differ: only reference "
            f"{sorted(set(ref) - set(other))}, only {name} {sorted(set(other) - set(ref))}"
        )
        for k, rv in ref.items():
            for i, what in enumerate(("root node", "pattern", "matched node pattern")):
                assert same(rv[i], other[k][i]), (
                    f"{name} [{k}] {what}: reference {rv[i]!r}, {name} {other[k][i]!r}"
                )


# --------------------------------------------------------------------------------------
# the check


def forward_eval(gm, inputs):
    m = copy.deepcopy(gm).eval()
    with torch.no_grad(), single_thread():
        return m(*copy.deepcopy(inputs))


def equivalent(a, b):
    la, sa = tree_flatten(a)
    lb, sb = tree_flatten(b)
    if sa != sb:
        return False
    for x, y in zip(la, lb, strict=True):
        if isinstance(x, torch.Tensor) != isinstance(y, torch.Tensor):
            return False
        if isinstance(x, torch.Tensor):
            if x.shape != y.shape or not torch.allclose(x, y, rtol=1e-4, atol=1e-4):
                return False
        elif x != y:
            return False
    return True


def run_pyfuse(case):
    """pyfuse on a fresh trace: (output, report, where the output holds the
    input's objects, None) or (None, None, None, exception)."""
    gm = trace(case.make())
    inputs = objects_of(gm)
    try:
        with single_thread():
            out, report = pyfuse.fuse(
                gm, case.is_qat, None, case.backend_factory(), return_report=True
            )
    except Exception as e:  # noqa: BLE001 - compared with the right outcome
        return None, None, None, e
    return out, report, shared_with(out, inputs), None


def _reference_outcome(case):
    """torch's unfixed pass (for the statistics: which defect the case hit)."""
    gm = trace(case.make())
    try:
        with single_thread():
            return REFERENCE_FUSE(gm, case.is_qat, None, case.backend_factory()), None
    except Exception as e:  # noqa: BLE001
        return None, e


def check_case(case):
    """The properties for one case. Returns its outcome label."""
    _note(repr(case))
    check_matches(trace(case.make()), case.backend_factory())
    exp = expected_outcome(case)
    _note(f"expected: {exp!r}")
    out, report, shared, exc = run_pyfuse(case)
    _note(f"pyfuse: {exc!r}" if exc is not None else f"pyfuse: {report!r}")
    if exp.exc is not None:
        want = type(exp.exc)
        allowed = (want, *DOCUMENTED_SUBCLASSES.get(want, ()))
        if exc is None:
            raise AssertionError(
                f"the fixed reference raised {want.__name__}({exp.exc}); pyfuse "
                f"returned (report {report!r})"
            )
        if type(exc) not in allowed:
            raise AssertionError(
                f"the fixed reference raised {want.__name__}({exp.exc}); pyfuse raised "
                f"{type(exc).__name__}({exc}); accepted: "
                f"{[t.__name__ for t in allowed]}"
            ) from exc
        label = f"raised {want.__name__}"
    else:
        if exc is not None:
            raise AssertionError(
                f"the fixed reference returned ({exp!r}); pyfuse raised "
                f"{type(exc).__name__}({exc})"
            ) from exc
        _check_skipped(exp, report)
        assert_same_fusion(exp.gm, out, case.inputs)
        assert shared == exp.shared, (
            "what the output shares with its input differs: "
            f"only the right outcome's {sorted(exp.shared - shared)[:10]}, "
            f"only pyfuse's {sorted(shared - exp.shared)[:10]}"
        )
        if exp.skipped:
            kinds = sorted({_kind(r) for _, r in exp.skipped})
            label = f"skipped unsafe matches ({', '.join(kinds)}), rest identical"
        elif len(out.graph.nodes) < len(trace(case.make()).graph.nodes):
            label = "identical (fused)"
        else:
            label = "identical (nothing fused)"
    if exp.skipped or exp.fixes:
        label += _defect_note(case, exp)
    return label


def _kind(reason):
    for key, kind in (
        ("sites", "shared module"),
        ("get_attr", "attribute read"),
        ("inside", "inside a called module"),
        ("unclaimed", "unclaimed root"),
    ):
        if key in reason:
            return kind
    raise AssertionError(reason)


def _user_names(nodes):
    """How the report names a match's nodes: in forward (graph) order, the module
    path of a call_module node and the node name otherwise."""
    order = {n: i for i, n in enumerate(nodes[0].graph.nodes)}
    return tuple(
        str(n.target) if n.op == "call_module" else n.name
        for n in sorted(nodes, key=order.__getitem__)
    )


def _check_skipped(exp, report):
    want = collections.Counter(_user_names(f.claimed) for f, _ in exp.skipped)
    got = collections.Counter(tuple(s.nodes) for s in report.skipped)
    assert got == want, (
        f"skipped matches: expected {sorted(want)}, pyfuse's report {report.skipped!r}"
    )
    # Two matches can share a label (one module called at two sites): pair each
    # reported skip with an expected one of its label whose root its reason names.
    left = collections.defaultdict(list)
    for f, _ in exp.skipped:
        left[_user_names(f.claimed)].append(f)
    for s in report.skipped:
        fs = left[tuple(s.nodes)]
        named = [f for f in fs if f.root.target in s.reason or f.root.name in s.reason]
        assert named, (
            f"the reason {s.reason!r} names none of the roots "
            f"{[(f.root.target, f.root.name) for f in fs]} of the matches at {s.nodes}"
        )
        fs.remove(named[0])


def _defect_note(case, exp):
    """What the unfixed reference does on this case; in eval, the right outcome must
    compute what the model computes (a check of the fixed reference itself)."""
    if exp.exc is None and case.semantic and case.mode == "eval":
        assert equivalent(
            forward_eval(case.template, case.inputs),
            forward_eval(exp.gm, case.inputs),
        ), f"the fixed reference ({exp!r}) changes what the model computes"
    ref, ref_exc = _reference_outcome(case)
    what = "; defect (" + ", ".join(
        sorted(exp.fixes | ({"shared / read module"} if exp.skipped else set()))
    )
    if ref_exc is not None:
        if exp.exc is None or type(ref_exc) is not type(exp.exc):
            return f"{what}): torch raised {type(ref_exc).__name__}"
        return f"{what}): torch raised the same"
    if exp.exc is not None:
        return f"{what}): torch returned"
    try:
        assert_same_fusion(exp.gm, ref, case.inputs)
    except Exception:  # noqa: BLE001 - torch's output can be broken in any way
        return f"{what}): torch's output differs"
    return f"{what}): torch's output the same"
