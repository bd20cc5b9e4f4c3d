"""Synthetic FX workloads for benchmarking and testing fusion passes.

Every workload is a chain of identical *blocks*.  A block is described once, as a
small program (:class:`BlockSpec`), and that one description is turned either

* directly into a :class:`torch.fx.Graph` plus a module tree (fast: no tracing,
  which matters at 100k-1M nodes), by :func:`build`, or
* into an ordinary ``nn.Module`` whose ``forward`` runs the same program
  (:func:`equivalent_module`), so that ``torch.fx.symbolic_trace`` of it can be
  compared with the directly built graph (``tests/test_workloads.py`` checks that
  the two give the same ``.code``, module tree and fusion result).

Shapes are consistent where fusion needs them (a BN's ``num_features`` equals the
preceding conv's output channels), but the models are not meant to be run: the
fusion pass never runs the model.

All modules of one kind are clones of one template module (same weights), so
building is fast and deterministic (the templates are initialised with a fixed
seed, without touching the global RNG state).  Each module is its own instance
with its own parameter and buffer tensors, except in :func:`huge`, whose modules
share the templates' tensors to save memory.  The cyclic gc is paused while
building (setup, never measured).

Fresh inputs: fusion consumes and mutates its input, so every measured run needs
its own.  ``pyfuse bench`` and the pytest-benchmark suite *rebuild* the workload
for each run (:meth:`Workload.fresh`; no copy of a built graph is kept alive).
For any other GraphModule, :func:`fresh_copy` is about twice as fast as
``copy.deepcopy``: it copies the graph with ``Graph.__deepcopy__``
(``graph_copy``), clones each module the graph uses with a shallow ``__dict__``
copy (own hook/parameter/buffer/child dicts; parameters and buffers are cloned
too unless ``share_tensors=True``), and builds a new eager ``GraphModule``
(which generates code, as ``symbolic_trace`` would).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import operator
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Graph, GraphModule, Node

__all__ = [
    "SIZE_SETS",
    "BlockSpec",
    "Op",
    "Workload",
    "build",
    "clone_module",
    "count_fusions",
    "equivalent_module",
    "fresh_copy",
    "huge",
    "make_workload",
    "mixed",
    "mixed_spec",
    "module_snapshot",
    "node_count",
    "onednn_blocks",
    "onednn_spec",
    "resnet_like",
    "resnet_like_module",
    "resnet_spec",
    "size_set",
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


# ---------------------------------------------------------------------------
# building


def _block_modules(spec: BlockSpec, share_tensors: bool) -> dict[str, nn.Module]:
    return {
        attr: clone_module(t, share_tensors=share_tensors)
        for attr, t in spec.templates().items()
    }


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic gc while building: everything built stays alive, and
    gc passes over a growing heap would dominate the build time."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def build(
    spec: BlockSpec, n_blocks: int, *, share_tensors: bool = False
) -> GraphModule:
    """Build ``n_blocks`` blocks of ``spec`` directly with the ``torch.fx.Graph`` API.

    Produces the same ``.code``, node names, targets and module tree as
    ``torch.fx.symbolic_trace(equivalent_module(spec, n_blocks))``: block ``i``'s
    modules live at ``blocks.<i>.<attr>`` under plain ``nn.Module`` containers.
    """
    if n_blocks < 0:
        raise ValueError("n_blocks must be >= 0")
    with _gc_paused():
        return _build(spec, n_blocks, share_tensors)


def _build(spec: BlockSpec, n_blocks: int, share_tensors: bool) -> GraphModule:
    graph = Graph(tracer_cls=torch.fx.Tracer)
    create = graph.create_node
    x: Node = graph.placeholder("x")
    plan: list[tuple[str, Any, tuple[int, ...], dict[str, Any]]] = [
        (
            "call_module" if op.kind == "module" else "call_function",
            op.target,
            op.args,
            dict(op.kwargs),
        )
        for op in spec.ops
    ]
    templates = list(spec.templates().items())
    mod_types = {attr: type(t) for attr, t in templates}
    block_class = spec.block_class or _ProgramBlock
    modules: dict[str, Any] = {}
    for i in range(n_blocks):
        path = f"blocks.{i}"
        prefix = path + "."
        for attr, t in templates:
            modules[prefix + attr] = clone_module(t, share_tensors=share_tensors)
        # what the tracer records in node.meta["nn_module_stack"]
        blk_entry = (path, (path, block_class))
        vals: list[Node] = []
        for kind, target, args, kwargs in plan:
            a = tuple([x if j < 0 else vals[j] for j in args])
            if kind == "call_module":
                mpath = prefix + target
                node = create(kind, mpath, a, {})
                node.meta["nn_module_stack"] = OrderedDict(
                    (blk_entry, (mpath, (mpath, mod_types[target])))
                )
            else:
                node = create(kind, target, a, dict(kwargs))
                node.meta["nn_module_stack"] = OrderedDict((blk_entry,))
            vals.append(node)
        x = vals[-1]
    graph.output(x)
    gm = GraphModule(modules, graph, spec.class_name)
    gm.training = spec.train  # as GraphModule(root, ...) copies root.training
    return gm


class _ProgramBlock(nn.Module):
    """An ``nn.Module`` that runs a block program (for tracing)."""

    def __init__(self, spec: BlockSpec, modules: dict[str, nn.Module]) -> None:
        super().__init__()
        for attr, _ in spec.modules:
            self.add_module(attr, modules[attr])
        self._ops = spec.ops

    def forward(self, x):  # type: (Any) -> Any
        # (a type comment: annotations would show up in the traced code)
        vals: list[Any] = []
        for op in self._ops:
            args = [x if j < 0 else vals[j] for j in op.args]
            if op.kind == "module":
                vals.append(getattr(self, op.target)(*args))
            else:
                vals.append(op.target(*args, **dict(op.kwargs)))
        return vals[-1]


class _ProgramModel(nn.Module):
    def __init__(self, spec: BlockSpec, n_blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            _ProgramBlock(spec, _block_modules(spec, False)) for _ in range(n_blocks)
        )
        self.train(spec.train)

    def forward(self, x):  # type: (Any) -> Any
        # (a type comment: annotations would show up in the traced code)
        for blk in self.blocks:
            x = blk(x)
        return x


def equivalent_module(spec: BlockSpec, n_blocks: int) -> nn.Module:
    """The ordinary ``nn.Module`` whose trace equals ``build(spec, n_blocks)``
    (its class is named ``spec.class_name``, as the trace's class name is)."""
    if spec.block_class is ResNetLike.Block:
        conv1 = spec.templates()["conv1"]
        assert isinstance(conv1, nn.Conv2d)
        return ResNetLike(n_blocks, conv1.in_channels, spec.train)
    cls = type(spec.class_name, (_ProgramModel,), {})
    model = cls(spec, n_blocks)
    assert isinstance(model, nn.Module)
    return model


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
            ResNetLike.Block(_block_modules(spec, False)) for _ in range(n_blocks)
        )
        self.train(train)

    def forward(self, x):  # type: (Any) -> Any
        # (a type comment: annotations would show up in the traced code)
        for blk in self.blocks:
            x = blk(x)
        return x


def resnet_like_module(
    n_blocks: int, *, channels: int = 4, train: bool = False
) -> nn.Module:
    """The plain ``nn.Module`` equivalent of :func:`resnet_like` (runnable)."""
    return ResNetLike(n_blocks, channels, train)


_SPEC_CACHE: dict[tuple[str, int, bool], BlockSpec] = {}


def _spec(kind: str, channels: int = 4, train: bool = False) -> BlockSpec:
    key = (kind, channels, train)
    s = _SPEC_CACHE.get(key)
    if s is None:
        if kind == "resnet":
            s = resnet_spec(channels, train)
        elif kind == "mixed":
            s = mixed_spec(train)
        elif kind == "onednn":
            s = onednn_spec(train)
        else:
            raise ValueError(f"unknown workload kind {kind!r}")
        _SPEC_CACHE[key] = s
    return s


def resnet_like(
    n_blocks: int, *, channels: int = 4, train: bool = False
) -> GraphModule:
    """N blocks of conv-bn-nn.ReLU, conv-bn-F.relu, residual add.

    ``7 * n_blocks + 2`` nodes, ``2 * n_blocks`` fusions (native config).
    N = 150, 1500, 5000, 15000 -> 1,052 / 10,502 / 35,002 / 105,002 nodes.
    """
    return build(_spec("resnet", channels, train), n_blocks)


def mixed(n_blocks: int, *, train: bool = False) -> GraphModule:
    """Every native fusion pattern in each block (see :func:`mixed_spec`)."""
    return build(_spec("mixed", 4, train), n_blocks)


def onednn_blocks(n_blocks: int, *, train: bool = False) -> GraphModule:
    """conv + add (+ relu) blocks for ``get_onednn_backend_config()``."""
    return build(_spec("onednn", 4, train), n_blocks)


def huge(n_nodes: int = 1_000_000) -> GraphModule:
    """About ``n_nodes`` nodes of :func:`resnet_like` blocks (eval), built fast.

    Every conv, BN and ReLU is its own module instance (each fused conv must be),
    but parameters and buffers are shared with the template modules (fusion never
    writes them in place).  Returns a normal eager ``GraphModule``; the build time
    (graph, modules and code generation) is not part of any fusion measurement.
    """
    n_blocks = max(0, (n_nodes - 2) // 7)
    return build(_spec("resnet", 4, False), n_blocks, share_tensors=True)


# ---------------------------------------------------------------------------
# fresh copies


def fresh_copy(gm: GraphModule, *, share_tensors: bool = False) -> GraphModule:
    """An independent copy of ``gm`` to feed to one fusion run.

    New graph (``Graph.__deepcopy__``: same node names, targets and args, a
    shallow copy of each ``node.meta``), new leaf modules (:func:`clone_module`;
    tensors cloned unless ``share_tensors``), new plain ``nn.Module``
    containers, and a new eager ``GraphModule`` with the same class name,
    ``training`` flag and ``meta``.  Like ``GraphModule(gm, graph)``, only what
    the graph refers to (``call_module`` / ``get_attr`` targets) is carried over.
    """
    graph = copy.deepcopy(gm.graph)
    attrs: dict[str, Any] = {}
    clones: dict[int, Any] = {}
    for node in graph.nodes:
        if node.op not in ("call_module", "get_attr"):
            continue
        target = node.target
        assert isinstance(target, str)
        if target in attrs:
            continue
        obj: Any = gm
        for item in target.split("."):
            obj = getattr(obj, item)
        new = clones.get(id(obj))
        if new is None:
            if isinstance(obj, nn.Module):
                new = clone_module(obj, share_tensors=share_tensors)
            elif isinstance(obj, nn.Parameter) and not share_tensors:
                new = nn.Parameter(obj.detach().clone(), obj.requires_grad)
            elif isinstance(obj, torch.Tensor) and not share_tensors:
                new = obj.clone()
            else:
                new = obj
            clones[id(obj)] = new
        attrs[target] = new
    out = GraphModule(attrs, graph, type(gm).__name__)
    out.training = gm.training
    out.meta = dict(getattr(gm, "meta", {}))
    return out


# ---------------------------------------------------------------------------
# checking results


def module_snapshot(gm: GraphModule) -> dict[str, nn.Module]:
    """The module object at the target of each ``call_module`` node.

    Take it before fusing; :func:`count_fusions` compares the output with it
    (strong references, so object identities cannot be reused meanwhile)."""
    snap: dict[str, nn.Module] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            assert isinstance(node.target, str)
            snap[node.target] = gm.get_submodule(node.target)
    return snap


def count_fusions(out: GraphModule, before: dict[str, nn.Module]) -> int:
    """Number of ``call_module`` nodes of ``out`` whose module is not the one the
    input had at that path, i.e. the fused modules (every fuser makes a new one)."""
    n = 0
    for node in out.graph.nodes:
        if node.op == "call_module":
            assert isinstance(node.target, str)
            if out.get_submodule(node.target) is not before.get(node.target):
                n += 1
    return n


#: n_blocks per workload kind for each size set ("huge" holds 1M nodes)
SIZE_SETS: dict[str, dict[str, list[int]]] = {
    # a smoke test: well under a second per workload
    "small": {"resnet": [10, 150], "mixed": [2, 18], "onednn": [8, 80]},
    # ~1k, 10k, 35k, 100k nodes (resnet); ~1k, 10k, 35k (mixed, onednn)
    "standard": {
        "resnet": [150, 1_500, 5_000, 15_000],
        "mixed": [18, 180, 625],
        "onednn": [85, 835, 2_915],
    },
    # (1_000_000 - 2) // 7 resnet blocks
    "huge": {"huge": [(1_000_000 - 2) // 7]},
}


def size_set(name: str) -> dict[str, list[int]]:
    """n_blocks per workload kind of the size set ``small|standard|huge``."""
    try:
        return {k: list(v) for k, v in SIZE_SETS[name].items()}
    except KeyError:
        raise ValueError(
            f"unknown size set {name!r}; expected one of {sorted(SIZE_SETS)}"
        ) from None


@dataclass
class Workload:
    """A workload and what fusing it must give; :meth:`fresh` builds an input."""

    kind: str
    n_blocks: int
    spec: BlockSpec
    share_tensors: bool
    is_qat: bool
    nodes: int
    expected_fusions: int
    expected_nodes_after: int

    @property
    def label(self) -> str:
        return f"{self.kind}-{self.nodes}"

    def fresh(self) -> GraphModule:
        """A newly built input (fusion consumes its input: one per run)."""
        return build(self.spec, self.n_blocks, share_tensors=self.share_tensors)

    def backend_config(self) -> Any:
        """A new ``BackendConfig`` for this workload (native or onednn)."""
        # (the getters need backend_config.utils, which a bare import of
        # torch.ao.quantization.backend_config does not load)
        import torch.ao.quantization.backend_config.utils  # noqa: F401
        from torch.ao.quantization.backend_config import (
            get_native_backend_config,
            get_onednn_backend_config,
        )

        if self.spec.backend == "onednn":
            return get_onednn_backend_config()
        return get_native_backend_config()


def make_workload(kind: str, n_blocks: int, *, qat: bool = False) -> Workload:
    """Describe a workload: ``kind`` is ``resnet``, ``mixed``, ``onednn`` or
    ``huge`` (``n_blocks`` resnet blocks, eval, tensors shared as in :func:`huge`).
    ``qat`` builds train-mode modules, to be fused with ``is_qat=True``."""
    if kind == "huge" and qat:
        raise ValueError("the huge workload is eval-only")
    spec = _spec("resnet" if kind == "huge" else kind, 4, qat)
    return Workload(
        kind=kind,
        n_blocks=n_blocks,
        spec=spec,
        share_tensors=(kind == "huge"),
        is_qat=qat,
        nodes=spec.nodes_per_block * n_blocks + 2,
        expected_fusions=spec.fusions_per_block * n_blocks,
        expected_nodes_after=spec.nodes_after_per_block * n_blocks + 2,
    )


def node_count(gm: GraphModule) -> int:
    """Number of nodes of ``gm``'s graph."""
    return len(gm.graph.nodes)
