"""Faster, bit-identical replacements for torch's default eval fuser methods,
and fixes where torch's are wrong.

torch's ``fuse_conv_bn_eval`` deep-copies the conv (cloning its weight) and then
overwrites weight and bias with the folded ones. pyfuse copies the module shell
instead (fresh ``__dict__`` containers, nothing shared with the original that
could be mutated) and folds with torch's own ``fuse_conv_bn_weights`` on the
original tensors: the same operations on the same values, so the same bits.
Modules with buffers, submodules (e.g. parametrizations) or attributes of
unknown types take torch's path.

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
    bn_w: torch.Tensor = bn.weight if bn.affine else torch.ones_like(rm)
    bn_b: torch.Tensor = bn.bias if bn.affine else torch.zeros_like(rm)
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
    if bn.num_features not in (linear.out_features, 1):
        raise AssertionError(
            "To fuse, linear.out_features == bn.num_features or bn.num_features == 1, "
            f"got linear.out_features={linear.out_features} and "
            f"bn.num_features={bn.num_features}"
        )
    fused = copy.deepcopy(linear)
    fused.weight, fused.bias = _fold(linear.weight, linear.bias, bn, [-1, 1])
    return fused


_IMMUTABLE = (int, float, bool, str, bytes, tuple, type(None), torch.dtype, torch.device)


def _shell_copy(module: torch.nn.Module) -> torch.nn.Module | None:
    """A copy sharing no mutable state with `module`, except its parameters
    (which the caller replaces); None if `module` is not simple enough."""
    if module._buffers or module._modules:
        return None
    state: dict[str, Any] = {}
    for k, v in module.__dict__.items():
        if k == "_parameters" or isinstance(v, (dict, list, set)):
            if any(not isinstance(x, (*_IMMUTABLE, torch.nn.Parameter)) and not callable(x)
                   for x in (v.values() if isinstance(v, dict) else v)):
                return None
            state[k] = v.copy()
        elif isinstance(v, _IMMUTABLE):
            state[k] = v
        else:
            return None
    clone = module.__class__.__new__(module.__class__)
    clone.__dict__.update(state)
    return clone


def _conv_bn_eval(conv: Any, bn: Any, transpose: bool = False) -> torch.nn.Module:
    """torch.nn.utils.fusion.fuse_conv_bn_eval, without the deep copy."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights

    fused = _shell_copy(conv) if type(conv) in _CONV_TYPES else None
    if fused is None or conv.training or bn.training or bn.running_mean is None:
        result: torch.nn.Module = fuse_conv_bn_eval(conv, bn, transpose)
        return result
    fused.weight, fused.bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight,
        bn.bias, transpose,
    )
    return fused


_CONV_TYPES = (
    torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
    torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d,
)


# Each takes the reversed nested-tuple arguments the reference passes (is_qat, last
# module first) and falls back to torch's fuser wherever torch would raise.


def _fast_conv_bn(is_qat: bool, bn: Any, conv: Any) -> Any:
    from torch.ao.quantization.fuser_method_mappings import fuse_conv_bn

    if conv.training != bn.training:
        return fuse_conv_bn(is_qat, conv, bn)  # type: ignore[no-untyped-call]
    return _conv_bn_eval(conv, bn)


def _fast_conv_bn_relu(is_qat: bool, relu: Any, bn_conv: Any) -> Any:
    import torch.ao.nn.intrinsic as nni
    from torch.ao.quantization.fuser_method_mappings import fuse_conv_bn_relu

    bn, conv = bn_conv
    cls = {
        torch.nn.Conv1d: nni.ConvReLU1d,
        torch.nn.Conv2d: nni.ConvReLU2d,
        torch.nn.Conv3d: nni.ConvReLU3d,
    }.get(type(conv))
    if cls is None or not (conv.training == bn.training == relu.training):
        return fuse_conv_bn_relu(is_qat, conv, bn, relu)  # type: ignore[no-untyped-call]
    return cls(_conv_bn_eval(conv, bn), relu)  # type: ignore[no-untyped-call]


def _fast_convtranspose_bn(is_qat: bool, bn: Any, convt: Any) -> Any:
    from torch.ao.quantization.fuser_method_mappings import fuse_convtranspose_bn

    if getattr(convt, "groups", 1) > 1:
        return _grouped_convtranspose_bn(convt, bn)
    if convt.training != bn.training:
        return fuse_convtranspose_bn(is_qat, convt, bn)  # type: ignore[no-untyped-call]
    return _conv_bn_eval(convt, bn, transpose=True)


def _fast_linear_bn(is_qat: bool, bn: Any, linear: Any) -> Any:
    from torch.ao.quantization.fuser_method_mappings import fuse_linear_bn

    if not bn.affine:
        return _linear_bn_no_affine(linear, bn)
    return fuse_linear_bn(is_qat, linear, bn)  # type: ignore[no-untyped-call]


def fast_fuser(config: Any, is_qat: bool) -> Callable[..., Any] | None:
    """pyfuse's equivalent of a backend fuser method, or None to call the backend's.

    Args:
        config: the BackendPatternConfig whose fuser method the reference would call.
        is_qat: whether fusing for QAT (always the backend's own fuser).
    """
    if config is None or is_qat or config._pattern_complex_format is not None:
        return None
    from torch.ao.quantization.fuser_method_mappings import (
        fuse_conv_bn,
        fuse_conv_bn_relu,
        fuse_convtranspose_bn,
        fuse_linear_bn,
    )

    method = config.fuser_method
    fast: dict[Any, Callable[..., Any]] = {
        fuse_conv_bn: _fast_conv_bn,
        fuse_conv_bn_relu: _fast_conv_bn_relu,
        fuse_convtranspose_bn: _fast_convtranspose_bn,
        fuse_linear_bn: _fast_linear_bn,
    }
    return fast.get(method)
