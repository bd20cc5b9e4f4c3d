"""Output: the fused GraphModule around the edited graph.

As ``GraphModule(model, graph)`` builds it, installing only the modules and
attributes the graph uses, with the fused modules at their paths, and without
mutating the input's module tree.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import Graph, GraphModule

from ..codegen import EarlyCode, set_graph
from .fusers import new_module, registration_hooks

__all__ = ["build_output"]


def _skip_recompile(_self: GraphModule) -> None:
    return None


def _empty_module() -> GraphModule:
    """``GraphModule({}, Graph())`` without FX writing and compiling the empty
    graph's code (~90 us, and garbage for the collector): the output's own code
    replaces it at once. FX gives each GraphModule a class of its own, so its
    ``recompile`` can be skipped for this instance alone."""
    out: GraphModule = GraphModule.__new__(GraphModule)
    impl: Any = type(out)
    if impl.__bases__ != (GraphModule,) or "recompile" in vars(impl):
        return GraphModule({}, Graph())  # (not the per-instance class FX makes)
    impl.recompile = _skip_recompile
    try:
        out.__init__({}, Graph())  # type: ignore[misc]
    finally:
        del impl.recompile
    return out


def build_output(
    model: GraphModule,
    graph: Graph,
    replaced: dict[str, torch.nn.Module],
    lazy: bool,
    early: EarlyCode | None = None,
) -> GraphModule:
    """``GraphModule(model, graph)`` with ``replaced`` modules at their paths,
    leaving ``model``'s own module tree untouched. `early`: the output's code,
    written (and perhaps compiling) before `graph` was edited."""
    from torch.fx._lazy_graph_module import _LazyGraphModule
    from torch.fx.graph import CodeGen

    out = _LazyGraphModule({}, Graph()) if lazy else _empty_module()
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

    class_has: dict[tuple[type, str], bool] = {}  # hasattr(class, name), per call

    def fresh_name(mod: Any, name: str) -> bool:
        d = mod.__dict__
        if (
            name in d
            or name in d["_parameters"]
            or name in d["_buffers"]
            or name in d["_modules"]
        ):
            return False
        key = (type(mod), name)
        has = class_has.get(key)
        if has is None:
            has = class_has[key] = hasattr(key[0], name)
        return not has

    # Targets share parent paths ("layer1.0.conv1", "layer1.0.bn1"): a walk down
    # a parent path gives the same pair of modules until something is installed
    # at a path it went through, so it is kept until then.
    walked: dict[str, tuple[Any, Any]] = {}  # parent path -> (from, to)
    walked_through: set[str] = set()  # the paths the kept walks went through
    for node in graph.nodes:
        if node.op not in ("get_attr", "call_module"):
            continue
        target = node.target
        if not isinstance(target, str):
            raise AssertionError(  # noqa: TRY004 (the reference raises AssertionError)
                f"Expected node.target to be str, got {type(target)}"
            )
        # torch.fx's _copy_attr, reading through `replaced`.
        parent, _, fname = target.rpartition(".")
        from_mod: Any = model
        to_mod: Any = out
        if parent:
            hit = walked.get(parent)
            if hit is not None:
                from_mod, to_mod = hit
            else:
                path = ""
                done = False
                for item in parent.split("."):
                    path = f"{path}.{item}" if path else item
                    f = source(path, from_mod, item)
                    t = to_mod._modules.get(item)
                    if t is None and direct and fresh_name(to_mod, item):
                        # (nothing there for getattr to find)
                        t = to_mod._modules[item] = new_module()
                    elif t is None:
                        t = getattr(to_mod, item, None)
                        if t is None:
                            t = torch.nn.Module()
                            setattr(to_mod, item, t)
                    if f is t:
                        done = True
                        break
                    from_mod, to_mod = f, t
                    walked_through.add(path)
                if done:
                    continue
                walked[parent] = (from_mod, to_mod)
        if target in walked_through:  # (installing here changes what they found)
            walked.clear()
            walked_through.clear()
        orig = source(target, from_mod, fname)
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
    # `out.graph = graph`, with the code written by the native emitter (same text)
    set_graph(out, graph, early)
    return out
