"""The aten operators the export flow folds, and where their arguments sit.

A *producer* is the op a BatchNorm folds into (a conv, conv-transpose or
linear, in the forms torch.export emits and in their decomposed forms); a
*norm* is an inference BatchNorm op. Positions follow the ops' schemas; trailing
arguments left at their defaults may be absent from ``node.args``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "ALL_NORM_TARGETS",
    "CONV_PRODUCERS",
    "DECOMPOSED_PRODUCERS",
    "LINEAR_PRODUCERS",
    "NORMS",
    "Norm",
    "Producer",
    "short_name",
]

aten = torch.ops.aten


@dataclass(frozen=True)
class Producer:
    """A conv / conv-transpose / linear op a BatchNorm can fold into.

    Attributes:
        target: the op (OpOverload, or OpOverloadPacket as torchao also accepts).
        kind: "conv", "conv_transpose", "convolution" (transposed decided by the
            node's argument), "linear", "addmm" or "mm" (decomposed linear, weight
            read through ``permute(w, [1, 0])``).
        weight: position of the weight argument (of the permute for addmm / mm).
        bias: position of the bias argument, or -1 (mm has none).
        groups: position of ``groups``, or -1.
    """

    target: Any
    kind: str
    weight: int
    bias: int
    groups: int = -1


@dataclass(frozen=True)
class Norm:
    """An inference BatchNorm op.

    Attributes:
        target: the op.
        arity: its number of schema arguments.
        eps: position of ``eps``.
        training: position of the ``training`` flag, or -1 (always inference).
        tuple_output: the op returns (out, mean, invstd), read with getitem.
    """

    target: Any
    arity: int
    eps: int
    training: int
    tuple_output: bool


def _conv(target: Any) -> Producer:
    return Producer(target, "conv", 1, 2, 6)


def _conv_t(target: Any) -> Producer:
    return Producer(target, "conv_transpose", 1, 2, 6)


# The forms torchao's ``_fuse_conv_bn_`` folds, in its order.
CONV_PRODUCERS: tuple[Producer, ...] = (
    _conv(aten.conv1d.default),
    _conv(aten.conv1d.padding),
    _conv(aten.conv2d.default),
    _conv(aten.conv2d.padding),
    _conv(aten.conv3d.default),
    _conv(aten.conv3d.padding),
    _conv_t(aten.conv_transpose1d),
    _conv_t(aten.conv_transpose1d.default),
    _conv_t(aten.conv_transpose2d),
    _conv_t(aten.conv_transpose2d.input),
    _conv_t(aten.conv_transpose3d),
    _conv_t(aten.conv_transpose3d.input),
)

# The form torchao's ``_fuse_linear_bn_`` folds.
LINEAR_PRODUCERS: tuple[Producer, ...] = (
    Producer(aten.linear.default, "linear", 1, 2),
)

# What ``run_decompositions()`` turns them into.
DECOMPOSED_PRODUCERS: tuple[Producer, ...] = (
    Producer(aten.convolution.default, "convolution", 1, 2, 8),
    Producer(aten.addmm.default, "addmm", 2, 0),
    Producer(aten.mm.default, "mm", 1, -1),
)

NORMS: tuple[Norm, ...] = (
    Norm(aten.batch_norm.default, 9, 7, 5, False),
    Norm(aten._native_batch_norm_legit_no_training.default, 7, 6, -1, True),
)

# Every op torchao counts as a BatchNorm (it skips the pass when none is present).
ALL_NORM_TARGETS: tuple[Any, ...] = (
    aten.batch_norm.default,
    aten._native_batch_norm_legit.default,
    aten.cudnn_batch_norm.default,
    aten.miopen_batch_norm.default,
    aten._native_batch_norm_legit_no_training.default,
)


def short_name(target: Any) -> str:
    """``aten.conv2d.default`` -> ``conv2d``: the op's name without namespace or
    overload, for reports."""
    name = getattr(target, "__name__", None) or str(target)
    parts = str(getattr(target, "_name", name)).split("::")[-1].split(".")
    return parts[0]
