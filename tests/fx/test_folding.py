"""Batched BatchNorm folding equals torch's per-pair fold, bit for bit.

:func:`pyfuse.fx.folding.batch_folds` folds groups of same-shape eval conv + BN
pairs at once; each pair must get exactly what ``fuse_conv_bn_weights`` gives it:
the same bits, dtype, shape and strides, a Parameter with torch's grad flag, and
storage of its own (no view into a shared batch, so saving or mutating one fused
conv never touches another).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from pyfuse.fx.folding import batch_folds
from tests.support.contract import run_both

_INT = {
    torch.float32: torch.int32,
    torch.float64: torch.int64,
    torch.bfloat16: torch.int16,
}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit patterns (-0.0 and NaN payloads included)."""
    return torch.equal(a.detach().view(_INT[a.dtype]), b.detach().view(_INT[b.dtype]))


def _pair(conv_cls, dims, c_out, dtype, bias, eps, seed):
    g = torch.Generator().manual_seed(seed)
    conv = conv_cls(6, c_out, 3, bias=bias).to(dtype).eval()
    bn = getattr(nn, f"BatchNorm{dims}d")(c_out, eps=eps).to(dtype).eval()
    with torch.no_grad():
        for t in (*conv.parameters(), bn.weight, bn.bias, bn.running_mean):
            t.copy_(torch.randn(t.shape, generator=g).to(dtype))
        bn.running_var.copy_(torch.rand(c_out, generator=g).to(dtype) + 0.01)
        bn.running_var[0] = 0.0  # rsqrt(eps) path
        conv.weight.view(-1)[0] = -0.0
    return conv, bn


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    ("conv_cls", "dims"), [(nn.Conv1d, 1), (nn.Conv2d, 2), (nn.Conv3d, 3)]
)
def test_batched_folds_equal_torchs_per_pair_fold(conv_cls, dims, dtype, bias):
    # three groups of ten pairs (4, 5, 6 output channels)
    pairs = [
        _pair(conv_cls, dims, 4 + (i % 3), dtype, bias, 1e-5, i) for i in range(30)
    ]
    pairs[5][0].weight.requires_grad_(False)  # its own group (grad flag), alone
    table = batch_folds(pairs)
    assert len(table) == 29  # every pair but the lone grad-flag one
    seen = set()
    for conv, bn in pairs:
        got = table.get((id(conv), id(bn)))
        if got is None:
            assert conv is pairs[5][0]
            continue
        want = fuse_conv_bn_weights(
            conv.weight,
            conv.bias,
            bn.running_mean,
            bn.running_var,
            bn.eps,
            bn.weight,
            bn.bias,
        )
        for g, w in zip(got, want, strict=True):
            assert type(g) is type(w) is nn.Parameter
            assert g.requires_grad == w.requires_grad
            assert g.dtype == w.dtype
            assert g.shape == w.shape
            assert g.stride() == w.stride()
            assert same_bits(g, w)
            storage = g.untyped_storage()
            assert storage.nbytes() == g.numel() * g.element_size()
            assert storage.data_ptr() not in seen
            seen.add(storage.data_ptr())
        assert (
            got[0].untyped_storage().data_ptr()
            != conv.weight.untyped_storage().data_ptr()
        )


def test_small_groups_and_unusual_pairs_are_left_to_the_fusers():
    few = [_pair(nn.Conv2d, 2, 4, torch.float32, True, 1e-5, i) for i in range(7)]
    assert batch_folds(few) == {}
    mixed = [
        _pair(nn.Conv2d, 2, 4, torch.float32, True, 1e-3 * (i + 1), i) for i in range(8)
    ]
    assert batch_folds(mixed) == {}  # eps differ: eight groups of one
    training = [_pair(nn.Conv2d, 2, 4, torch.float32, True, 1e-5, i) for i in range(8)]
    training[0][1].train()
    assert batch_folds(training) == {}  # seven left: below the batch size


def test_reduced_precision_pairs_fold_alone_with_torchs_bits():
    """bfloat16 CPU kernels round ``rv + eps`` differently in the vectorised body
    and the scalar tail, so a batched channel's bits would depend on its place in
    the batch: such pairs are not batched, and the fused model is torch's."""
    pairs = [_pair(nn.Conv2d, 2, 5, torch.bfloat16, True, 1e-5, i) for i in range(12)]
    assert batch_folds(pairs) == {}

    def model():
        torch.manual_seed(0)
        layers = []
        for conv, bn in (
            _pair(nn.Conv2d, 2, 6, torch.bfloat16, True, 1e-5, i) for i in range(10)
        ):
            layers += [conv, bn, nn.Conv2d(6, 6, 1).to(torch.bfloat16).eval()]
        return nn.Sequential(*layers).eval()

    ref, out = run_both(model)
    got, want = out.state_dict(), ref.state_dict()
    assert list(got) == list(want)
    for k in want:
        assert same_bits(got[k], want[k]), k


def test_a_bn_of_another_size_folds_as_torch_broadcasts_it():
    """torch's fold broadcasts a one-feature BN over every output channel; such
    pairs are not batched (their slices would not line up) and fold as torch's."""
    pairs = []
    for i in range(10):
        conv, _ = _pair(nn.Conv2d, 2, 4, torch.float32, True, 1e-5, i)
        _, bn = _pair(nn.Conv2d, 2, 1, torch.float32, True, 1e-5, 100 + i)
        pairs.append((conv, bn))
    assert batch_folds(pairs) == {}
