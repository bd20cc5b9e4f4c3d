"""Exactness of pyfuse against the reference FX fusion pass over the model corpus.

For every corpus model x backend config x {eval, qat}: two fresh traced copies are fused,
one by ``torch.ao.quantization.fx.fuse.fuse`` and one by ``pyfuse.fuse``, and the results
must be indistinguishable (``contract.assert_same_fusion``). Where the reference raises,
pyfuse must raise the same exception type.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.fx
from torch.ao.quantization.fx.custom_config import FuseCustomConfig

import pyfuse
from tests.support.contract import (
    BothRaised,
    assert_same_fusion,
    node_count,
    reference_fuse,
    reference_fuse_fx,
    run_both,
    single_thread,
)
from tests.support.corpus import BACKENDS, MODELS, MODELS_BY_NAME

MODES = ("eval", "qat")


def _cases():
    for cm in MODELS:
        for backend in cm.backends:
            for mode in MODES:
                yield pytest.param(cm.name, backend, mode, id=f"{cm.name}-{backend}-{mode}")


def _factory(cm, mode):
    is_qat = mode == "qat"

    def make():
        m = cm.factory()
        return m.train() if is_qat else m.eval()

    return make


@pytest.fixture(autouse=True)
def _single_threaded():
    # tiny tensors on a shared 2-core machine: one intra-op thread is far faster
    with single_thread():
        yield


# --------------------------------------------------------------------------------------
# the corpus
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _nodes_before(model_name, mode):
    return node_count(torch.fx.symbolic_trace(_factory(MODELS_BY_NAME[model_name], mode)()))


@pytest.mark.parametrize("model_name,backend,mode", list(_cases()))
def test_corpus_exact(model_name, backend, mode):
    cm = MODELS_BY_NAME[model_name]
    make = _factory(cm, mode)
    is_qat = mode == "qat"
    example_inputs = cm.example_inputs_factory()
    n_before = _nodes_before(model_name, mode)

    try:
        ref_out, out = run_both(make, example_inputs, is_qat, BACKENDS[backend]())
    except BothRaised as e:
        assert type(e.exc) is type(e.ref_exc)
        return

    assert_same_fusion(ref_out, out, example_inputs)
    n_ref, n_out = node_count(ref_out), node_count(out)
    assert n_out <= n_before
    if n_ref < n_before:
        # the reference fused something: so must pyfuse
        assert n_out < n_before, f"reference fused {n_before}->{n_ref} nodes, pyfuse left {n_out}"


def test_corpus_is_not_vacuous():
    """pyfuse really fuses most of the corpus (native backend, eval): fewer nodes than before."""
    fused = []
    for cm in MODELS:
        make = _factory(cm, "eval")
        gm = torch.fx.symbolic_trace(make())
        n_before = node_count(gm)
        try:
            out = pyfuse.fuse(gm, False)
        except Exception:  # noqa: BLE001 - models the reference rejects are checked elsewhere
            continue
        if node_count(out) < n_before:
            fused.append(cm.name)
    assert "resnet50" in fused and "tiny_conv_bn_relu" in fused, fused
    assert len(fused) >= len(MODELS) // 2, fused


def test_corpus_sizes():
    """The "real" models are real-sized: 100-1,600 nodes for the bigger ones."""
    sizes = {cm.name: node_count(torch.fx.symbolic_trace(cm.factory().eval()))
             for cm in MODELS if cm.name in ("resnet50", "resnet152", "mobilenet_v2", "efficientnet",
                                             "densenet121", "deep_chain")}
    for name, n in sizes.items():
        assert 100 <= n <= 1600, (name, n)


def test_train_model_with_is_qat_false_raises_the_same():
    """A train-mode model fused with is_qat=False: the reference's eval fuser rejects it."""
    cm = MODELS_BY_NAME["tiny_conv_bn_relu"]
    with pytest.raises(BothRaised) as info:
        run_both(lambda: cm.factory().train(), cm.example_inputs_factory(), False, None)
    assert type(info.value.exc) is type(info.value.ref_exc)


def test_default_backend_config_is_native():
    cm = MODELS_BY_NAME["resnet18"]
    make = _factory(cm, "eval")
    x = cm.example_inputs_factory()
    ref_out, out = run_both(make, x, False, None)
    assert_same_fusion(ref_out, out, x)
    ref_native, out_native = run_both(make, x, False, BACKENDS["native"]())
    assert_same_fusion(ref_native, out, x)


def test_backend_config_as_dict():
    """A dict backend config works like the BackendConfig, with a FutureWarning from each."""
    for name, backend in (("resnet18", "native"), ("onednn_residual", "onednn")):
        cm = MODELS_BY_NAME[name]
        make = _factory(cm, "eval")
        x = cm.example_inputs_factory()
        ref_gm, gm = torch.fx.symbolic_trace(make()), torch.fx.symbolic_trace(make())
        with pytest.warns(FutureWarning):
            ref_out = reference_fuse(ref_gm, False, None, BACKENDS[backend]().to_dict())
        with pytest.warns(FutureWarning):
            out = pyfuse.fuse(gm, False, None, BACKENDS[backend]().to_dict())
        assert_same_fusion(ref_out, out, x)
        # and the same as with the BackendConfig object
        ref_obj = reference_fuse(torch.fx.symbolic_trace(make()), False, None, BACKENDS[backend]())
        assert_same_fusion(ref_obj, out, x)


def test_fuse_custom_config_as_dict():
    cm = MODELS_BY_NAME["tiny_conv_bn_relu"]
    make = _factory(cm, "eval")
    x = cm.example_inputs_factory()
    ref_gm, gm = torch.fx.symbolic_trace(make()), torch.fx.symbolic_trace(make())
    with pytest.warns(FutureWarning):
        ref_out = reference_fuse(ref_gm, False, {})
    with pytest.warns(FutureWarning):
        out = pyfuse.fuse(gm, False, {})
    assert_same_fusion(ref_out, out, x)


# --------------------------------------------------------------------------------------
# fuse_fx
# --------------------------------------------------------------------------------------

FUSE_FX_MODELS = ["tiny_conv_bn_relu", "resnet18", "mobilenet_v2", "vgg16_bn", "onednn_residual",
                  "mlp", "decoder_transpose"]


@pytest.mark.parametrize("model_name", FUSE_FX_MODELS)
def test_fuse_fx(model_name):
    cm = MODELS_BY_NAME[model_name]
    make = _factory(cm, "eval")
    x = cm.example_inputs_factory()
    ref_out = reference_fuse_fx(make())
    out = pyfuse.fuse_fx(make())
    assert_same_fusion(ref_out, out, x)
    assert node_count(out) < node_count(torch.fx.symbolic_trace(make()))


@pytest.mark.parametrize("backend", ["onednn", "tensorrt", "executorch"])
def test_fuse_fx_backend_config(backend):
    cm = MODELS_BY_NAME["resnet18"]
    make = _factory(cm, "eval")
    x = cm.example_inputs_factory()
    ref_out = reference_fuse_fx(make(), backend_config=BACKENDS[backend]())
    out = pyfuse.fuse_fx(make(), backend_config=BACKENDS[backend]())
    assert_same_fusion(ref_out, out, x)


def test_fuse_fx_backend_config_dict():
    cm = MODELS_BY_NAME["onednn_residual"]
    make = _factory(cm, "eval")
    x = cm.example_inputs_factory()
    with pytest.warns(FutureWarning):
        ref_out = reference_fuse_fx(make(), backend_config=BACKENDS["onednn"]().to_dict())
    with pytest.warns(FutureWarning):
        out = pyfuse.fuse_fx(make(), backend_config=BACKENDS["onednn"]().to_dict())
    assert_same_fusion(ref_out, out, x)


def _with_extras(model):
    """Attach attributes that fuse_fx is asked to preserve (and one that is not)."""
    model.version = 3
    model.labels = ["a", "b"]
    model.not_preserved = "dropped"
    model.scale_tensor = torch.tensor([1.5, 2.5])
    return model


PRESERVED = ["version", "labels", "scale_tensor", "describe_missing"]


def _check_preserved(ref_out, out):
    for attr in ("version", "labels", "scale_tensor"):
        assert hasattr(ref_out, attr) and hasattr(out, attr), attr
        a, b = getattr(ref_out, attr), getattr(out, attr)
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)
        else:
            assert a == b
    for gm in (ref_out, out):
        assert not hasattr(gm, "describe_missing")
        assert not hasattr(gm, "not_preserved")
    # preserved attributes survive a deepcopy (they live in gm.meta)
    assert copy.deepcopy(out).version == copy.deepcopy(ref_out).version == 3
    assert copy.deepcopy(out).labels == ["a", "b"]


def test_fuse_fx_preserved_attributes():
    cm = MODELS_BY_NAME["resnet18"]
    make = _factory(cm, "eval")
    x = cm.example_inputs_factory()
    ref_out = reference_fuse_fx(
        _with_extras(make()), FuseCustomConfig().set_preserved_attributes(PRESERVED)
    )
    out = pyfuse.fuse_fx(_with_extras(make()), FuseCustomConfig().set_preserved_attributes(PRESERVED))
    assert_same_fusion(ref_out, out, x)
    _check_preserved(ref_out, out)


def test_fuse_fx_preserved_attributes_dict_config_warns():
    cm = MODELS_BY_NAME["tiny_conv_bn_relu"]
    make = _factory(cm, "eval")
    x = cm.example_inputs_factory()
    with pytest.warns(FutureWarning):
        ref_out = reference_fuse_fx(_with_extras(make()), {"preserved_attributes": list(PRESERVED)})
    with pytest.warns(FutureWarning):
        out = pyfuse.fuse_fx(_with_extras(make()), {"preserved_attributes": list(PRESERVED)})
    assert_same_fusion(ref_out, out, x)
    _check_preserved(ref_out, out)


def test_fuse_fx_rejects_like_reference():
    """fuse_fx on a train-mode model (it fuses with is_qat=False): same exception type."""
    cm = MODELS_BY_NAME["tiny_conv_bn_relu"]
    with pytest.raises(Exception) as ref_info:
        reference_fuse_fx(cm.factory().train())
    with pytest.raises(Exception) as info:
        pyfuse.fuse_fx(cm.factory().train())
    assert info.type is ref_info.type
