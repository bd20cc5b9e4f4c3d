"""The FX pass writes its output's code before editing the graph, from the edit
it plans, and compiles it in a worker process on large graphs: the text must be
FX's text of the edited graph, and the forward the one FX's ``recompile`` makes."""

from __future__ import annotations

import linecache
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.fx
from torch import nn

import pyfuse
from pyfuse import compileworker
from pyfuse.bench.workloads import resnet_like
from tests.codegen.compare import module_code_is_fxs
from tests.support.contract import reference_fuse

# (quick: the worker reads FX's loader and compile flags, and marshal, which may
# change with the Python or torch version)
pytestmark = pytest.mark.quick


class DeadEnds(nn.Module):
    """Fused chains whose results nobody reads, next to one that is read: FX frees
    a dead value right after the node that makes it."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3, 3, 1) for _ in range(3))
        self.bns = nn.ModuleList(nn.BatchNorm2d(3) for _ in range(3))
        self.relus = nn.ModuleList(nn.ReLU() for _ in range(3))

    def forward(self, x):
        self.relus[0](self.bns[0](self.convs[0](x)))  # dead: conv-bn-relu
        self.bns[1](self.convs[1](x))  # dead: conv-bn
        y = self.relus[2](self.bns[2](self.convs[2](x)))
        return y + x


@pytest.fixture
def worker_always(monkeypatch):
    """Compile in a worker at any graph size (and count the workers)."""
    monkeypatch.setenv("PYFUSE_COMPILE_WORKER", "always")
    started = []
    real_init = compileworker.Worker.__init__

    def init(self):
        real_init(self)
        started.append(self._proc)

    monkeypatch.setattr(compileworker.Worker, "__init__", init)
    return started


def _trace(model, train=False):
    return torch.fx.symbolic_trace(model.train(train))


@pytest.mark.parametrize("is_qat", [False, True])
def test_dead_fused_values_are_freed_where_fx_frees_them(is_qat):
    model = DeadEnds()
    out = pyfuse.fuse(_trace(model, is_qat), is_qat)
    ref = reference_fuse(_trace(model, is_qat), is_qat)
    assert out.code == ref.code
    assert "relus_0 = None" in out.code or "convs_0 = None" in out.code
    module_code_is_fxs(out)


@pytest.mark.parametrize("is_qat", [False, True])
def test_worker_compiles_the_same_forward(worker_always, is_qat):
    model = DeadEnds()
    out = pyfuse.fuse(_trace(model, is_qat), is_qat)
    ref = reference_fuse(_trace(model, is_qat), is_qat)
    assert len(worker_always) == 1
    assert worker_always[0].returncode == 0
    assert out.code == ref.code
    module_code_is_fxs(out)
    got, want = type(out).forward.__code__, type(ref).forward.__code__
    assert got == want  # bytecode, constants, names, line table
    assert got.co_filename.startswith("<eval_with_key>.")
    assert got.co_filename != want.co_filename  # each output its own key
    assert torch.fx.graph_module._loader.eval_cache[got.co_filename] == out.code
    assert linecache.getline(got.co_filename, 4) == out.code.splitlines()[3] + "\n"
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(out.eval()(x), ref.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("is_qat", [False, True])
def test_by_default_the_early_code_compiles_in_process(monkeypatch, is_qat):
    sent = []
    real_send = compileworker.InProcess.send
    monkeypatch.setattr(
        compileworker.InProcess,
        "send",
        lambda self, src: (sent.append(src), real_send(self, src)),
    )
    monkeypatch.delenv("PYFUSE_COMPILE_WORKER", raising=False)
    model = DeadEnds()
    out = pyfuse.fuse(_trace(model, is_qat), is_qat)
    ref = reference_fuse(_trace(model, is_qat), is_qat)
    assert sent == [out.code] == [ref.code]
    module_code_is_fxs(out)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(out.eval()(x), ref.eval()(x), rtol=0, atol=0)


def test_source_that_does_not_compile_is_left_to_fx():
    early = compileworker.InProcess()
    early.send("def forward(self:\n    pass\n")
    assert early.code("<eval_with_key>.x") is None
    early.send("x = 1\n")
    early.cancel()
    assert early.code("<eval_with_key>.x") is None


def test_worker_code_equals_in_process_compile():
    src = pyfuse.fuse(resnet_like(40), False).code
    worker = compileworker.Worker()
    worker.send(src)
    got = worker.code("<eval_with_key>.x")
    want = compile(src, "<eval_with_key>.x", "exec", dont_inherit=True)
    assert got is not None
    assert got == want
    inner = [c for c in got.co_consts if hasattr(c, "co_filename")]
    assert [c.co_filename for c in inner] == ["<eval_with_key>.x"]
    assert inner == [c for c in want.co_consts if hasattr(c, "co_filename")]
    if sys.platform == "linux":
        assert compileworker.PEAK_KIB[0] > 0


@pytest.mark.parametrize("breakage", ["no interpreter", "another Python", "bad output"])
def test_a_failed_worker_leaves_the_compile_to_the_process(
    worker_always, monkeypatch, breakage
):
    if breakage == "no interpreter":
        monkeypatch.setattr(compileworker.sys, "executable", "/nonexistent/python")
    elif breakage == "another Python":
        monkeypatch.setattr(compileworker, "_SCRIPT", "import sys; sys.exit(3)")
    else:
        monkeypatch.setattr(
            compileworker, "_SCRIPT", "import sys; sys.stdout.write('not marshal')"
        )
    model = DeadEnds()
    out = pyfuse.fuse(_trace(model), False)
    ref = reference_fuse(_trace(model), False)
    assert len(worker_always) == 1
    assert out.code == ref.code
    assert type(out).forward.__code__ == type(ref).forward.__code__
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(out(x), ref(x), rtol=0, atol=0)


def test_a_failing_fuser_stops_the_worker_and_leaves_the_model(worker_always):
    from torch.ao.quantization.backend_config import (
        BackendConfig,
        BackendPatternConfig,
    )

    def broken(*_modules):
        raise RuntimeError("fuser says no")

    config = BackendConfig("broken").set_backend_pattern_config(
        BackendPatternConfig((nn.Conv2d, nn.BatchNorm2d)).set_fuser_method(broken)
    )
    gm = _trace(DeadEnds())
    before = gm.code
    with pytest.raises(RuntimeError, match="fuser says no"):
        pyfuse.fuse(gm, False, backend_config=config)
    assert gm.code == before
    assert gm.graph.python_code("self").src == before
    assert len(worker_always) == 1
    assert worker_always[0].returncode is not None  # killed and reaped


def test_the_worker_runs_only_where_asked_for_where_it_pays_and_is_allowed(
    monkeypatch,
):
    monkeypatch.delenv("PYFUSE_COMPILE_WORKER", raising=False)
    monkeypatch.setattr(compileworker, "_cpus", lambda: 2)
    monkeypatch.setattr(compileworker.sys, "executable", "/usr/bin/python3.11")
    big, small = compileworker.MIN_NODES, compileworker.MIN_NODES - 1
    assert not compileworker.wanted(10**6)  # off unless asked for
    assert compileworker.wanted(big, True)
    assert not compileworker.wanted(small, True)
    for setting, default in [("1", True), ("0", False), ("", False)]:
        monkeypatch.setenv("PYFUSE_COMPILE_WORKER", setting)
        assert compileworker.wanted(big) is default
        assert not compileworker.wanted(small)
        assert compileworker.wanted(big, True)  # the argument wins
        assert not compileworker.wanted(big, False)
    monkeypatch.setenv("PYFUSE_COMPILE_WORKER", "always")
    assert compileworker.wanted(1, False)
    monkeypatch.delenv("PYFUSE_COMPILE_WORKER")
    monkeypatch.setattr(compileworker, "_cpus", lambda: 1)
    assert not compileworker.wanted(10**6, True)
    monkeypatch.setattr(compileworker, "_cpus", lambda: 2)
    # an embedded Python's host program, or a frozen application: not run
    for host in ("/usr/bin/uwsgi", ""):
        monkeypatch.setattr(compileworker.sys, "executable", host)
        assert not compileworker.wanted(10**6, True)
    monkeypatch.setattr(compileworker.sys, "executable", "/usr/bin/python3.11")
    monkeypatch.setattr(compileworker.sys, "frozen", True, raising=False)
    assert not compileworker.wanted(10**6, True)


@pytest.fixture
def popens(monkeypatch):
    """The processes compileworker starts, on a 2-CPU machine."""
    started = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(compileworker.subprocess, "Popen", popen)
    monkeypatch.setattr(compileworker, "_cpus", lambda: 2)
    monkeypatch.delenv("PYFUSE_COMPILE_WORKER", raising=False)
    return started


def test_a_large_graph_compiles_in_a_worker_when_asked(popens):
    gm = resnet_like(1400)  # 9,802 nodes, 4,202 after fusion
    out = pyfuse.fuse(gm, True, compile_worker=True)
    assert len(out.graph.nodes) >= compileworker.MIN_NODES
    assert [p.returncode for p in popens] == [0]
    module_code_is_fxs(out)


def test_by_default_no_process_is_started(popens):
    out = pyfuse.fuse(resnet_like(1400), True)
    assert len(out.graph.nodes) >= compileworker.MIN_NODES
    out = pyfuse.fuse_fx(resnet_like(1400))
    assert popens == []
    module_code_is_fxs(out)


class AddOfBn(nn.Module):
    """``other(x) + bn(conv(x))``: fused as (add, MatchAllNode, BatchNorm2d), the add
    goes, and nothing reads other(x) any more."""

    def __init__(self) -> None:
        super().__init__()
        self.other = nn.Conv2d(3, 3, 1)
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.other(x) + self.bn(self.conv(x))


def test_a_value_only_an_erased_node_read_is_freed_where_fx_frees_it():
    import operator

    from torch.ao.quantization.backend_config import (
        BackendConfig,
        BackendPatternConfig,
    )
    from torch.ao.quantization.utils import MatchAllNode

    def keep_bn(_is_qat, _add, _other, bn):
        return nn.Sequential(bn)

    config = BackendConfig("add-of-bn").set_backend_pattern_config(
        BackendPatternConfig()
        ._set_pattern_complex_format((operator.add, MatchAllNode, nn.BatchNorm2d))
        .set_fuser_method(keep_bn)
    )
    model = AddOfBn().eval()
    out = pyfuse.fuse(torch.fx.symbolic_trace(model), False, backend_config=config)
    ref = reference_fuse(torch.fx.symbolic_trace(model), False, backend_config=config)
    assert out.code == ref.code
    assert "other = None" in out.code
    module_code_is_fxs(out)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="code positions: Python 3.11+")
def test_the_worker_compiles_as_this_interpreter_does_without_column_positions():
    """(The worker runs without -X no_debug_ranges: the code object it sends is
    stripped of columns when this interpreter makes it.)"""
    script = """
import torch.fx, pyfuse
from pyfuse import compileworker
from tests.codegen.test_early_code import DeadEnds
out = pyfuse.fuse(torch.fx.symbolic_trace(DeadEnds().eval()), False)
got = type(out).forward.__code__
want = [c for c in compile(out.code, got.co_filename, "exec", dont_inherit=True)
        .co_consts if hasattr(c, "co_positions")][0]
assert compileworker.PEAK_KIB[0] > 0, "the worker did not run"
assert list(got.co_positions()) == list(want.co_positions())
assert all(p[2] is None for p in got.co_positions())
print("ok")
"""
    env = {**os.environ, "PYFUSE_COMPILE_WORKER": "always"}
    done = subprocess.run(
        [sys.executable, "-X", "no_debug_ranges", "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
