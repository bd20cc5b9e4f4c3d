"""The floors an exact fusion cannot beat, measured beside pyfuse's call.

The **codegen floor** is ``recompile()`` of pyfuse's output GraphModule (what
generating and compiling its Python code alone costs); the **fold floor** is
torch's ``fuse_conv_bn_weights`` / ``fuse_linear_bn_weights`` over the model's
conv/linear + BatchNorm pairs, on the same tensors (eval only: QAT fusion folds
nothing). An exact pass cannot be faster than the codegen floor, nor than the
fold floor unless it folds faster than torch does one pair at a time (pyfuse
batches many small pairs).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

__all__ = ["codegen_floor", "fold_floor", "fold_pairs"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVTS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN = nn.modules.batchnorm._BatchNorm


def fold_pairs(gm: GraphModule) -> list[tuple[nn.Module, _BN]]:
    """(conv or linear, BatchNorm) module pairs whose BN reads the conv's output
    alone, in eval mode: the pairs an eval fusion folds."""
    pairs: list[tuple[nn.Module, _BN]] = []
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op != "call_module" or not node.args:
            continue
        bn = modules.get(str(node.target))
        src = node.args[0]
        if (
            not isinstance(bn, nn.modules.batchnorm._BatchNorm)
            or bn.training
            or bn.running_mean is None
            or not isinstance(src, torch.fx.Node)
            or src.op != "call_module"
            or len(src.users) != 1
        ):
            continue
        mod = modules.get(str(src.target))
        if isinstance(mod, (*_CONVS, *_CONVTS, nn.Linear)) and not mod.training:
            pairs.append((mod, bn))
    return pairs


def _fold_all(pairs: Sequence[tuple[nn.Module, _BN]]) -> list[Any]:
    from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

    out: list[Any] = []
    for mod, bn in pairs:
        w: Any = mod.weight
        b: Any = mod.bias
        rm: Any = bn.running_mean
        rv: Any = bn.running_var
        if isinstance(mod, nn.Linear):
            out.append(fuse_linear_bn_weights(w, b, rm, rv, bn.eps, bn.weight, bn.bias))
        else:
            transpose = isinstance(mod, _CONVTS)
            out.append(
                fuse_conv_bn_weights(
                    w, b, rm, rv, bn.eps, bn.weight, bn.bias, transpose
                )
            )
    return out


def fold_floor(pairs: Sequence[tuple[nn.Module, _BN]]) -> float:
    """Seconds torch's weight folding takes over ``pairs`` (results kept alive
    until the clock stops, as a fusion keeps its folded weights)."""
    if not pairs:
        return 0.0
    t0 = time.perf_counter()
    kept = _fold_all(pairs)
    dt = time.perf_counter() - t0
    del kept
    return dt


def codegen_floor(gm: GraphModule) -> float:
    """Seconds ``gm.recompile()`` takes (FX's code generation and ``compile``)."""
    t0 = time.perf_counter()
    gm.recompile()
    return time.perf_counter() - t0
