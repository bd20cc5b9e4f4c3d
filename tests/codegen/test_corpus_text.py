"""The emitter writes FX's text for every graph the model corpus builds: each model
traced (eval and train), fused by pyfuse (every backend it is checked with, eval
and QAT; the output's code, written before its graph was edited, is FX's text of
the edited graph), exported with torch.export (and after run_decompositions). None of
these graphs may fall back to FX."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx

import pyfuse
from pyfuse import codegen
from tests.codegen.compare import module_code_is_fxs, same_code
from tests.support.corpus import BACKENDS, MODELS, MODELS_BY_NAME

NAMES = [cm.name for cm in MODELS]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _traced(name: str, train: bool) -> torch.fx.GraphModule:
    model = MODELS_BY_NAME[name].factory()
    return torch.fx.symbolic_trace(model.train() if train else model.eval())


def _fused(
    name: str, train: bool, backend: str = "native"
) -> torch.fx.GraphModule | None:
    """pyfuse's output, or None where pyfuse (as the reference) rejects the model."""
    try:
        return pyfuse.fuse(
            _traced(name, train), train, backend_config=BACKENDS[backend]()
        )
    except Exception:  # noqa: BLE001 - rejected by the reference too (tests/fx checks how)
        return None


@pytest.mark.parametrize("name", NAMES)
def test_traced_and_fused(name):
    cm = MODELS_BY_NAME[name]
    graphs = 0
    for train in (False, True):
        gm = _traced(name, train)
        assert same_code(gm.graph) is None
        graphs += 1
        for backend in cm.backends:
            out = _fused(name, train, backend)
            if out is not None:
                assert same_code(out.graph) is None
                # (written from the planned edit, before the graph was edited)
                module_code_is_fxs(out)
                graphs += 1
    assert graphs >= 2


@pytest.mark.parametrize("name", NAMES)
def test_recompile_matches_fx(name):
    """pyfuse.recompile on a fused model: FX's code and attributes, same outputs."""
    cm = MODELS_BY_NAME[name]
    out = _fused(name, False) or _traced(name, False)
    ref = copy.deepcopy(out)
    ref.recompile()
    before = dict(codegen.FALLBACKS)
    pyfuse.recompile(out)
    assert dict(codegen.FALLBACKS) == before
    assert out.code == ref.code
    assert out._lineno_map == ref._lineno_map
    assert out._prologue_start == ref._prologue_start
    inputs = cm.example_inputs_factory()
    with torch.no_grad():
        torch.testing.assert_close(out(*inputs), ref(*inputs), rtol=0, atol=0)


# torch's own deprecation warning when it deep-copies a tree spec
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
@pytest.mark.parametrize("name", NAMES)
def test_exported(name):
    cm = MODELS_BY_NAME[name]
    model = cm.factory().eval()
    inputs = cm.example_inputs_factory()
    ep = torch.export.export(model, inputs)
    decomposed = ep.run_decompositions()
    for gm in (ep.module(), decomposed.module()):
        assert type(gm.graph._codegen).__name__ == "_PyTreeCodeGen"
        assert same_code(gm.graph) is None
        ref = copy.deepcopy(gm)
        pyfuse.recompile(gm)
        assert gm.code == ref.code
        with torch.no_grad():
            torch.testing.assert_close(gm(*inputs), ref(*inputs), rtol=0, atol=0)


def test_corpus_is_covered_without_fallback():
    """The corpus tests above would pass on fallbacks too: they must not occur."""
    before = sum(codegen.FALLBACKS.values())
    for name in ("resnet18", "mobilenet_v2", "densenet121", "add_kwarg"):
        gm = _traced(name, False)
        assert not isinstance(codegen.try_python_code(gm.graph), str)
        codegen.python_code(gm.graph)
    assert sum(codegen.FALLBACKS.values()) == before
