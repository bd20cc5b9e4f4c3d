"""The folded weight and bias of one group: torch's own fusion arithmetic.

Conv and linear folds call ``torch.nn.utils.fusion`` exactly as torchao does, so
the tensors are bit-identical to its; the cases it gets wrong (a grouped
conv-transpose, a linear followed by an affine-less BatchNorm) are computed here
with the same operation order.
"""

from __future__ import annotations

import torch
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

__all__ = ["fold_weights"]


def _grouped_transpose(
    w: torch.Tensor,
    b: torch.Tensor | None,
    rm: torch.Tensor,
    rv: torch.Tensor,
    eps: float,
    bw: torch.Tensor | None,
    bb: torch.Tensor | None,
    groups: int,
) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    # weight [in, out / groups, *k]: output channel g * (out / groups) + j of group g.
    w_dtype = w.dtype
    b_dtype = b.dtype if b is not None else w_dtype
    b_grad = b.requires_grad if b is not None else False
    if b is None:
        b = torch.zeros_like(rm)
    if bw is None:
        bw = torch.ones_like(rm)
    if bb is None:
        bb = torch.zeros_like(rm)
    rsqrt = torch.rsqrt(rv + eps)
    per_group = w.shape[1]
    scale = (bw * rsqrt).reshape([groups, 1, per_group] + [1] * (w.dim() - 2))
    grouped = w.reshape([groups, w.shape[0] // groups, *list(w.shape[1:])])
    fused_w = (grouped * scale).reshape(w.shape).to(dtype=w_dtype)
    fused_b = ((b - rm) * rsqrt * bw + bb).to(dtype=b_dtype)
    return torch.nn.Parameter(fused_w, w.requires_grad), torch.nn.Parameter(
        fused_b, b_grad
    )


def fold_weights(
    kind: str,
    transpose: bool,
    groups: int,
    w: torch.Tensor,
    b: torch.Tensor | None,
    rm: torch.Tensor,
    rv: torch.Tensor,
    eps: float,
    bw: torch.Tensor | None,
    bb: torch.Tensor | None,
) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    """(weight, bias) of a producer of `kind` with the BatchNorm folded in.

    `w` is laid out as the producer reads it (``[out, in]`` for every linear form).
    """
    if kind in ("linear", "addmm", "mm"):
        if bw is None:
            bw = torch.ones_like(rm)
        if bb is None:
            bb = torch.zeros_like(rm)
        return fuse_linear_bn_weights(w, b, rm, rv, eps, bw, bb)
    if transpose and groups != 1:
        return _grouped_transpose(w, b, rm, rv, eps, bw, bb, groups)
    return fuse_conv_bn_weights(w, b, rm, rv, eps, bw, bb, transpose=transpose)
