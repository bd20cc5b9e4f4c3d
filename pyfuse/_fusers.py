"""Replacements for torch's default fuser methods where torch's are wrong.

torch's ``fuse_convtranspose_bn`` folds BatchNorm into a grouped ConvTranspose
with the wrong weight layout (it raises a size mismatch), and
``fuse_linear_bn`` fails on ``BatchNorm1d(affine=False)`` (TypeError). In eval
mode these inputs are valid, so pyfuse folds them correctly. Everywhere else the
backend's fuser method is called exactly as given.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["fast_fuser"]


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
    bn_w = torch.ones_like(rm) if bn.weight is None else bn.weight
    bn_b = torch.zeros_like(rm) if bn.bias is None else bn.bias
    rsqrt = torch.rsqrt(rv + bn.eps)
    w = weight if view is None else weight.reshape(view)
    fused_w = (w * (bn_w * rsqrt).reshape(scale_shape)).reshape(weight.shape)
    fused_b = (b - rm) * rsqrt * bn_w + bn_b
    return (
        torch.nn.Parameter(fused_w.to(weight.dtype), weight.requires_grad),
        torch.nn.Parameter(fused_b.to(b.dtype if bias is not None else weight.dtype), b.requires_grad),
    )


def _grouped_convtranspose_bn(
    convt: torch.nn.modules.conv._ConvTransposeNd, bn: torch.nn.modules.batchnorm._BatchNorm
) -> torch.nn.Module:
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


def _linear_bn_no_affine(linear: torch.nn.Linear, bn: torch.nn.modules.batchnorm._BatchNorm) -> torch.nn.Module:
    if linear.training or bn.training:
        raise AssertionError("Fusion only for eval!")
    if linear.out_features != bn.num_features and bn.num_features != 1:
        raise AssertionError(
            "To fuse, linear.out_features == bn.num_features or bn.num_features == 1, "
            f"got linear.out_features={linear.out_features} and "
            f"bn.num_features={bn.num_features}"
        )
    fused = copy.deepcopy(linear)
    fused.weight, fused.bias = _fold(linear.weight, linear.bias, bn, [-1, 1])
    return fused


def fast_fuser(config: Any, types: Any, is_qat: bool) -> Callable[..., Any] | None:
    """pyfuse's fuser for a match, or None to use the backend's own.

    Args:
        config: the BackendPatternConfig of the matched pattern.
        types: the matched module types (reversed nested-tuple form).
        is_qat: whether fusing for QAT.
    """
    if config is None or is_qat or config._pattern_complex_format is not None:
        return None
    from torch.ao.quantization.fuser_method_mappings import (
        fuse_convtranspose_bn,
        fuse_linear_bn,
    )

    method = config.fuser_method
    original = None
    if method is fuse_convtranspose_bn:

        def fuser(is_qat: bool, bn: Any, convt: Any) -> Any:
            if getattr(convt, "groups", 1) > 1:
                return _grouped_convtranspose_bn(convt, bn)
            return fuse_convtranspose_bn(is_qat, convt, bn)

        original = fuser
    elif method is fuse_linear_bn:

        def fuser(is_qat: bool, bn: Any, linear: Any) -> Any:
            if not bn.affine:
                return _linear_bn_no_affine(linear, bn)
            return fuse_linear_bn(is_qat, linear, bn)

        original = fuser
    return original
