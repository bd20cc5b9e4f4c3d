"""Export-flow workloads of ``pyfuse bench --flow pt2e``: ResNet-like aten graphs.

``resnet_like(nodes)`` builds, directly with the Graph API (exporting graphs this
large takes minutes), the GraphModule ``ExportedProgram.module()`` gives for a
chain of residual blocks: every parameter and buffer read by a ``get_attr`` node
at the top, then per block conv -> batch_norm -> relu, conv -> batch_norm -> relu,
and a residual add. ``resnet_module(blocks)`` is the same network as an
nn.Module, for exporting (the end-to-end ``prepare_pt2e`` benchmark).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.fx import Graph, GraphModule, Node

__all__ = ["NODES_PER_BLOCK", "ResNetLike", "resnet_like"]

aten = torch.ops.aten
C = 4  # channels: small tensors, so the graph (not the arithmetic) dominates
NODES_PER_BLOCK = 19  # 12 get_attr + 2 conv + 2 batch_norm + 2 relu + 1 add


class _ConvBn(nn.Module):
    def __init__(self, gen: torch.Generator) -> None:
        super().__init__()
        self.conv = nn.Conv2d(C, C, 3, padding=1)
        self.bn = nn.BatchNorm2d(C)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(C, C, 3, 3, generator=gen) * 0.3)
            bias = self.conv.bias
            assert bias is not None
            bias.copy_(torch.randn(C, generator=gen) * 0.1)
            mean, var = self.bn.running_mean, self.bn.running_var
            assert mean is not None
            assert var is not None
            mean.copy_(torch.randn(C, generator=gen) * 0.1)
            var.copy_(torch.rand(C, generator=gen) + 0.5)
            self.bn.weight.copy_(torch.rand(C, generator=gen) + 0.5)
            self.bn.bias.copy_(torch.randn(C, generator=gen) * 0.1)


class _Block(nn.Module):
    def __init__(self, gen: torch.Generator) -> None:
        super().__init__()
        self.a = _ConvBn(gen)
        self.b = _ConvBn(gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a.bn(self.a.conv(x)))
        y = torch.nn.functional.relu(self.b.bn(self.b.conv(y)))
        return y + x


class ResNetLike(nn.Module):
    """`blocks` residual blocks of two conv-bn-relu each, seeded."""

    def __init__(self, blocks: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.blocks = nn.Sequential(*(_Block(gen) for _ in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.blocks(x)
        return out


def resnet_like(nodes: int, seed: int = 0) -> GraphModule:
    """An exported-style GraphModule of about `nodes` nodes (ResNetLike's)."""
    blocks = max(1, nodes // NODES_PER_BLOCK)
    root = ResNetLike(blocks, seed)
    g = Graph()
    x = g.placeholder("x")
    attrs: dict[str, Node] = {}
    names = (
        "conv.weight",
        "conv.bias",
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
    )
    for i in range(blocks):
        for half in ("a", "b"):
            for name in names:
                target = f"blocks.{i}.{half}.{name}"
                attrs[target] = g.get_attr(target)
    for i in range(blocks):
        y = x
        for half in ("a", "b"):
            p = f"blocks.{i}.{half}."
            conv = g.call_function(
                aten.conv2d.default,
                (y, attrs[p + "conv.weight"], attrs[p + "conv.bias"], [1, 1], [1, 1]),
            )
            bn = g.call_function(
                aten.batch_norm.default,
                (
                    conv,
                    attrs[p + "bn.weight"],
                    attrs[p + "bn.bias"],
                    attrs[p + "bn.running_mean"],
                    attrs[p + "bn.running_var"],
                    False,
                    0.1,
                    1e-5,
                    False,
                ),
            )
            y = g.call_function(aten.relu.default, (bn,))
        x = g.call_function(aten.add.Tensor, (y, x))
    g.output(x)
    return GraphModule(root, g)
