"""The fusion pass: match natively, build fused modules, edit the graph in place.

Steps of :func:`fuse` (N nodes, F fusions):

1. Plan (cached per backend config): patterns in the reference's priority order,
   the compiled automaton, fuser methods and getters.
2. Flatten and match: one native O(N) pass (``pyfuse._core``).
3. Prepare every fusion, calling the backend's root-node getters, extra-input
   getters and fuser methods. Nothing is mutated yet, so a failure here leaves
   the model exactly as it was. Matches whose root module is also used at
   another site in a different way are excluded and the graph is matched again
   (the reference fuses them and silently changes the other site's result).
4. Edit the graph in place: O(F) moves, redirects and erasures, where the
   reference copies every node into a new graph.
5. Build the output GraphModule around the edited graph, installing only the
   modules the graph uses (as ``GraphModule(model, graph)`` would, without
   mutating the input's module tree), and generate its code (or defer it).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.fx import Graph, GraphModule, Node

from ._fusers import (
    _fast_conv_bn,
    _fast_conv_bn_relu,
    clear_prefolded,
    fast_fuser,
    new_module,
    new_relu,
    prefold,
    registration_hooks,
)
from ._match import Match, match_graph
from ._patterns import CompiledPatterns, Flat, compile_patterns, sort_patterns

__all__ = ["FuseReport", "FusionError", "GraphModuleRequired", "Skipped", "fuse", "fuse_fx"]

log = logging.getLogger("pyfuse")


class GraphModuleRequired(TypeError, AttributeError):
    """`fuse` was given something that is not a torch.fx.GraphModule.

    An AttributeError too, as the reference fails with one on such input.
    """


class FusionError(RuntimeError):
    """A fusion could not be prepared; the model was left unchanged."""


class _NotAModule(FusionError, TypeError):
    """A fuser method returned something that is not an nn.Module (a TypeError too,
    as the reference fails with one when it installs the result)."""


class _ErasedInput(FusionError, KeyError):
    """The fused node would use a node the fusion erases (a KeyError too, as the
    reference fails with one looking that node up)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _ModuleRequired(TypeError, AssertionError):
    """`fuse_fx` was given something that is not an nn.Module (an AssertionError
    too, as the reference's symbolic_trace rejects it with one)."""


@dataclass(frozen=True)
class Fused:
    """A fusion pyfuse made (or would make)."""

    pattern: str
    nodes: tuple[str, ...]
    modules: tuple[str, ...]
    fused_type: str


@dataclass(frozen=True)
class Skipped:
    """A match left unfused, and why."""

    pattern: str
    nodes: tuple[str, ...]
    reason: str


@dataclass
class FuseReport:
    """What a fusion pass did: the fusions made and the matches it skipped."""

    fused: list[Fused] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


# ---------------------------------------------------------------------------
# 1. Plan


@dataclass(frozen=True)
class _Plan:
    compiled: CompiledPatterns
    fuser_methods: dict[Any, Callable[..., Any]]
    configs: dict[Any, Any]
    root_getters: dict[Any, Callable[..., Any]]
    extra_getters: dict[Any, Callable[..., Any]]
    fuser_cache: dict[Any, Callable[..., Any]] = field(default_factory=dict)
    plain_fusers: dict[tuple[int, bool], Callable[..., Any]] = field(default_factory=dict)


def _make_plan(backend_config: Any) -> _Plan:
    from torch.ao.quantization.backend_config.utils import (
        get_fuser_method_mapping,
        get_fusion_pattern_to_extra_inputs_getter,
        get_fusion_pattern_to_root_node_getter,
    )

    configs = {
        p: c
        for p, c in backend_config._pattern_complex_format_to_config.items()
        if c.fuser_method is not None
    }
    return _Plan(
        compile_patterns(sort_patterns(list(configs))),
        get_fuser_method_mapping(backend_config),
        configs,
        get_fusion_pattern_to_root_node_getter(backend_config),
        get_fusion_pattern_to_extra_inputs_getter(backend_config),
    )


@functools.cache
def _native_plan() -> _Plan:
    from torch.ao.quantization.backend_config import get_native_backend_config

    return _make_plan(get_native_backend_config())


_plans: dict[Any, _Plan] = {}


def _plan_for(backend_config: Any) -> _Plan:
    if backend_config is None:
        return _native_plan()
    # Keyed by content, so an equal config built again reuses the plan.
    key = tuple(
        (p, c.fuser_method, c._root_node_getter, c._extra_inputs_getter)
        for p, c in backend_config._pattern_complex_format_to_config.items()
    )
    plan = _plans.get(key)
    if plan is None:
        if len(_plans) >= 32:
            _plans.pop(next(iter(_plans)))
        plan = _plans[key] = _make_plan(backend_config)
    return plan


def _fuse_custom_config(fuse_custom_config: Any, stacklevel: int) -> Any:
    """A FuseCustomConfig from None, itself or its (deprecated) dict form."""
    from torch.ao.quantization.fx.custom_config import FuseCustomConfig

    if fuse_custom_config is None:
        return FuseCustomConfig()
    if isinstance(fuse_custom_config, dict):
        warnings.warn(
            "Passing a fuse_custom_config_dict to fuse is deprecated and will not be "
            "supported in a future version. Please pass in a FuseCustomConfig instead.",
            FutureWarning,
            stacklevel=stacklevel + 1,
        )
        return FuseCustomConfig.from_dict(fuse_custom_config)
    return fuse_custom_config


def _configs(fuse_custom_config: Any, backend_config: Any) -> tuple[Any, Any]:
    """The reference's handling of the config arguments, warnings included."""
    from torch.ao.quantization.backend_config import BackendConfig

    fuse_custom_config = _fuse_custom_config(fuse_custom_config, stacklevel=3)
    if isinstance(backend_config, dict):
        warnings.warn(
            "Passing a backend_config_dict to prepare is deprecated and will not be "
            "supported in a future version. Please pass in a BackendConfig instead.",
            FutureWarning,
            stacklevel=3,
        )
        backend_config = BackendConfig.from_dict(backend_config)
    return fuse_custom_config, backend_config


# ---------------------------------------------------------------------------
# 3. Prepare


def _default_root_node(node_pattern: Any) -> Node:
    while not isinstance(node_pattern[-1], Node):
        node_pattern = node_pattern[-1]
    root: Node = node_pattern[-1]
    return root


class _Modules:
    """Module lookup by dotted path through ``_modules``, with fused overrides."""

    def __init__(self, root: torch.nn.Module) -> None:
        self.root = root
        self._cache: dict[str, torch.nn.Module | None] = {"": root}

    def get(self, path: str) -> torch.nn.Module | None:
        found = self._cache.get(path, self)
        if found is not self:
            return found  # type: ignore[return-value]
        parent_path, _, name = path.rpartition(".")
        parent = self.get(parent_path)
        mod = None if parent is None else parent._modules.get(name)
        self._cache[path] = mod
        return mod

    def __getitem__(self, path: str) -> torch.nn.Module:
        mod = self.get(path)
        if mod is None:
            raise KeyError(path)
        return mod


def _pattern_name(pattern: Any) -> str:
    """Forward-order, readable form of a reversed nested-tuple pattern."""

    def name(entry: Any) -> str:
        return getattr(entry, "__name__", None) or repr(entry)

    if not isinstance(pattern, tuple):
        return name(pattern)
    head, *args = pattern
    parts = [_pattern_name(a) for a in args]
    inner = parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"
    return f"{inner} -> {name(head)}" if parts else name(head)


@dataclass(slots=True)
class _Fusion:
    match: Match
    root_node: Node
    extra_inputs: list[Any]
    modules: Any  # the reference's get_modules(matched_node_pattern)
    fuser: Callable[..., Any]
    # The root node getter returned a node the match does not claim (a MatchAllNode
    # position): the reference keeps that node and calls the fused module again at
    # the match's last node.
    unclaimed_root: bool = False
    fused: torch.nn.Module | None = None


def _convert_node(p: Node, modules: _Modules, root_module: torch.nn.Module) -> Any:
    """The reference's ``get_modules`` for one node: its module, a fresh ReLU for
    F.relu, the target of other calls, MatchAllNode for anything else."""
    if p.op == "call_module":
        return modules[str(p.target)]
    if p.op == "call_function" and p.target is torch.nn.functional.relu:
        return new_relu(root_module.training)
    if p.op in ("call_function", "call_method"):
        return p.target
    from torch.ao.quantization.utils import MatchAllNode

    return MatchAllNode


def _matched_modules(node_pattern: Any, modules: _Modules, root_module: torch.nn.Module) -> Any:
    """The reference's ``get_modules`` over a whole matched node pattern."""

    def convert(p: Any) -> Any:
        if isinstance(p, (tuple, list)):
            if not p:
                # (a sub-pattern whose head node the match had already recorded;
                # the reference unpacks `n, *args = pattern` and fails here)
                raise ValueError("not enough values to unpack (expected at least 1, got 0)")
            return tuple(convert(x) for x in p)
        if not isinstance(p, Node):
            return p
        return _convert_node(p, modules, root_module)

    return convert(node_pattern)


def _plain_modules(
    match: Match, flat: Flat, modules: _Modules, root_module: torch.nn.Module
) -> Any:
    """`_matched_modules` of a plain match, built from the flattened module table."""
    table = flat.modules
    values = [table[i] for i in match.ids]
    if None in values:  # function and method positions
        for k, node in enumerate(match.claimed):
            if values[k] is None:
                values[k] = _convert_node(node, modules, root_module)
    assert match.shape is not None
    return tuple(match.shape[1](values)[0])


def _matched_types(mods: Any) -> Any:
    from torch.nn.utils.parametrize import type_before_parametrizations

    if isinstance(mods, tuple):
        return tuple(_matched_types(m) for m in mods)
    if isinstance(mods, torch.nn.Module):
        return type_before_parametrizations(mods)
    return mods


def _valid_keys(types: Any) -> Iterable[Any]:
    """Type patterns a fuser may be registered under, MatchAllNode variants too,
    in the order the reference's ``get_fuser_method_new`` tries them."""
    from itertools import product

    from torch.ao.quantization.utils import MatchAllNode

    if isinstance(types, (tuple, list)):
        return product(*(_valid_keys(t) for t in types))
    return (types, MatchAllNode)


def _fuser_for(plan: _Plan, types: Any, is_qat: bool) -> Callable[..., Any]:
    """The backend's fuser method for matched `types` (or pyfuse's equivalent)."""
    cache = plan.fuser_cache
    try:
        return cache[types, is_qat]
    except (KeyError, TypeError):
        pass
    for key in _valid_keys(types):
        f = plan.fuser_methods.get(key)
        if f is not None:
            found = fast_fuser(plan.configs.get(key), is_qat) or f
            with contextlib.suppress(TypeError):  # unhashable matched entries
                cache[types, is_qat] = found
            return found
    # The reference raises AssertionError here.
    raise AssertionError(f"did not find fuser method for: {types} ")


def _prepare(
    plan: _Plan, match: Match, flat: Flat, modules: _Modules, is_qat: bool
) -> _Fusion:
    pattern = match.pattern
    getter = plan.root_getters.get(pattern)
    if getter is None and match.plain:
        # The default getter takes the last node of the nested record, which is
        # the last one the walk reached.
        root_node = match.claimed[-1]
        root_module = flat.modules[match.ids[-1]]
    else:
        root_node = (getter or _default_root_node)(match.node_pattern)
        root_module = None
    extra_getter = plan.extra_getters.get(pattern)
    extra = list(extra_getter(match.node_pattern)) if extra_getter is not None else []
    if root_node.op != "call_module":
        raise AssertionError("Expecting module node to be a call_module Node")
    if root_module is None:
        root_module = modules[str(root_node.target)]
    if not match.plain:
        mods = _matched_modules(match.node_pattern, modules, root_module)
        found = _fuser_for(plan, _matched_types(mods), is_qat)
        return _Fusion(match, root_node, extra, mods, found, root_node not in match.claimed)
    # A plain match's module types are the pattern's own: one fuser lookup per pattern.
    mods = _plain_modules(match, flat, modules, root_module)
    key = (match.pattern_index, is_qat)
    fuser = plan.plain_fusers.get(key)
    if fuser is None:
        fuser = plan.plain_fusers[key] = _fuser_for(plan, _matched_types(mods), is_qat)
    unclaimed = getter is not None and root_node not in match.claimed
    return _Fusion(match, root_node, extra, mods, fuser, unclaimed)


def _conflicts(
    fusions: list[_Fusion], flat: Flat, modules: _Modules
) -> list[tuple[_Fusion, str]]:
    """Fusions whose root module is used elsewhere in a way the fusion would break.

    Replacing the module at the root's path changes every other use of it, so a
    fusion is only safe when every other call of that module is the root of a
    fusion of the same shape (same pattern, same modules), or there is none.
    """
    out = _unclaimed_root_conflicts(fusions)
    called = [m for m in flat.modules if m is not None]
    if (
        not flat.get_attrs
        and len({id(m) for m in called}) == len(called)
        and not any(m._modules for m in called)
    ):
        return out  # every module is called once, none holds another, none is read
    flagged = {id(f) for f, _ in out}
    # Sites the fusions erase (claimed, not a root) no longer call their module.
    erased = {n for f in fusions for n in f.match.claimed if n is not f.root_node}
    calls: Counter[int] = Counter(
        id(m) for m, n in zip(flat.modules, flat.nodes, strict=True)
        if m is not None and n not in erased
    )
    shape: dict[int, set[tuple[Any, ...]]] = {}
    roots: Counter[int] = Counter()
    for f in fusions:
        mid = id(modules[str(f.root_node.target)])
        roots[mid] += 1
        sig = (f.match.pattern_index, *((n.op, n.target) for n in f.match.claimed))
        shape.setdefault(mid, set()).add(sig)
    paths = {str(f.root_node.target) for f in fusions}
    attr_users: Counter[str] = Counter()
    for i in flat.get_attrs:
        target = str(flat.nodes[i].target)
        parts = target.split(".")
        for k in range(1, len(parts) + 1):
            prefix = ".".join(parts[:k])
            if prefix in paths:
                attr_users[prefix] += 1
    for f in fusions:
        path = str(f.root_node.target)
        mod = modules[path]
        mid = id(mod)
        reason = ""
        if calls[mid] > 1 and (calls[mid] != roots[mid] or len(shape[mid]) > 1):
            reason = (
                f"module {path!r} is called at {calls[mid]} sites and not every "
                "site fuses the same way; fusing would change the other sites"
            )
        elif attr_users[path]:
            reason = f"module {path!r} is also read by get_attr nodes"
        else:
            parts = path.split(".")
            for k in range(1, len(parts)):
                outer = ".".join(parts[:k])
                parent = modules.get(outer)
                if parent is not None and calls[id(parent)]:
                    reason = f"module {path!r} is inside module {outer!r}, which is called"
                    break
        if reason and id(f) not in flagged:
            out.append((f, reason))
    return out


def _unclaimed_root_conflicts(fusions: list[_Fusion]) -> list[tuple[_Fusion, str]]:
    """Fusions whose root node is not claimed by their match and is used elsewhere.

    Such a node stays in the graph and, like the reference, pyfuse calls the fused
    module again at the match's last node; the node itself then calls the fused
    module too. That is harmless only when nothing else reads its result and no
    other match removes it.
    """
    unclaimed = [f for f in fusions if f.unclaimed_root]
    if not unclaimed:
        return []
    claimed_anywhere = {n for f in fusions for n in f.match.claimed}
    removed = _removed(fusions)
    out = []
    for f in unclaimed:
        if _unavailable_input(f, removed) is not None:
            continue  # the fusion fails its input check, as the reference does
        root, inside = f.root_node, set(f.match.claimed)
        what = f"the root node getter returned {root.name!r}, which the match does not claim"
        if root in claimed_anywhere:
            out.append((f, f"{what} and another match fuses"))
        elif any(u not in inside for u in root.users):
            user = next(u for u in root.users if u not in inside)
            out.append((f, f"{what} and {user.name!r} also uses; fusing would change it"))
    return out


# ---------------------------------------------------------------------------
# 4. Edit


def _simple(f: _Fusion) -> bool:
    """A plain match with the default root and no extra inputs, whose edit needs no
    check: each claimed node but the last has one user, the node above it in the
    match (the automaton's rule), and the root is the match's last leaf."""
    return f.match.plain and f.root_node is f.match.claimed[-1] and not f.extra_inputs


def _read_outside(f: _Fusion) -> bool:
    """Whether a node the fusion removes or moves is read outside its match (by
    a node another match removes: `_first_dangling_use` rejects the others)."""
    inside = set(f.match.claimed)
    return any(
        u not in inside for n in f.match.claimed if n is not f.match.last for u in n.users
    )


def _removed(fusions: list[_Fusion]) -> set[Node]:
    """The nodes the fusions remove: claimed, and not a match's last node (a root
    that is not last moves into its last node's place)."""
    return {n for f in fusions for n in f.match.claimed if n is not f.match.last}


def _unavailable_input(f: _Fusion, removed: set[Node]) -> Node | None:
    """A node the fused node, put in the match's last node's place, would read but
    that is not there: removed by a fusion, or not before it. The reference looks
    each input up among the nodes it has copied so far."""
    used: list[Node] = []
    torch.fx.map_arg((f.root_node.args, f.root_node.kwargs, f.extra_inputs), used.append)
    last = f.match.last
    return next((a for a in used if a in removed or not a < last), None)


def _check_inputs(f: _Fusion, removed: set[Node]) -> None:
    a = _unavailable_input(f, removed)
    if a is not None:
        last = f.match.last
        where = "which the fusion removes" if a in removed else f"which comes after {last.name!r}"
        raise _ErasedInput(
            f"cannot fuse {_pattern_name(f.match.pattern)} at node "
            f"{last.name!r}: the fused node would use {a.name!r}, {where}"
        )


def _check_targets(model: GraphModule, flat: Flat) -> None:
    """Every get_attr / call_module target must exist, or building the output
    would fail (AttributeError, as the reference's GraphModule raises) half-way."""
    labels = flat.graph.label
    missing = [i for i, lab in enumerate(labels) if lab < 0]
    for i in [*missing, *flat.get_attrs]:
        node = flat.nodes[i]
        obj: Any = model
        for atom in str(node.target).split("."):
            if not hasattr(obj, atom):
                raise AttributeError(
                    f"node {node.name!r} ({node.op}) refers to {node.target!r}, but "
                    f"{type(obj).__name__} has no attribute {atom!r}; the model is unchanged"
                )
            obj = getattr(obj, atom)


def _edit(graph: Graph, fusions: list[_Fusion]) -> Graph:
    """Apply `fusions` to `graph`: each root node takes its match's last node's
    place and the rest of the match is erased. Returns the edited graph."""
    if any(f.unclaimed_root or (not _simple(f) and _read_outside(f)) for f in fusions):
        return _rebuild(graph, fusions)
    # Extra inputs first, so redirecting other fusions' last nodes updates them.
    for f in fusions:
        if f.extra_inputs:
            f.root_node.args = (*f.root_node.args, *f.extra_inputs)
    for f in fusions:
        last, root = f.match.last, f.root_node
        if root is not last:
            last.prepend(root)
            last.replace_all_uses_with(root)
        # Walk order is top-down: every node's users inside the match go first.
        for n in f.match.claimed:
            if n is not root:
                graph.erase_node(n)
    return graph


def _rebuild(graph: Graph, fusions: list[_Fusion]) -> Graph:
    """The edit as a new graph, copied node by node as the reference builds its
    output. Needed when a root node is not claimed by its match (that node is
    kept, and a copy of it, named as the reference names it, replaces the last
    node), or when a node one fusion removes is read by a node another removes
    (erasing either first would fail). `graph` is not changed."""
    at_last = {f.match.last: f for f in fusions}
    claimed = {n for f in fusions for n in f.match.claimed}
    new = Graph()
    env: dict[Node, Node] = {}
    load = env.__getitem__
    for node in graph.nodes:
        f = at_last.get(node)
        if f is not None:
            extra = [torch.fx.map_arg(a, load) for a in f.extra_inputs]
            env[node] = copy = new.node_copy(f.root_node, load)
            if extra:
                copy.args = (*copy.args, *extra)
        elif node not in claimed:
            env[node] = new.node_copy(node, load)
    return new


# ---------------------------------------------------------------------------
# 5. Output


def _build_output(
    model: GraphModule,
    graph: Graph,
    replaced: dict[str, torch.nn.Module],
    lazy: bool,
) -> GraphModule:
    """``GraphModule(model, graph)`` with ``replaced`` modules at their paths,
    leaving ``model``'s own module tree untouched."""
    from torch.fx._lazy_graph_module import _LazyGraphModule
    from torch.fx.graph import CodeGen

    cls = _LazyGraphModule if lazy else GraphModule
    out = cls({}, Graph())
    if hasattr(model, "training"):
        out.training = model.training
    # Without registration hooks, installing a submodule under a new name is a
    # write to `_modules` (what Module.__setattr__ ends with), and containers are
    # built from a template: the same objects, a fraction of the cost.
    direct = not registration_hooks()
    seen_from: dict[str, Any] = {}

    def source(path: str, parent: Any, name: str) -> Any:
        if path in replaced:
            return replaced[path]
        got = seen_from.get(path, seen_from)
        if got is seen_from:
            sub = parent._modules.get(name) if name not in parent.__dict__ else None
            got = sub if sub is not None else getattr(parent, name)
            seen_from[path] = got
        return got

    def fresh_name(mod: Any, name: str) -> bool:
        d = mod.__dict__
        return not (name in d or name in d["_parameters"] or name in d["_buffers"]
                    or name in d["_modules"] or hasattr(type(mod), name))

    for node in graph.nodes:
        if node.op not in ("get_attr", "call_module"):
            continue
        target = node.target
        if not isinstance(target, str):
            raise AssertionError(  # noqa: TRY004 (the reference raises AssertionError)
                f"Expected node.target to be str, got {type(target)}"
            )
        # torch.fx's _copy_attr, reading through `replaced`.
        *prefix, fname = target.split(".")
        from_mod: Any = model
        to_mod: Any = out
        path = ""
        done = False
        for item in prefix:
            path = f"{path}.{item}" if path else item
            f = source(path, from_mod, item)
            t = to_mod._modules.get(item)
            if t is None:
                t = getattr(to_mod, item, None)
            if f is t:
                done = True
                break
            if t is None:
                if direct and fresh_name(to_mod, item):
                    t = to_mod._modules[item] = new_module()
                else:
                    t = torch.nn.Module()
                    setattr(to_mod, item, t)
            from_mod, to_mod = f, t
        if done:
            continue
        path = f"{path}.{fname}" if path else fname
        orig = source(path, from_mod, fname)
        if isinstance(orig, torch.Tensor) and not isinstance(orig, torch.nn.Parameter):
            to_mod.register_buffer(fname, orig)
        elif direct and isinstance(orig, torch.nn.Module) and fresh_name(to_mod, fname):
            to_mod._modules[fname] = orig
        else:
            setattr(to_mod, fname, orig)

    # The reference builds a fresh Graph: default code generation, no tracer.
    graph._codegen = CodeGen()
    graph._tracer_cls = None
    graph._tracer_extras = None
    graph._co_fields = {}
    out.graph = graph
    return out


# ---------------------------------------------------------------------------
# The pass


def _analyze(
    model: GraphModule, is_qat: bool, plan: _Plan, report: FuseReport
) -> tuple[Flat, list[_Fusion], Exception | None]:
    """Steps 2-3: the fusions to make, in graph order, with skipped matches
    recorded in `report`. If preparing a match raises, or a node that stays reads
    a node a match removes, the fusions before that point in graph order and the
    exception: the reference calls their fusers before it meets the error.
    Mutates nothing."""
    flat = plan.compiled.flatten(model.graph, model)
    modules = _Modules(model)
    exclude: list[int] = []
    index: dict[Node, int] | None = None
    while True:
        matches = match_graph(plan.compiled, flat, exclude)
        matches.reverse()  # graph order of the last nodes, as the reference fuses
        fusions: list[_Fusion] = []
        dangling = _first_dangling_use(matches)
        for m in matches:
            if dangling is not None and dangling.user < m.last:
                return flat, fusions, dangling.error()
            if not m.plain and m.last not in m.claimed:
                # The pattern's last position is MatchAllNode: the reference never
                # fuses such a match (what it claims is dropped: `dangling`).
                continue
            try:
                fusions.append(_prepare(plan, m, flat, modules, is_qat))
            except Exception as e:  # noqa: BLE001 (raised by _call_fusers, in the reference's order)
                e.add_note(_while_fusing(m))
                return flat, fusions, e
        if dangling is not None:
            return flat, fusions, dangling.error()
        bad = _conflicts(fusions, flat, modules) if fusions else []
        if not bad:
            return flat, fusions, None
        if index is None:
            index = {n: i for i, n in enumerate(flat.nodes)}
        for f, reason in bad:
            m = f.match
            exclude += [index[m.last], m.pattern_index]
            skipped = Skipped(
                _pattern_name(m.pattern), tuple(n.name for n in m.claimed), reason
            )
            report.skipped.append(skipped)
            log.warning(
                "pyfuse: not fusing %s at %s: %s", skipped.pattern, skipped.nodes, reason
            )


@dataclass(slots=True)
class _Dangling:
    """A node left in the graph that reads a node a match removes."""

    user: Node
    node: Node
    match: Match

    def error(self) -> _ErasedInput:
        return _ErasedInput(
            f"cannot fuse {_pattern_name(self.match.pattern)} at node "
            f"{self.match.last.name!r}: it removes {self.node.name!r}, which "
            f"{self.user.name!r} also uses"
        )


def _first_dangling_use(matches: list[Match]) -> _Dangling | None:
    """The first node, in graph order, that stays in the graph but reads a node a
    match removes. The reference copies the graph in order and fails there
    (KeyError). Only a match that is not plain can claim a node used elsewhere:
    a getattr pattern's arguments are claimed unchecked, and a match whose last
    position is MatchAllNode removes what it claims without replacing its last node.
    """
    odd = [m for m in matches if not m.plain]
    if not odd:
        return None
    claimed = {n for m in matches for n in m.claimed}
    first: _Dangling | None = None
    for m in odd:
        for n in m.claimed:
            if n is m.last:
                continue
            for u in n.users:
                if u not in claimed and (first is None or u < first.user):
                    first = _Dangling(u, n, m)
    return first


def _call_fusers(
    fusions: list[_Fusion], is_qat: bool, failure: Exception | None = None
) -> dict[str, torch.nn.Module]:
    """Call each fusion's fuser method in graph order, checking its edit around
    the call, so that the first error raised is the one the reference meets first;
    then raise `failure` (from preparing the match after the last fusion), if any.

    Returns the fused module per root module path; the last fusion at a path
    wins, as in the reference. Mutates nothing the caller owns.
    """
    replaced: dict[str, torch.nn.Module] = {}
    removed: set[Node] | None = None
    if not is_qat:
        prefold(list(_conv_bn_pairs(fusions)))
    try:
        for f in fusions:
            replaced[str(f.root_node.target)] = f.fused = _call_one(f, is_qat)
            if not _simple(f):
                if removed is None:
                    removed = _removed(fusions)
                _check_inputs(f, removed)
    finally:
        clear_prefolded()
    if failure is not None:
        raise failure
    return replaced


def _conv_bn_pairs(fusions: list[_Fusion]) -> Iterable[tuple[Any, Any]]:
    for f in fusions:
        if f.fuser is _fast_conv_bn:
            bn, conv = f.modules
            yield conv, bn
        elif f.fuser is _fast_conv_bn_relu:
            _, (bn, conv) = f.modules
            yield conv, bn


def _while_fusing(match: Match) -> str:
    """The note added to an exception raised while preparing or fusing `match`."""
    return (
        f"pyfuse: while fusing {_pattern_name(match.pattern)} at nodes "
        f"{[n.name for n in match.claimed]} (the model is unchanged)"
    )


def _call_one(f: _Fusion, is_qat: bool) -> torch.nn.Module:
    try:
        fused = f.fuser(is_qat, *f.modules)
    except Exception as e:
        e.add_note(_while_fusing(f.match))
        raise
    if not isinstance(fused, torch.nn.Module):
        raise _NotAModule(
            f"the fuser method for {_pattern_name(f.match.pattern)} at node "
            f"{f.match.last.name!r} returned {type(fused).__name__}, not an nn.Module"
        )
    return fused


def _record(fusions: list[_Fusion], report: FuseReport) -> None:
    """Add the fusions made to `report`."""
    for f in fusions:
        report.fused.append(
            Fused(
                _pattern_name(f.match.pattern),
                tuple(n.name for n in f.match.claimed),
                tuple(str(n.target) for n in f.match.claimed if n.op == "call_module"),
                type(f.fused).__name__,
            )
        )


def _require_graph_module(model: Any) -> GraphModule:
    if not isinstance(model, GraphModule):
        raise GraphModuleRequired(
            f"pyfuse.fuse expects a torch.fx.GraphModule, got {type(model).__name__}; "
            "trace it first (torch.fx.symbolic_trace) or call pyfuse.fuse_fx"
        )
    return model


def fuse(
    model: GraphModule,
    is_qat: bool,
    fuse_custom_config: Any = None,
    backend_config: Any = None,
    *,
    lazy: bool = False,
    return_report: bool = False,
) -> Any:
    """Fuse `model` as ``torch.ao.quantization.fx.fuse.fuse`` does.

    Args:
        model: a GraphModule (e.g. from ``torch.fx.symbolic_trace``). Its graph is
            reused by the output, as the reference reuses its modules: pass a copy
            if you still need the input.
        is_qat: fuse for quantization-aware training (e.g. ConvBnReLU2d) instead
            of folding BatchNorm (eval).
        fuse_custom_config: a FuseCustomConfig or its dict form (deprecated).
        backend_config: a BackendConfig or its dict form (deprecated); default
            torch's native backend config.
        lazy: generate the output's code on first use (``_LazyGraphModule``).
        return_report: also return a :class:`FuseReport`.

    Returns:
        The fused GraphModule, or ``(GraphModule, FuseReport)``.

    Raises:
        GraphModuleRequired: `model` is not a GraphModule.
        FusionError: a fusion cannot be applied; the model is unchanged. Errors
            from fuser methods and getters propagate with a note naming the
            match, and leave the model unchanged too.
    """
    fuse_custom_config, backend_config = _configs(fuse_custom_config, backend_config)
    model = _require_graph_module(model)
    with _gc_paused():
        return _fuse(model, is_qat, backend_config, lazy, return_report)


class _GcPause:
    lock = threading.Lock()
    pausers = 0  # passes running with the collector paused
    was_enabled = False


@contextlib.contextmanager
def _gc_paused() -> Any:
    """Pause the cyclic garbage collector for the pass.

    The pass allocates O(F) small objects while the process holds a large graph;
    every generation-2 collection then walks the whole heap, which cost more than
    the pass itself on 10k+ node graphs. Nothing the pass creates is cyclic
    garbage, and the collector is restored (not run) afterwards. Passes in several
    threads share one pause: the first saves the collector's state, the last
    restores it.
    """
    state = _GcPause
    with state.lock:
        if state.pausers == 0:
            state.was_enabled = gc.isenabled()
            gc.disable()
        state.pausers += 1
    try:
        yield
    finally:
        with state.lock:
            state.pausers -= 1
            if state.pausers == 0 and state.was_enabled:
                gc.enable()


def _fuse(
    model: GraphModule, is_qat: bool, backend_config: Any, lazy: bool, return_report: bool
) -> Any:
    plan = _plan_for(backend_config)
    report = FuseReport()
    flat, fusions, failure = _analyze(model, is_qat, plan, report)
    replaced = _call_fusers(fusions, is_qat, failure)
    if return_report:
        _record(fusions, report)
    _check_targets(model, flat)
    # Nothing above mutated the model; from here on nothing can fail on user input.
    graph = _edit(model.graph, fusions)
    out = _build_output(model, graph, replaced, lazy)
    return (out, report) if return_report else out


def fuse_fx(
    model: torch.nn.Module,
    fuse_custom_config: Any = None,
    backend_config: Any = None,
    *,
    lazy: bool = False,
) -> GraphModule:
    """pyfuse's ``torch.ao.quantization.quantize_fx.fuse_fx``: trace, then fuse (eval)."""
    from torch.ao.quantization.quantize_fx import attach_preserved_attrs_to_model

    if not isinstance(model, torch.nn.Module):
        raise _ModuleRequired(f"pyfuse.fuse_fx expects an nn.Module, got {type(model).__name__}")
    fuse_custom_config = _fuse_custom_config(fuse_custom_config, stacklevel=2)
    preserved = {
        a: getattr(model, a)
        for a in fuse_custom_config.preserved_attributes
        if hasattr(model, a)
    }
    traced = torch.fx.symbolic_trace(model)
    out: GraphModule = fuse(traced, False, fuse_custom_config, backend_config, lazy=lazy)
    attach_preserved_attrs_to_model(out, preserved)
    return out
