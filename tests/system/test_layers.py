"""The package's layer map (CONTRIBUTING.md), enforced: every import of a pyfuse
module, read from the source (ast), goes to a lower layer.

Layers, lowest first; a module may import only modules of a lower number. Inside
a subpackage listed stage by stage the stages are ordered too; a subpackage
listed as a whole (``pyfuse.export``) may import within itself. The FX and export
flows never import each other, nor do the engine and the fusion map; only the CLI
is above ``pyfuse.bench``, and nothing in the package imports the tests. No
module is longer than ``MAX_LINES``: a longer one holds more than one stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pyfuse"

#: module (or whole subpackage, with ".*") -> layer
LAYERS: dict[str, int] = {
    # shared facts: no pyfuse imports of their own
    "pyfuse._version": 0,
    "pyfuse._core": 0,
    "pyfuse.errors": 0,
    "pyfuse.report": 1,
    # the fusion map: plain data in, HTML out (both flows and explain draw with it),
    # stage by stage beside the engine (the two never import each other)
    "pyfuse.htmlmap.model": 2,
    "pyfuse.htmlmap.layout": 3,
    "pyfuse.htmlmap.template": 2,
    "pyfuse.htmlmap.render": 4,
    "pyfuse.htmlmap": 5,
    # engine: flow-agnostic stages on the native core
    "pyfuse.engine": 2,
    "pyfuse.engine.gcpause": 2,
    "pyfuse.engine.patterns": 2,
    "pyfuse.engine.flatten": 3,
    "pyfuse.engine.matching": 4,
    # compile() in a worker process (plain Python: no torch, no pyfuse imports)
    "pyfuse.compileworker": 2,
    # the native code emitter (pyfuse.recompile), used by both flows' outputs
    "pyfuse.codegen": 5,
    # the FX pass, stage by stage
    "pyfuse.fx": 10,
    "pyfuse.fx.folding": 10,
    "pyfuse.fx.fusers": 11,
    "pyfuse.fx.plan": 12,
    "pyfuse.fx.prepare": 13,
    "pyfuse.fx.checks": 14,
    "pyfuse.fx.rewrite": 15,
    "pyfuse.fx.output": 15,
    "pyfuse.fx.pipeline": 16,
    # the export flow (its own stages, beside the FX pass)
    "pyfuse.export": 10,
    "pyfuse.export.*": 10,
    # facades on the flows
    "pyfuse.explain": 20,
    "pyfuse.adopt": 20,
    "pyfuse.pt2e": 20,
    "pyfuse.models": 20,
    # the public surface
    "pyfuse": 24,
    # the benchmark command: may import everything above
    "pyfuse.bench.load": 25,
    "pyfuse.bench.specs": 25,
    "pyfuse.bench.memory": 25,
    "pyfuse.bench.realwidth": 26,
    "pyfuse.bench.workloads": 26,
    "pyfuse.bench.export_workloads": 26,
    "pyfuse.bench.cases": 27,
    "pyfuse.bench.floors": 28,
    "pyfuse.bench.digests": 28,
    "pyfuse.bench.samples": 28,
    "pyfuse.bench.fresh": 29,
    "pyfuse.bench.heap": 29,
    "pyfuse.bench.tables": 30,
    "pyfuse.bench.profile": 31,
    "pyfuse.bench.export_tables": 31,
    "pyfuse.bench.harness": 32,
    "pyfuse.bench.export_flow": 32,
    "pyfuse.bench.cli": 33,
    "pyfuse.bench": 34,
    # the CLI
    "pyfuse.__main__": 40,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> tuple[int, str] | None:
    """(layer, the map's key) of `module`, or None if the map does not cover it."""
    if module in LAYERS:
        return LAYERS[module], module
    parts = module.split(".")
    for k in range(len(parts) - 1, 0, -1):
        key = ".".join(parts[:k]) + ".*"
        if key in LAYERS:
            return LAYERS[key], key
    return None


#: subpackages of one level that never import each other, and why
APART = {
    frozenset({"pyfuse.fx", "pyfuse.export"}): "the FX and export flows",
    frozenset({"pyfuse.engine", "pyfuse.htmlmap"}): "the engine and the fusion map",
}

#: the longest a module may be
MAX_LINES = 450


def _package(module: str) -> str:
    """The top subpackage of `module` (``pyfuse.fx`` for ``pyfuse.fx.plan``)."""
    return ".".join(module.split(".")[:2])


def _is_module(name: str) -> bool:
    """Whether `name` is a module (source, native module with its stubs, package)."""
    path = ROOT / Path(*name.split("."))
    return any(
        p.exists()
        for p in (
            path.with_suffix(".py"),
            path.with_suffix(".pyi"),
            path / "__init__.py",
        )
    )


def _imports(source: str, path: Path, module: str) -> list[tuple[int, str]]:
    """(line, module) of every pyfuse / tests module `source` (the text of `path`,
    module `module`) imports, anywhere in it."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((node.lineno, sub if _is_module(sub) else base))
    return [(line, m) for line, m in found if m.split(".")[0] in ("pyfuse", "tests")]


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_map_covers_every_module():
    missing = [_module_name(p) for p in SOURCES if _layer(_module_name(p)) is None]
    assert not missing, (
        f"add these modules to the layer map (and CONTRIBUTING.md): {missing}"
    )


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layer_map(path: Path):
    module = _module_name(path)
    here = _layer(module)
    assert here is not None, f"{module} is not in the layer map"
    bad = []
    for line, target in _imports(path.read_text(), path, module):
        where = f"{path.relative_to(ROOT)}:{line} imports {target}"
        if target.split(".")[0] == "tests":
            bad.append(f"{where}: the package never imports the tests")
            continue
        apart = APART.get(frozenset({_package(module), _package(target)}))
        if apart is not None:
            bad.append(f"{where}: {apart} never import each other")
            continue
        there = _layer(target)
        if there is None:
            continue  # (an uncovered module fails the test above)
        same_package = here[1] == there[1] and here[1].endswith(".*")
        if target == module or same_package or there[0] < here[0]:
            continue
        bad.append(
            f"{where}: layer {there[0]} ({there[1]}) is not below layer {here[0]} ({here[1]})"
        )
    assert not bad, "\n".join(bad)


def test_no_module_is_longer_than_the_limit():
    """A module over MAX_LINES holds more than one stage: split it by role."""
    lengths = {p: len(p.read_text().splitlines()) for p in SOURCES}
    long = [
        f"{p.relative_to(ROOT)} ({n} lines)"
        for p, n in lengths.items()
        if n > MAX_LINES
    ]
    assert not long, f"split these modules (over {MAX_LINES} lines): {long}"
    assert max(lengths.values()) > MAX_LINES // 4  # (the sources were read)


def test_the_check_sees_a_wrong_import():
    """The parser finds relative imports, imports inside functions and submodules
    imported by name (a check that finds nothing would pass anything)."""
    src = "from ..fx import pipeline\ndef f():\n    from .patterns import compile_patterns\n"
    path = PACKAGE / "engine" / "matching.py"
    found = [m for _, m in _imports(src, path, "pyfuse.engine.matching")]
    assert found == ["pyfuse.fx.pipeline", "pyfuse.engine.patterns"]
    assert LAYERS["pyfuse.fx.pipeline"] > LAYERS["pyfuse.engine.matching"]
    assert _package("pyfuse.htmlmap.render") == "pyfuse.htmlmap"
    assert frozenset({"pyfuse.htmlmap", _package("pyfuse.engine.patterns")}) in APART
