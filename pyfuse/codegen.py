"""Native code generation for FX graphs: ``Graph.python_code`` and ``recompile``.

``python_code(graph)`` returns the ``PythonCode`` torch.fx's ``Graph.python_code``
returns, byte for byte, with the per-node text written by the native emitter
(``pyfuse._core.Emitter``, csrc/core/emit.cpp) instead of FX's Python loop.
``recompile(gm)`` does what ``GraphModule.recompile()`` does (same ``_code``,
``forward``, ``_lineno_map``, linecache entry for tracebacks, wrapped
``__call__``, recompiled child GraphModules) on top of it.

The emitter covers FX's default ``CodeGen`` and the ``_PyTreeCodeGen`` of
exported graphs, non-verbose, on the torch versions in ``CHECKED_TORCH``, and the
argument values FX writes with ``repr`` (plus the containers it walks). For any
other graph it reports why, and the caller uses FX for that graph: the text is
then FX's by construction. ``FALLBACKS`` counts the reasons (for tests and
benchmarks).

Python does the parts that need Python objects, once per distinct object and
graph: naming call targets and type annotations (FX's ``_get_qualified_name``
and ``_is_from_torch``), classifying unusual argument types, the function
definition line (the code generator's own ``gen_fn_def``).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import types
from collections import Counter
from typing import Any

import torch
import torch.fx
import torch.fx.graph as fx_graph
from torch.fx import Graph, GraphModule, Node
from torch.fx import graph_module as fx_graph_module
from torch.fx.experimental import _config as fx_experimental_config
from torch.fx.graph import CodeGen, PythonCode, _PyTreeCodeGen
from torch.fx.graph_module import _forward_from_src, _WrappedCall
from torch.fx.immutable_collections import immutable_dict, immutable_list
from torch.fx.node import _get_qualified_name, _type_repr

from . import _core
from .compileworker import Compiler, InProcess, Worker

__all__ = [
    "CHECKED_TORCH",
    "FALLBACKS",
    "EarlyCode",
    "PlannedEdit",
    "early_code",
    "python_code",
    "recompile",
    "set_graph",
    "torch_version",
    "try_python_code",
]

#: torch versions (major, minor) whose code generation the emitter reproduces.
#: 2.13 is tested; 2.14's torch/fx/graph.py is assumed unchanged in what the
#: emitter simulates (checked by the same tests when run on 2.14).
CHECKED_TORCH: frozenset[tuple[int, int]] = frozenset({(2, 13), (2, 14)})

#: reason -> number of graphs handed back to FX since import.
FALLBACKS: Counter[str] = Counter()

# What classify_value returns (csrc/bindings/register_emit.cpp: ValueKind).
_FALLBACK, _REPR, _TUPLE_LIKE, _SIZE, _LIST_LIKE = range(5)
# What classify_callee returns as its kind (csrc/core/emit.hpp: CalleeKind).
_MAGIC, _INPLACE, _GLOBAL = range(3)

#: Argument types FX writes with plain ``repr()`` and that hold no graph node.
_REPR_TYPES: tuple[type, ...] = (
    torch.dtype,
    torch.device,
    torch.memory_format,
    torch.layout,
    torch.qscheme,
    complex,
    bytes,
    range,
    types.EllipsisType,
    type(NotImplemented),
)


def torch_version() -> tuple[int, int]:
    """(major, minor) of the torch running."""
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or "0")


_TORCH_CHECKED = torch_version() in CHECKED_TORCH


def _code_generation_functions() -> tuple[object, ...]:
    """The FX functions whose behaviour the emitter reproduces: if any of them is
    replaced after import (a patched torch), the emitter stands aside."""
    return (
        Graph.python_code,
        Graph._python_code,
        CodeGen._gen_python_code,
        CodeGen.gen_fn_def,
        CodeGen.generate_output,
        CodeGen.additional_globals,
        CodeGen._call_method_with_signature_check,
        _PyTreeCodeGen.gen_fn_def,
        _PyTreeCodeGen.generate_output,
        _PyTreeCodeGen.gen_var_bindings,
        fx_graph._Namespace.create_name,
        fx_graph._format_target,
        Node.__repr__,
    )


_ORIGINALS = _code_generation_functions()


def _exec_functions() -> tuple[object, ...]:
    """FX's functions that compile and run a GraphModule's code, which
    :func:`_forward` does in their place only while they are these."""
    m = fx_graph_module
    return (m._forward_from_src, m._method_from_src, m._exec_with_source, m._loader)


_EXEC_ORIGINALS = _exec_functions()


def _is_from_torch(obj: object) -> bool:
    return bool(fx_graph._is_from_torch(obj))


def _global_spec(hint: str, obj: object) -> tuple[str, object, bool]:
    """FX's ``add_global(hint, obj)``: (name or hint, obj, written literally)."""
    if _is_from_torch(obj) and obj != torch.device:
        return _get_qualified_name(obj), obj, True  # type: ignore[arg-type]
    return hint, obj, False


def _classify_value(tp: type) -> int:
    """How FX's ``_get_repr`` writes a value of type ``tp`` (exact builtins, nodes
    and FX's immutable containers are handled natively, never asked)."""
    from torch._library.opaque_object import is_opaque_value_type

    if issubclass(tp, (torch._ops.OpOverload, torch._ops.HigherOrderOperator)):
        return _FALLBACK  # through add_global
    if issubclass(tp, (enum.Enum, torch.Tensor)) or is_opaque_value_type(tp):
        return _FALLBACK
    if tp in _REPR_TYPES:
        return _REPR
    if issubclass(tp, tuple):
        if hasattr(tp, "_fields") or tp.__dictoffset__:
            return _FALLBACK  # NamedTuple (through add_global), or maybe one
        return _SIZE if tp is torch.Size else _TUPLE_LIKE
    if issubclass(tp, list):
        return _LIST_LIKE
    return _FALLBACK


#: id -> (operator overload, its _classify_callee): exported graphs call a few
#: aten overloads, named the same way every time (FX's _get_qualified_name reads
#: only their fixed module and name). Overloads live in torch.ops for the process
#: anyway, so holding them costs nothing.
_OVERLOAD_CALLEES: dict[int, tuple[object, tuple[int, str, bool] | None]] = {}


def _classify_callee(target: Any) -> tuple[int, str, bool] | None:
    """How FX writes a call_function target: an operator template or a global."""
    if type(target) is torch._ops.OpOverload:
        hit = _OVERLOAD_CALLEES.get(id(target))
        if hit is not None and hit[0] is target:
            return hit[1]
        spec = _classify_any_callee(target)
        _OVERLOAD_CALLEES[id(target)] = (target, spec)
        return spec
    return _classify_any_callee(target)


def _classify_any_callee(target: Any) -> tuple[int, str, bool] | None:
    try:
        if not callable(target):
            return None
        if getattr(target, "__module__", "") == "_operator":
            name = target.__name__
            if name in fx_graph.magic_methods:
                return _MAGIC, fx_graph.magic_methods[name], False
            if name in fx_graph.inplace_methods:
                return _INPLACE, fx_graph.inplace_methods[name], False
        hint, _, literal = _global_spec(_get_qualified_name(target), target)
    except Exception:  # noqa: BLE001 - FX raises on this target: FX's code generation will
        return None
    return _GLOBAL, hint, literal


def _classify_type(o: Any) -> tuple[str, bool] | None:
    """FX's ``type_repr`` for the annotations the emitter covers (plain types)."""
    try:
        if o == ():
            return "()", True
        typename = _type_repr(o)
        if isinstance(o, types.UnionType) or getattr(o, "__origin__", None):
            return None  # composed annotations: not covered
        hint, _, literal = _global_spec(typename, o)
    except Exception:  # noqa: BLE001 - FX raises on this annotation: FX's code generation will
        return None
    return hint, literal


#: the native emitter, keyed by the state of FX's namespace tables it copies
_EMITTERS: dict[tuple[int, int, int], _core.Emitter] = {}


def _get_emitter() -> _core.Emitter:
    """The native emitter over FX's current namespace tables (a new one if a
    custom builtin was registered since)."""
    key = (
        id(fx_graph._custom_builtins),
        len(fx_graph._custom_builtins),
        len(fx_graph._illegal_names),
    )
    emitter = _EMITTERS.get(key)
    if emitter is None:
        prefill = [
            spec
            for name, (_, obj) in fx_graph._custom_builtins.items()
            if not (spec := _global_spec(name, obj))[2]
        ]
        emitter = _core.Emitter(
            dict(fx_graph._illegal_names),
            prefill,
            _global_spec("wrap", torch.fx.wrap),
            Node,
            immutable_list,
            immutable_dict,
            _classify_value,
            _classify_callee,
            _classify_type,
        )
        _EMITTERS.clear()
        _EMITTERS[key] = emitter
    return emitter


def _not_covered(graph: Graph, cg: CodeGen) -> str | None:
    """Why FX's own code generation must write this graph (with `cg`), or None."""
    if not _TORCH_CHECKED:
        return f"torch {torch.__version__} not checked"
    if type(cg) is not CodeGen and type(cg) is not _PyTreeCodeGen:
        return f"code generator {type(cg).__name__}"
    if cg._body_transformer is not None:
        return "a body transformer (on_generate_code)"
    if type(graph).python_code is not Graph.python_code or (
        type(graph)._python_code is not Graph._python_code
    ):
        return f"graph class {type(graph).__name__} generates its own code"
    if os.environ.get("FX_GRAPH_SHOW_META", "0") == "1":
        return "FX_GRAPH_SHOW_META=1"
    if _code_generation_functions() != _ORIGINALS:
        return "torch.fx code generation replaced after import"
    return None


@dataclasses.dataclass(frozen=True)
class PlannedEdit:
    """An edit of a graph described before it is made, for writing the edited
    graph's code early: the nodes it keeps, in their order after the edit, and
    the nodes whose uses go to another node (``replace_all_uses_with``). A
    node's users after it are the kept nodes that read it."""

    nodes: list[Node]
    redirect: dict[Node, Node]


def try_python_code(
    graph: Graph,
    root_module: str = "self",
    *,
    codegen: CodeGen | None = None,
    edit: PlannedEdit | None = None,
) -> PythonCode | str:
    """``graph.python_code(root_module)`` written natively, or the reason the
    emitter does not cover this graph (then nothing was changed). With `codegen`,
    as if it were the graph's code generator; with `edit`, the code the graph
    will have once `edit` is made."""
    cg = graph._codegen if codegen is None else codegen
    reason = _not_covered(graph, cg)
    if reason is not None:
        return reason
    info: Any = cg.pytree_info if isinstance(cg, _PyTreeCodeGen) else None
    if info and info.out_spec:  # as _PyTreeCodeGen.generate_output tests it
        prefix, suffix = "return pytree.tree_unflatten(", ", self._out_spec)"
    else:
        prefix, suffix = "return ", ""

    def gen_fn_def(free_vars: list[str], ret: str) -> str:
        return str(cg.gen_fn_def(free_vars, ret, expanded_def=False))

    try:
        emitter = _get_emitter()
        if edit is None:
            got = emitter.emit(graph.nodes, root_module, prefix, suffix, gen_fn_def)
        else:
            got = emitter.emit(
                edit.nodes,
                root_module,
                prefix,
                suffix,
                gen_fn_def,
                edit.redirect,
                users_from_nodes=True,
            )
    except Exception as e:  # noqa: BLE001 - a node the reader cannot read: FX decides
        return f"emitter error: {type(e).__name__}: {e}"
    if isinstance(got, str):
        return got
    src, globals_, lineno_map, prologue_start = got
    return PythonCode(
        src, globals_, _lineno_map=lineno_map, _prologue_start=prologue_start
    )


def python_code(graph: Graph, root_module: str = "self") -> PythonCode:
    """``graph.python_code(root_module)``: native where covered, FX's otherwise."""
    got = try_python_code(graph, root_module)
    if isinstance(got, PythonCode):
        return got
    FALLBACKS[got] += 1
    return graph.python_code(root_module)


def _profiler_metadata() -> bool:
    return bool(fx_experimental_config.enrich_profiler_metadata)


@dataclasses.dataclass
class EarlyCode:
    """A GraphModule's code written before its graph was edited (see
    :class:`PlannedEdit`), and its ``compile()`` done or under way
    (:mod:`pyfuse.compileworker`)."""

    code: PythonCode
    compiler: Compiler

    def cancel(self) -> None:
        """Drop the code: the edit will not be made."""
        self.compiler.cancel()


def early_code(
    graph: Graph, edit: PlannedEdit, codegen: CodeGen, worker: bool = False
) -> EarlyCode | None:
    """The code `graph` will have once `edit` is made and `codegen` is its code
    generator, compiled now, or in a worker process if `worker`; None where the
    emitter does not cover it (FX writes it after the edit)."""
    # (a worker first: its start-up overlaps the emission)
    compiler: Compiler = Worker() if worker else InProcess()
    got = try_python_code(graph, "self", codegen=codegen, edit=edit)
    if isinstance(got, str):
        compiler.cancel()
        return None
    compiler.send(got.src)
    return EarlyCode(got, compiler)


def _forward(
    code: PythonCode, co_fields: dict[str, Any], compiler: Compiler | None
) -> Any:
    """FX's ``_forward_from_src(code.src, code.globals, co_fields)``, taking the
    compiled code from `compiler` when it has it."""
    if compiler is None:
        return _forward_from_src(code.src, code.globals, co_fields)
    if _exec_functions() != _EXEC_ORIGINALS:
        compiler.cancel()
        return _forward_from_src(code.src, code.globals, co_fields)
    globals_copy = code.globals.copy()
    key = fx_graph_module._loader.cache(code.src, globals_copy, co_fields)
    compiled = compiler.code(key)
    if compiled is None:
        compiled = compile(code.src, key, "exec", dont_inherit=True)
    exec(compiled, globals_copy)  # noqa: S102 (FX's _exec_with_source)
    fn = globals_copy["forward"]
    del globals_copy["forward"]
    return fn


def recompile(gm: GraphModule, early: EarlyCode | None = None) -> PythonCode | None:
    """``gm.recompile()`` with natively generated code: the same ``_code``,
    ``forward``, ``_lineno_map``, ``_prologue_start``, linecache entry and wrapped
    ``__call__``; child GraphModules are recompiled the same way. Classes that
    define their own ``recompile`` (the lazy GraphModule) get theirs called.
    `early`: the code, written before the graph was edited into its present form."""
    if not isinstance(gm, GraphModule):
        raise TypeError(
            f"recompile needs a torch.fx.GraphModule, got {type(gm).__name__}"
        )
    cls = type(gm)
    if cls.recompile is not GraphModule.recompile or _profiler_metadata():
        if early is not None:
            early.cancel()
        result: PythonCode | None = gm.recompile()
        return result
    graph = gm._graph
    if isinstance(graph._codegen, _PyTreeCodeGen):
        gm._in_spec = graph._codegen.pytree_info.in_spec
        gm._out_spec = graph._codegen.pytree_info.out_spec
    code = python_code(graph, "self") if early is None else early.code
    gm._code = code.src
    gm._lineno_map = code._lineno_map
    gm._prologue_start = code._prologue_start
    co_fields: dict[str, Any] = graph._co_fields if hasattr(graph, "_co_fields") else {}
    cls.forward = _forward(code, co_fields, None if early is None else early.compiler)
    cls_call = cls.__call__ if "__call__" in vars(cls) else None
    if "_wrapped_call" not in vars(cls):
        cls._wrapped_call = _WrappedCall(cls, cls_call)  # type: ignore[attr-defined]
    for child in gm.children():
        if isinstance(child, GraphModule):
            recompile(child)
    cls.__call__ = _call_wrapped  # type: ignore[method-assign]
    return code


def _call_wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
    return self._wrapped_call(self, *args, **kwargs)


# The name FX's own wrapper has (it shows in tracebacks and profiles).
_call_wrapped.__name__ = "call_wrapped"
_call_wrapped.__qualname__ = "GraphModule.recompile.<locals>.call_wrapped"


def set_graph(gm: GraphModule, graph: Graph, early: EarlyCode | None = None) -> None:
    """``gm.graph = graph`` (FX's setter: own the graph, recompile) with
    :func:`recompile`: the hook for passes that build their output module."""
    if not isinstance(graph, Graph):
        raise TypeError(f"set_graph needs a torch.fx.Graph, got {type(graph).__name__}")
    gm._graph = graph
    graph.owning_module = gm
    recompile(gm, early)
