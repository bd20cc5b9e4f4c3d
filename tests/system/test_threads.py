"""Threads: concurrent passes give the one-by-one results, the native matcher releases
the GIL and agrees from several threads, the gc pause is shared (RELIABILITY.md
section 5)."""

from __future__ import annotations

import concurrent.futures
import gc
import random
import sys
import threading
import time
from typing import Any

import pytest
import torch
import torch.fx
from torch.ao.quantization.backend_config import (
    get_native_backend_config,
)

import pyfuse
from pyfuse import _core
from pyfuse.engine import gcpause
from pyfuse.engine.flatten import flatten
from tests.fx.traps import Trap
from tests.fx.unchanged import traced
from tests.support.contract import single_thread
from tests.support.corpus import BACKENDS


@pytest.fixture(autouse=True)
def _single_threaded():
    with single_thread():
        yield


# ======================================================================================
# 3-5. Concurrency: threads give the one-by-one results; the core releases the GIL
# ======================================================================================

#: (corpus model, backend, mode)
CONCURRENT = [
    ("resnet18", "native", "eval"),
    ("mobilenet_v2", "fbgemm", "eval"),
    ("vgg16_bn", "onednn", "qat"),
    ("densenet121", "tensorrt", "eval"),
    ("decoder_transpose", "qnnpack", "eval"),
    ("onednn_residual", "onednn", "eval"),
    ("multi_user", "native", "qat"),
    ("mlp", "executorch", "qat"),
]


def _fingerprint(gm: torch.fx.GraphModule, report) -> dict[str, Any]:
    return {
        "code": gm.code,
        "nodes": [
            (n.name, n.op, str(n.target), str(n.args), str(n.kwargs))
            for n in gm.graph.nodes
        ],
        # classes by name: every GraphModule (and parametrized module) has its own class
        "modules": [
            (n, type(m).__module__, type(m).__qualname__, m.training, m.extra_repr())
            for n, m in gm.named_modules()
        ],
        "state": gm.state_dict(),
        "report": (report.fused, report.skipped),
    }


def _assert_same(a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    for key in ("code", "nodes", "modules", "report"):
        assert a[key] == b[key], f"{what}: {key} differs"
    assert list(a["state"]) == list(b["state"]), f"{what}: state_dict keys differ"
    for k, v in a["state"].items():
        assert torch.equal(v, b["state"][k]), f"{what}: state_dict[{k!r}] differs"


def test_threads_fuse_like_one_by_one():
    rounds, workers = 3, 4
    # tracing patches globals (not thread-safe): every input is traced here, up front
    inputs = {
        case: [traced(case[0], case[2]) for _ in range(rounds + 1)]
        for case in CONCURRENT
    }
    configs = {case: BACKENDS[case[1]]() for case in CONCURRENT}

    def run(case, gm, config):
        out, report = pyfuse.fuse(
            gm, case[2] == "qat", None, config, return_report=True
        )
        return _fingerprint(out, report)

    alone = {case: run(case, inputs[case][0], configs[case]) for case in CONCURRENT}
    assert sum(len(fp["report"][0]) for fp in alone.values()) > 50, "fusions to compare"
    for r in range(1, rounds + 1):
        order = list(CONCURRENT)
        random.Random(r).shuffle(order)
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            futures = {
                case: pool.submit(run, case, inputs[case][r], configs[case])
                for case in order
            }
            got = {case: f.result() for case, f in futures.items()}
        for case in CONCURRENT:
            _assert_same(alone[case], got[case], f"round {r} {case}")
    n_fused = sum(len(fp["report"][0]) for fp in alone.values())
    print(
        f"\n[threads] {len(CONCURRENT)} models ({n_fused} fusions), {rounds} rounds on "
        f"{workers} threads: all equal to one-by-one"
    )
    assert gc.isenabled(), "the collector is on again after concurrent passes"


def test_threads_build_a_new_plan_concurrently():
    """A backend config no pass has seen: four threads build its plan at once."""
    names = ["resnet18", "mlp", "vgg16_bn", "onednn_residual"]
    base = get_native_backend_config()

    def run(gm, config):
        out, report = pyfuse.fuse(gm, False, None, config, return_report=True)
        return _fingerprint(out, report)

    alone = {name: run(traced(name), Trap().config(base)) for name in names}
    for _ in range(3):
        inputs = [traced(name) for name in names]
        shared = Trap().config(base)  # new fuser functions: a new plan
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            got = list(pool.map(run, inputs, [shared] * len(names)))
        for name, fp in zip(names, got, strict=True):
            _assert_same(alone[name], fp, name)


def native_plan():
    from pyfuse.fx.plan import native_plan

    return native_plan()


def match_tuple(res) -> tuple[Any, ...]:
    assert res.error == ""
    return (res.owner, res.roots, res.patterns, res.claimed, res.claimed_off)


def test_core_match_from_threads_equals_serial():
    compiled = native_plan().compiled
    flats = [
        flatten(gm.graph, gm, compiled).graph
        for gm in (
            traced(n) for n in ("resnet50", "deep_chain", "densenet121", "video3d")
        )
    ]
    serial = [match_tuple(compiled.automaton.match(f)) for f in flats]
    assert all(s[1] for s in serial), "every graph has matches"
    jobs = [i % len(flats) for i in range(200)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(
            pool.map(lambda i: match_tuple(compiled.automaton.match(flats[i])), jobs)
        )
    for i, g in zip(jobs, got, strict=True):
        assert g == serial[i]
    print(f"\n[threads/core] {len(jobs)} matches on 4 threads: all equal to serial")


def _chain_automaton_and_graph(pairs: int):
    """Automaton for (ReLU, Conv) / ReLU over labels 1 = Conv, 2 = ReLU, and a chain
    x -> (conv -> relu) * pairs, as integer arrays (tests/support/arrays.py's encoding)."""
    automaton = _core.Automaton(
        [1, 1, 1], [1, 2, 2], [0, 1, 0], [0, 0, 1, 1], [0], [1, 2], [0, 1, 0], 3
    )
    n = 1 + 2 * pairs
    label = [0] + [1, 2] * pairs
    users = [1] * (n - 1) + [0]
    graph = _core.FlatGraph(label, users, [0, *range(n)], list(range(n - 1)))
    return automaton, graph


def _other_thread_steps_during(call, repeats: int = 1) -> list[int]:
    """Steps a second thread makes while the main thread runs ``call()``.

    The second thread sleeps 1 ms (without the GIL) between steps. The switch interval
    is set to 100 s, so the interpreter never takes the GIL from the main thread by
    itself: the second thread can step during ``call()`` only if ``call`` releases the
    GIL. No timing is asserted, only whether steps happened."""
    steps = [0]
    stop = threading.Event()

    def step():
        while not stop.is_set():
            steps[0] += 1
            time.sleep(0.001)

    old = sys.getswitchinterval()
    thread = threading.Thread(target=step)
    thread.start()
    out = []
    try:
        sys.setswitchinterval(100.0)
        time.sleep(0.05)  # waits begun under the old interval are over
        for _ in range(repeats):
            before = steps[0]
            call()
            out.append(steps[0] - before)
            if out[-1]:
                break
    finally:
        sys.setswitchinterval(old)
        stop.set()
        thread.join()
    return out


def test_core_match_releases_the_gil():
    automaton, graph = _chain_automaton_and_graph(300_000)
    assert len(automaton.match(graph).roots) == 300_000  # a real, long match
    # the OS must also schedule the other thread during the call: a few tries
    during_match = _other_thread_steps_during(lambda: automaton.match(graph), repeats=5)
    # control: a call that holds the GIL (a C loop) lets the other thread do nothing
    during_sum = _other_thread_steps_during(lambda: sum(range(5_000_000)))
    print(
        f"\n[gil] other thread's steps: during match {during_match}, during sum {during_sum}"
    )
    assert any(during_match)
    assert during_sum == [0]


def test_gc_pause_is_shared_by_overlapping_passes():
    """Overlapping passes (as in several threads) share one pause: the collector
    stays off while any pass runs and is back on when the last one ends, whatever
    the order they end in (the first version lost the state in one interleaving)."""
    assert gc.isenabled()
    try:
        a = gcpause.gc_paused()
        b = gcpause.gc_paused()
        a.__enter__()
        b.__enter__()
        a.__exit__(None, None, None)  # A ends first: B still runs
        assert not gc.isenabled()
        b.__exit__(None, None, None)
        assert gc.isenabled()
        gc.disable()  # a user who disabled the collector keeps it disabled
        with gcpause.gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_gc_is_enabled_after_concurrent_passes():
    models = [traced("resnet18") for _ in range(8)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda gm: pyfuse.fuse(gm, False), models))
    assert gc.isenabled()


def test_gc_pause_hands_the_pass_objects_to_the_oldest_generation():
    """What a pass allocates is its output: when the pause ends it goes to the
    oldest generation unwalked (no young collection of it on the next
    allocation), unless the process froze objects of its own, which stay frozen."""
    assert gc.isenabled()
    with gcpause.gc_paused():
        made = [[] for _ in range(5000)]
    assert gc.get_count()[0] < 100
    assert any(x is made for x in gc.get_objects(generation=2))
    assert gc.get_freeze_count() == 0

    mine = [{}]  # a process that froze its heap (e.g. before forking workers)
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with gcpause.gc_paused():
            later = [[] for _ in range(5000)]
        assert gc.get_freeze_count() == frozen
        assert not any(x is later for x in gc.get_objects(generation=2))
        assert mine
    finally:
        gc.unfreeze()
