"""Block programs of the synthetic workloads (see :mod:`pyfuse.bench.workloads`).

A :class:`BlockSpec` describes one block as a small program over template
modules; :func:`clone_module` copies the templates cheaply.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BLOCK_INPUT",
    "BlockSpec",
    "Op",
    "ResNetLike",
    "block_modules",
    "clone_module",
    "mixed_spec",
    "onednn_spec",
    "resnet_spec",
    "spec_of",
]


# ---------------------------------------------------------------------------
# block programs

#: index of the block input in :attr:`Op.args`
BLOCK_INPUT = -1


@dataclass(frozen=True)
class Op:
    """One node of a block: ``kind`` is ``"module"`` (``target`` = attribute name
    of a module of the block) or ``"function"`` (``target`` = the callable).
    ``args`` are indices of earlier ops of the block, or :data:`BLOCK_INPUT`."""

    kind: str
    target: Any
    args: tuple[int, ...]
    kwargs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class BlockSpec:
    """A block program and what fusing it is expected to do."""

    name: str
    #: (attribute name, factory) of every module of the block, in order of first use
    modules: tuple[tuple[str, Callable[[], nn.Module]], ...]
    ops: tuple[Op, ...]
    #: fusions the backend config makes in one block
    fusions_per_block: int
    #: nodes one block has after fusion
    nodes_after_per_block: int
    #: "native" or "onednn"
    backend: str = "native"
    train: bool = False
    #: class name of the GraphModule (``symbolic_trace`` uses the root's class name)
    class_name: str = "Blocks"
    #: class of the block module of the equivalent nn.Module (in ``nn_module_stack``)
    block_class: type[nn.Module] | None = None
    _template_cache: dict[str, nn.Module] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    @property
    def nodes_per_block(self) -> int:
        return len(self.ops)

    def templates(self) -> dict[str, nn.Module]:
        """One initialised module per attribute (seeded, global RNG untouched)."""
        if not self._template_cache:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                for attr, factory in self.modules:
                    m = factory()
                    _randomize_stats(m)
                    m.train(self.train)
                    self._template_cache[attr] = m
        return self._template_cache


def _randomize_stats(m: nn.Module) -> None:
    """Give BatchNorm modules non-trivial running statistics and affine params."""
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        with torch.no_grad():
            if m.running_mean is not None:
                m.running_mean.uniform_(-0.5, 0.5)
            if m.running_var is not None:
                m.running_var.uniform_(0.5, 1.5)
            if m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
            if m.bias is not None:
                m.bias.uniform_(-0.5, 0.5)


def _relu_kwargs() -> tuple[tuple[str, Any], ...]:
    # what symbolic_trace records for ``F.relu(x)``
    return (("inplace", False),)


def resnet_spec(channels: int = 4, train: bool = False) -> BlockSpec:
    """conv-bn-nn.ReLU, conv-bn-F.relu, residual add: 7 nodes, 2 fusions."""
    c = channels
    return BlockSpec(
        name=f"resnet(c={c})",
        modules=(
            ("conv1", lambda: nn.Conv2d(c, c, 3, padding=1)),
            ("bn1", lambda: nn.BatchNorm2d(c)),
            ("relu1", nn.ReLU),
            ("conv2", lambda: nn.Conv2d(c, c, 3, padding=1)),
            ("bn2", lambda: nn.BatchNorm2d(c)),
        ),
        ops=(
            Op("module", "conv1", (BLOCK_INPUT,)),  # 0
            Op("module", "bn1", (0,)),  # 1
            Op("module", "relu1", (1,)),  # 2
            Op("module", "conv2", (2,)),  # 3
            Op("module", "bn2", (3,)),  # 4
            Op("function", F.relu, (4,), _relu_kwargs()),  # 5
            Op("function", operator.add, (5, BLOCK_INPUT)),  # 6
        ),
        fusions_per_block=2,
        nodes_after_per_block=3,
        train=train,
        class_name="ResNetLike",
        block_class=ResNetLike.Block,
    )


def mixed_spec(train: bool = False) -> BlockSpec:
    """Every native (``get_native_backend_config()``) fusion pattern once per block.

    Eval: 25 patterns, 56 nodes -> 25 fusions, 25 nodes.  Train (for QAT): the
    three ConvTranspose + BN patterns are left out (the reference cannot fuse them
    in QAT), 50 nodes -> 22 fusions, 22 nodes.
    """
    c = 4
    mods: list[tuple[str, Callable[[], nn.Module]]] = []
    ops: list[Op] = []
    fusions = 0

    def mod(attr: str, factory: Callable[[], nn.Module], arg: int) -> int:
        mods.append((attr, factory))
        ops.append(Op("module", attr, (arg,)))
        return len(ops) - 1

    def relu_f(arg: int) -> int:
        ops.append(Op("function", F.relu, (arg,), _relu_kwargs()))
        return len(ops) - 1

    convs: dict[int, Callable[[], nn.Module]] = {
        1: lambda: nn.Conv1d(c, c, 3),
        2: lambda: nn.Conv2d(c, c, 3),
        3: lambda: nn.Conv3d(c, c, 3),
    }
    convts: dict[int, Callable[[], nn.Module]] = {
        1: lambda: nn.ConvTranspose1d(c, c, 3),
        2: lambda: nn.ConvTranspose2d(c, c, 3),
        3: lambda: nn.ConvTranspose3d(c, c, 3),
    }
    bns: dict[int, Callable[[], nn.Module]] = {
        1: lambda: nn.BatchNorm1d(c),
        2: lambda: nn.BatchNorm2d(c),
        3: lambda: nn.BatchNorm3d(c),
    }
    cur = BLOCK_INPUT
    for d in (1, 2, 3):
        # (ReLU, (BN, Conv))
        cur = mod(f"conv{d}d_bn_relu", convs[d], cur)
        cur = mod(f"bn{d}d_a", bns[d], cur)
        cur = mod(f"relu{d}d_a", nn.ReLU, cur)
        # (F.relu, (BN, Conv))
        cur = mod(f"conv{d}d_bn_frelu", convs[d], cur)
        cur = mod(f"bn{d}d_b", bns[d], cur)
        cur = relu_f(cur)
        # (ReLU, Conv)
        cur = mod(f"conv{d}d_relu", convs[d], cur)
        cur = mod(f"relu{d}d_b", nn.ReLU, cur)
        # (F.relu, Conv)
        cur = mod(f"conv{d}d_frelu", convs[d], cur)
        cur = relu_f(cur)
        # (BN, Conv)
        cur = mod(f"conv{d}d_bn", convs[d], cur)
        cur = mod(f"bn{d}d_c", bns[d], cur)
        fusions += 5
        if not train:
            # (BN, ConvTranspose)
            cur = mod(f"convt{d}d_bn", convts[d], cur)
            cur = mod(f"bn{d}d_t", bns[d], cur)
            fusions += 1
    # Linear: (ReLU, Linear), (F.relu, Linear), (BN1d, Linear)
    cur = mod("linear_relu", lambda: nn.Linear(c, c), cur)
    cur = mod("relu_lin", nn.ReLU, cur)
    cur = mod("linear_frelu", lambda: nn.Linear(c, c), cur)
    cur = relu_f(cur)
    cur = mod("linear_bn", lambda: nn.Linear(c, c), cur)
    cur = mod("bn1d_lin", bns[1], cur)
    fusions += 3
    # (ReLU, BN2d), (F.relu, BN2d), (ReLU, BN3d), (F.relu, BN3d)
    for d in (2, 3):
        cur = mod(f"bn{d}d_relu", bns[d], cur)
        cur = mod(f"relu_bn{d}d", nn.ReLU, cur)
        cur = mod(f"bn{d}d_frelu", bns[d], cur)
        cur = relu_f(cur)
        fusions += 2
    return BlockSpec(
        name="mixed",
        modules=tuple(mods),
        ops=tuple(ops),
        fusions_per_block=fusions,
        nodes_after_per_block=fusions,  # every node of the block is in one fusion
        train=train,
        class_name="Mixed",
    )


def onednn_spec(train: bool = False) -> BlockSpec:
    """conv + add (+ relu) patterns of ``get_onednn_backend_config()``.

    Eval (12 nodes, 4 fusions -> 4 nodes)::

        relu1(bn1(conv1(x)) + x)              (ReLU, (add, (BN, Conv), MatchAll))
        relu2(torch.add(d, conv2(d)))         (ReLU, (torch.add, MatchAll, Conv))
        torch.add(g, bn3(conv3(g)))           (torch.add, MatchAll, (BN, Conv))
        conv4(j) + j                          (add, Conv, MatchAll)

    Train (for QAT; the reference cannot fuse conv-bn-add in QAT): the BNs are left
    out (10 nodes, 4 fusions -> 4 nodes).
    """
    c = 4
    conv: Callable[[], nn.Module] = lambda: nn.Conv2d(c, c, 3, padding=1)
    bn: Callable[[], nn.Module] = lambda: nn.BatchNorm2d(c)
    mods: list[tuple[str, Callable[[], nn.Module]]] = []
    ops: list[Op] = []

    def mod(attr: str, factory: Callable[[], nn.Module], arg: int) -> int:
        mods.append((attr, factory))
        ops.append(Op("module", attr, (arg,)))
        return len(ops) - 1

    def fn(f: Callable[..., Any], *args: int) -> int:
        ops.append(Op("function", f, args))
        return len(ops) - 1

    x = BLOCK_INPUT
    a = mod("conv1", conv, x)
    if not train:
        a = mod("bn1", bn, a)
    b = fn(operator.add, a, x)
    d = mod("relu1", nn.ReLU, b)
    e = mod("conv2", conv, d)
    f = fn(torch.add, d, e)
    g = mod("relu2", nn.ReLU, f)
    h = mod("conv3", conv, g)
    if not train:
        h = mod("bn3", bn, h)
    j = fn(torch.add, g, h)
    k = mod("conv4", conv, j)
    fn(operator.add, k, j)
    return BlockSpec(
        name="onednn",
        modules=tuple(mods),
        ops=tuple(ops),
        fusions_per_block=4,
        nodes_after_per_block=4,
        backend="onednn",
        train=train,
        class_name="OneDNNBlocks",
    )


# ---------------------------------------------------------------------------
# module cloning

_CONTAINER_TYPES = (dict, set, list)


def clone_module(m: nn.Module, *, share_tensors: bool = False) -> nn.Module:
    """A copy of ``m`` much cheaper than ``copy.deepcopy``.

    The new module has its own ``__dict__`` and its own copies of every dict /
    set / list in it (hooks, ``_parameters``, ``_buffers``, ``_modules``...);
    children are cloned recursively; parameters and buffers are cloned
    (``share_tensors=False``) or shared (``share_tensors=True``).
    """
    new = object.__new__(type(m))
    d = m.__dict__.copy()
    for k, v in d.items():
        if isinstance(v, _CONTAINER_TYPES):
            d[k] = v.copy()
    if not share_tensors:
        params: dict[str, nn.Parameter | None] = d["_parameters"]
        for k, p in params.items():
            if p is not None:
                params[k] = nn.Parameter(p.detach().clone(), p.requires_grad)
        buffers: dict[str, torch.Tensor | None] = d["_buffers"]
        for k, b in buffers.items():
            if b is not None:
                buffers[k] = b.clone()
    children: dict[str, nn.Module | None] = d["_modules"]
    for k, c in children.items():
        if c is not None:
            children[k] = clone_module(c, share_tensors=share_tensors)
    new.__dict__.update(d)
    return new



_CACHE: dict[tuple[str, int, bool], BlockSpec] = {}


def spec_of(kind: str, channels: int = 4, train: bool = False) -> BlockSpec:
    """The (cached) block program of a workload kind: resnet, mixed or onednn."""
    key = (kind, channels, train)
    s = _CACHE.get(key)
    if s is None:
        if kind == "resnet":
            s = resnet_spec(channels, train)
        elif kind == "mixed":
            s = mixed_spec(train)
        elif kind == "onednn":
            s = onednn_spec(train)
        else:
            raise ValueError(f"unknown workload kind {kind!r}")
        _CACHE[key] = s
    return s


def block_modules(spec: BlockSpec, share_tensors: bool) -> dict[str, nn.Module]:
    """Fresh clones of the spec's template modules, by attribute name."""
    return {
        attr: clone_module(t, share_tensors=share_tensors)
        for attr, t in spec.templates().items()
    }


class ResNetLike(nn.Module):
    """Hand-written equivalent of :func:`resnet_like` (for tracing in tests)."""

    class Block(nn.Module):
        def __init__(self, mods: dict[str, nn.Module]) -> None:
            super().__init__()
            self.conv1 = mods["conv1"]
            self.bn1 = mods["bn1"]
            self.relu1 = mods["relu1"]
            self.conv2 = mods["conv2"]
            self.bn2 = mods["bn2"]

        def forward(self, x):  # type: (Any) -> Any
            # (a type comment: annotations would show up in the traced code)
            y = self.relu1(self.bn1(self.conv1(x)))
            y = F.relu(self.bn2(self.conv2(y)))
            return y + x

    def __init__(self, n_blocks: int, channels: int = 4, train: bool = False) -> None:
        super().__init__()
        spec = resnet_spec(channels, train)
        self.blocks = nn.ModuleList(
            ResNetLike.Block(block_modules(spec, False)) for _ in range(n_blocks)
        )
        self.train(train)

    def forward(self, x):  # type: (Any) -> Any
        # (a type comment: annotations would show up in the traced code)
        for blk in self.blocks:
            x = blk(x)
        return x
