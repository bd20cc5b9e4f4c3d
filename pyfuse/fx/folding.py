"""BatchNorm folding: the folds pyfuse computes itself.

:func:`grouped_convtranspose_bn` and :func:`linear_bn_no_affine` fold where torch's
fusers are wrong (grouped ConvTranspose) or fail (BatchNorm1d(affine=False)).
:func:`batch_folds` computes the folded (weight, bias) of a pass's plain eval
conv + BN pairs with a few batched tensor operations; the conv-bn fusers take
their pair's result from the returned :data:`Folds` (passed to them explicitly)
instead of folding it alone. The bits are the same as torch's per-pair fold.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch

__all__ = [
    "PLAIN_CONVS",
    "Folds",
    "batch_folds",
    "grouped_convtranspose_bn",
    "linear_bn_no_affine",
]

PLAIN_CONVS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)

#: Folded (weight, bias) of the batched pairs of one pass, by (id(conv), id(bn)):
#: a fuser pops its pair's entry (pairs not in it fold alone).
Folds = dict[tuple[int, int], tuple[torch.nn.Parameter, torch.nn.Parameter]]


def _fold(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    bn: torch.nn.modules.batchnorm._BatchNorm,
    scale_shape: list[int],
    view: list[int] | None = None,
) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    """BN folded into (weight, bias), in torch's operation order."""
    rm, rv = bn.running_mean, bn.running_var
    if rm is None or rv is None:
        raise AssertionError("bn.running_mean and bn.running_var must not be None")
    b = torch.zeros_like(rm) if bias is None else bias
    bn_w: torch.Tensor = bn.weight if bn.affine else torch.ones_like(rm)
    bn_b: torch.Tensor = bn.bias if bn.affine else torch.zeros_like(rm)
    rsqrt = torch.rsqrt(rv + bn.eps)
    w = weight if view is None else weight.reshape(view)
    fused_w = (w * (bn_w * rsqrt).reshape(scale_shape)).reshape(weight.shape)
    fused_b = (b - rm) * rsqrt * bn_w + bn_b
    return (
        torch.nn.Parameter(fused_w.to(weight.dtype), weight.requires_grad),
        torch.nn.Parameter(
            fused_b.to(b.dtype if bias is not None else weight.dtype), b.requires_grad
        ),
    )


def grouped_convtranspose_bn(
    convt: torch.nn.modules.conv._ConvTransposeNd,
    bn: torch.nn.modules.batchnorm._BatchNorm,
) -> torch.nn.Module:
    """ConvTranspose + BN folded, groups > 1 too (torch's fold uses the wrong layout)."""
    if convt.training or bn.training:
        raise AssertionError("Fusion only for eval!")
    g = convt.groups
    w = convt.weight  # (in, out / g, *k); output channel = group * (out / g) + j
    k = [1] * (w.dim() - 2)
    fused = copy.deepcopy(convt)
    fused.weight, fused.bias = _fold(
        w,
        convt.bias,
        bn,
        [g, 1, w.shape[1], *k],
        [g, w.shape[0] // g, w.shape[1], *w.shape[2:]],
    )
    return fused


def linear_bn_no_affine(
    linear: torch.nn.Linear, bn: torch.nn.modules.batchnorm._BatchNorm
) -> torch.nn.Module:
    """Linear + BN(affine=False) folded (torch's fuser fails on it)."""
    if linear.training or bn.training:
        raise AssertionError("Fusion only for eval!")
    if bn.num_features not in (linear.out_features, 1):
        raise AssertionError(
            "To fuse, linear.out_features == bn.num_features or bn.num_features == 1, "
            f"got linear.out_features={linear.out_features} and "
            f"bn.num_features={bn.num_features}"
        )
    fused = copy.deepcopy(linear)
    fused.weight, fused.bias = _fold(linear.weight, linear.bias, bn, [-1, 1])
    return fused


# Batching pays for its per-group calls only in larger groups of one shape; 8 is
# a round guess (no measurable difference on the corpus models), not a tuned value.
_MIN_BATCH = 8
# Dtypes whose CPU kernels give every element the same bits wherever it sits in
# a tensor. In bfloat16 (and half) the vectorised body and the scalar tail of
# ``rv + eps`` differ, so a channel's fold would depend on its batch position.
_EXACT_DTYPES = (torch.float32, torch.float64)


def batch_folds(pairs: Iterable[tuple[Any, Any]]) -> Folds:
    """Fold BN into conv for many (conv, bn) pairs with a few batched tensor ops.

    Every element goes through the same elementwise operations in the same order
    as torch's ``fuse_conv_bn_weights`` (rsqrt, mul, add are correctly rounded
    per element), so the bits are the same; batching only removes per-call
    dispatch. Each weight is read once and its folded copy written once (torch's
    ``_foreach_mul`` on CPU is ``w.mul(scale)`` per pair, in C++), as in torch's
    own fold. Pairs are grouped by everything the per-pair computation depends on
    (dtypes, device, shapes, bias presence, eps, grad flags);
    only float32 and float64 pairs are batched (see ``_EXACT_DTYPES``).
    """
    groups: dict[Any, list[tuple[Any, ...]]] = {}
    for conv, bn in pairs:
        if (
            type(conv) not in PLAIN_CONVS
            or conv.training
            or bn.training
            or not bn.affine
        ):
            continue
        # (plain convs and BatchNorms: their tensors are in these dicts)
        cp, bp, bb = conv._parameters, bn._parameters, bn._buffers
        w, b, bn_w, bn_b = (
            cp.get("weight"),
            cp.get("bias"),
            bp.get("weight"),
            bp.get("bias"),
        )
        rm, rv = bb.get("running_mean"), bb.get("running_var")
        if w is None or rm is None or rv is None or bn_w is None or bn_b is None:
            continue
        dt = w.dtype
        if not (
            dt in _EXACT_DTYPES
            and rm.dtype is dt
            and rv.dtype is dt
            and bn_w.dtype is dt
            and bn_b.dtype is dt
            and (b is None or b.dtype is dt)
            and w.is_contiguous()
        ):
            continue
        key = (
            dt,
            w.device,
            w.shape,
            b is not None,
            bn.eps,
            w.requires_grad,
            b is not None and b.requires_grad,
            # (torch's fold broadcasts a BN of another size: such pairs fold alone)
            (
                rm.shape,
                rv.shape,
                bn_w.shape,
                bn_b.shape,
                None if b is None else b.shape,
            ),
        )
        groups.setdefault(key, []).append((id(conv), id(bn), w, b, rm, rv, bn_w, bn_b))
    table: Folds = {}
    make = (
        torch.Tensor._make_subclass
    )  # what Parameter(t, grad) does for a plain tensor
    param = torch.nn.Parameter
    with torch.no_grad():
        for key, items in groups.items():
            _, _, shape, has_bias, eps, w_grad, b_grad, vector_shapes = key
            n, c = len(items), shape[0]
            if n < _MIN_BATCH or any(v not in (None, (c,)) for v in vector_shapes):
                continue
            _, _, ws, bs, rms, rvs, bws, bbs = zip(*items, strict=True)
            # Per-channel factors for the whole group at once (small tensors),
            # viewed as one slice per pair (unbind: split's cost grows with the
            # number of pieces); then one C++ loop per group multiplies each
            # weight by its slice and adds each BN bias, giving every pair
            # tensors of its own.
            rm = torch.cat(rms)
            rsqrt = torch.rsqrt(torch.cat(rvs) + eps)
            bn_w = torch.cat(bws)
            conv_b = torch.cat(bs) if has_bias else torch.zeros_like(rm)
            scale = (bn_w * rsqrt).view([n, c] + [1] * (len(shape) - 1))
            partial_b = ((conv_b - rm) * rsqrt * bn_w).view(n, c)
            fused_ws = torch._foreach_mul(ws, scale.unbind(0))
            fused_bs = torch._foreach_add(partial_b.unbind(0), bbs)
            for item, fw, fb in zip(items, fused_ws, fused_bs, strict=True):
                table[item[0], item[1]] = (
                    make(param, fw, w_grad),
                    make(param, fb, b_grad),
                )
    return table
