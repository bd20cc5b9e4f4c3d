"""pytest-benchmark suite: pyfuse against the reference fusion pass.

Environment:

* ``PYFUSE_BENCH_SIZES``: ``small`` (default; tiny graphs, a smoke test that
  ``pytest bench --benchmark-disable`` runs in seconds) or ``standard``
  (~1k-100k nodes, the sizes of ``pyfuse bench``; the reference takes ~10 s per
  run at 100k nodes).
* ``PYFUSE_BENCH_ROUNDS``: timed rounds per benchmark (default 5 small, 3 standard).
* ``PYFUSE_BENCH_QAT=1``: train-mode models fused with ``is_qat=True``.

Every round gets a freshly built input (fusion consumes its input); building it
is pedantic's untimed ``setup``, which also runs ``gc.collect()``.  The gc is
otherwise left alone (``--benchmark-disable-gc`` disables it for every
benchmark alike).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from pyfuse.bench import workloads as W

SIZE_SET = os.environ.get("PYFUSE_BENCH_SIZES", "small")

_SMALL: dict[str, list[int]] = {
    "resnet": [2, 20],
    "mixed": [1, 3],
    "onednn": [2, 10],
}


def bench_sizes() -> dict[str, list[int]]:
    if SIZE_SET == "small":
        sizes = {k: list(v) for k, v in _SMALL.items()}
    elif SIZE_SET == "standard":
        sizes = W.size_set("standard")
    else:
        raise pytest.UsageError(
            f"PYFUSE_BENCH_SIZES={SIZE_SET!r}: expected 'small' or 'standard'"
        )
    sizes["match"] = list(sizes["resnet"])
    return sizes


ROUNDS = int(os.environ.get("PYFUSE_BENCH_ROUNDS", "5" if SIZE_SET == "small" else "3"))
QAT = os.environ.get("PYFUSE_BENCH_QAT", "") not in ("", "0")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    sizes = bench_sizes()
    for kind in ("resnet", "mixed", "onednn", "match"):
        argname = f"{kind}_blocks"
        if argname in metafunc.fixturenames:
            metafunc.parametrize(argname, sizes[kind], ids=lambda n: f"{n}blk")


@pytest.fixture(scope="session")
def rounds() -> int:
    return ROUNDS


@pytest.fixture(scope="session")
def qat() -> bool:
    return QAT


@pytest.fixture(scope="session")
def reference_fuse() -> Callable[..., Any]:
    from tests.support.contract import REFERENCE_FUSE

    return REFERENCE_FUSE


@pytest.fixture(scope="session")
def pyfuse_fuse() -> Callable[..., Any]:
    import pyfuse

    fuse = getattr(pyfuse, "fuse", None)
    if fuse is None:
        pytest.fail("pyfuse.fuse is not available")
    return fuse


@pytest.fixture(scope="session")
def reference_codes() -> dict[tuple[str, int, bool], str]:
    """(kind, n_blocks, qat) -> ``.code`` of the reference's output (filled by the
    reference benchmarks, or computed on demand by ``reference_code``)."""
    return {}


@pytest.fixture(scope="session")
def reference_code(
    reference_codes: dict[tuple[str, int, bool], str],
    reference_fuse: Callable[..., Any],
) -> Callable[[W.Workload], str]:
    def get(wl: W.Workload) -> str:
        key = (wl.kind, wl.n_blocks, wl.is_qat)
        code = reference_codes.get(key)
        if code is None:
            out = reference_fuse(wl.fresh(), wl.is_qat, None, wl.backend_config())
            code = reference_codes[key] = out.code
        return code

    return get
