"""``pyfuse.patch_torch()``: torch's ``prepare_fx``, ``prepare_qat_fx`` and ``fuse_fx``
really run pyfuse (pyfuse's calls counted, torch's pass not run), give what they give
unpatched, and no patch can reach the tests' reference (pinned at import).

Every test leaves torch unpatched, even when it fails (fixture ``_unpatched``).
"""

from __future__ import annotations

import copy
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import pyfuse
from pyfuse.fx import pipeline
from tests.fuzz import fixed_reference
from tests.support.contract import (
    REFERENCE_FUSE,
    assert_same_fusion,
    reference_fuse,
    reference_fuse_fx,
    single_thread,
)
from tests.support.corpus import MODELS_BY_NAME

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch.ao.quantization import (
        get_default_qat_qconfig_mapping,
        get_default_qconfig_mapping,
    )
    from torch.ao.quantization.quantize_fx import fuse_fx, prepare_fx, prepare_qat_fx

REPO = Path(__file__).resolve().parents[2]
_TORCH_FUSE_MODULE = importlib.import_module("torch.ao.quantization.fx.fuse")
_QUANTIZE_FX = importlib.import_module("torch.ao.quantization.quantize_fx")
_SITES = [
    (_QUANTIZE_FX, "fuse"),
    (importlib.import_module("torch.ao.quantization.fx"), "fuse"),
    (_TORCH_FUSE_MODULE, "fuse"),
]


def _torch_is_unpatched() -> bool:
    return all(getattr(mod, name) is REFERENCE_FUSE for mod, name in _SITES)


@pytest.fixture(autouse=True)
def _unpatched():
    assert _torch_is_unpatched(), "a patch was left in place before this test"
    try:
        with single_thread():
            yield
    finally:
        pyfuse.unpatch_torch()
    assert _torch_is_unpatched()


@pytest.fixture
def calls(monkeypatch):
    """Counts pyfuse's passes and torch's walks (torch's pass runs its walk once)."""
    counts = {"pyfuse": 0, "torch": 0}
    pyfuse_fuse, torch_walk = pipeline.fuse, _TORCH_FUSE_MODULE._find_matches

    def counting_fuse(*args, **kwargs):
        counts["pyfuse"] += 1
        return pyfuse_fuse(*args, **kwargs)

    def counting_walk(*args, **kwargs):
        counts["torch"] += 1
        return torch_walk(*args, **kwargs)

    monkeypatch.setattr(pipeline, "fuse", counting_fuse)
    monkeypatch.setattr(_TORCH_FUSE_MODULE, "_find_matches", counting_walk)
    return counts


def _model(qat: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS_BY_NAME["resnet18"].factory().train(qat)


_INPUTS = MODELS_BY_NAME["resnet18"].example_inputs_factory()

FLOWS = {
    "prepare_fx": lambda: prepare_fx(
        _model(False), get_default_qconfig_mapping(), _INPUTS
    ),
    "prepare_qat_fx": lambda: prepare_qat_fx(
        _model(True), get_default_qat_qconfig_mapping(), _INPUTS
    ),
    "fuse_fx": lambda: fuse_fx(_model(False)),
}


@pytest.mark.parametrize("flow", list(FLOWS))
def test_patched_flow_runs_pyfuse_not_torch(flow, calls):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = FLOWS[flow]()  # unpatched: torch's pass
        assert calls == {"pyfuse": 0, "torch": 1}, calls
        with pyfuse.patched():
            got = FLOWS[flow]()
    assert calls == {"pyfuse": 1, "torch": 1}, calls
    assert _torch_is_unpatched()
    assert_same_fusion(want, got, _INPUTS)


def test_patch_torch_then_unpatch_torch_routes_and_restores(calls):
    pyfuse.patch_torch()
    pyfuse.patch_torch()  # idempotent
    assert not _torch_is_unpatched()
    fuse_fx(_model(False))
    assert calls == {"pyfuse": 1, "torch": 0}, calls
    pyfuse.unpatch_torch()
    assert _torch_is_unpatched()
    fuse_fx(_model(False))
    assert calls == {"pyfuse": 1, "torch": 1}, calls


def test_patched_is_undone_when_the_block_raises():
    def fail_inside():
        with pyfuse.patched():
            assert not _torch_is_unpatched()
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        fail_inside()
    assert _torch_is_unpatched()


def test_the_reference_is_pinned_while_torch_is_patched(calls):
    """The tests' reference (the contract's and the fixed reference's) still runs
    torch's own pass while pyfuse is patched into torch."""
    gm = torch.fx.symbolic_trace(_model(False))
    pyfuse.patch_torch()
    assert _TORCH_FUSE_MODULE.fuse is not REFERENCE_FUSE  # the patch is in place
    out = reference_fuse(copy.deepcopy(gm), False)
    assert calls == {"pyfuse": 0, "torch": 1}, calls
    fixed = fixed_reference.run_fixed(copy.deepcopy(gm), False, None)
    assert calls == {"pyfuse": 0, "torch": 1}, calls  # (its own walk, not torch's)
    walk = fixed_reference.REFERENCE_FIND_MATCHES(gm, gm.graph, {})
    assert walk == {}
    assert calls == {"pyfuse": 0, "torch": 1}, calls
    # torch's fuse_fx would reach the patched site: the contract refuses to run it
    with pytest.raises(AssertionError, match="not torch's own"):
        reference_fuse_fx(_model(False))
    assert calls["pyfuse"] == 0
    pyfuse.unpatch_torch()
    assert_same_fusion(out, fixed, _INPUTS)


@pytest.mark.parametrize(
    "module", ["tests.support.contract", "tests.fuzz.fixed_reference"]
)
def test_the_reference_cannot_be_pinned_while_torch_is_patched(module):
    """Imported after a patch, the reference module refuses to load."""
    code = (
        "import pyfuse, warnings; warnings.simplefilter('ignore'); "
        f"pyfuse.patch_torch(); import {module}"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 1, p.stderr
    assert "RuntimeError" in p.stderr
    assert "not torch's own" in p.stderr or "patched at import" in p.stderr
