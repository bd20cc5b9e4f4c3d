"""Text comparison of the native emitter with torch.fx's own code generation."""

from __future__ import annotations

import difflib
import types

import torch.fx.graph_module
from torch.fx import Graph

from pyfuse import codegen


def same_code(graph: Graph, root_module: str = "self") -> str | None:
    """Asserts the emitter writes exactly what ``graph.python_code`` writes (source,
    globals by name and identity, line map, prologue start). Returns None, or the
    reason the emitter handed the graph back to FX."""
    ref = graph.python_code(root_module)
    got = codegen.try_python_code(graph, root_module)
    if isinstance(got, str):
        return got
    if got.src != ref.src:
        diff = "\n".join(
            difflib.unified_diff(
                ref.src.splitlines(), got.src.splitlines(), "fx", "pyfuse", lineterm=""
            )
        )
        raise AssertionError(f"emitted source differs from FX's:\n{diff}")
    assert list(got.globals) == list(ref.globals)
    for name, obj in ref.globals.items():
        assert got.globals[name] is obj, name
    assert got._lineno_map == ref._lineno_map
    assert got._prologue_start == ref._prologue_start
    return None


def module_code_is_fxs(gm) -> None:
    """Asserts a GraphModule's code is what FX writes for its graph now (source,
    line map, prologue start, the globals its forward sees, its forward's code
    object and where tracebacks find its lines): for outputs whose code was
    written before their graph was edited."""
    ref = gm.graph.python_code("self")
    assert gm.code == ref.src
    assert gm._lineno_map == ref._lineno_map
    assert gm._prologue_start == ref._prologue_start
    forward_globals = type(gm).forward.__globals__
    for name, obj in ref.globals.items():
        assert forward_globals[name] is obj, name
    got = type(gm).forward.__code__
    filename = got.co_filename
    assert filename.startswith("<eval_with_key>."), filename
    module = compile(ref.src, filename, "exec", dont_inherit=True)
    want = next(c for c in module.co_consts if isinstance(c, types.CodeType))
    assert got == want  # bytecode, constants, names, line table
    assert torch.fx.graph_module._loader.eval_cache[filename] == ref.src
