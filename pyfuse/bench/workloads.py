"""Synthetic FX workloads for benchmarking and testing fusion passes.

Every workload is a chain of identical *blocks*.  A block is described once, as a
small program (:class:`~pyfuse.bench.specs.BlockSpec`), and that one description is turned either

* directly into a :class:`torch.fx.Graph` plus a module tree (fast: no tracing,
  which matters at 100k-1M nodes), by :func:`build`, or
* into an ordinary ``nn.Module`` whose ``forward`` runs the same program
  (:func:`equivalent_module`), so that ``torch.fx.symbolic_trace`` of it can be
  compared with the directly built graph (``tests/system/test_workloads.py`` checks that
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
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.fx import Graph, GraphModule, Node

from .specs import (
    BlockSpec,
    ResNetLike,
    block_modules,
    clone_module,
    spec_of,
)

__all__ = [
    "SIZE_SETS",
    "Workload",
    "build",
    "count_fusions",
    "equivalent_module",
    "fresh_copy",
    "huge",
    "make_workload",
    "mixed",
    "module_snapshot",
    "node_count",
    "onednn_blocks",
    "resnet_like",
    "resnet_like_module",
    "size_set",
]


# ---------------------------------------------------------------------------
# building


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
            _ProgramBlock(spec, block_modules(spec, False)) for _ in range(n_blocks)
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


def resnet_like_module(
    n_blocks: int, *, channels: int = 4, train: bool = False
) -> nn.Module:
    """The plain ``nn.Module`` equivalent of :func:`resnet_like` (runnable)."""
    return ResNetLike(n_blocks, channels, train)


def resnet_like(
    n_blocks: int, *, channels: int = 4, train: bool = False
) -> GraphModule:
    """N blocks of conv-bn-nn.ReLU, conv-bn-F.relu, residual add.

    ``7 * n_blocks + 2`` nodes, ``2 * n_blocks`` fusions (native config).
    N = 150, 1500, 5000, 15000 -> 1,052 / 10,502 / 35,002 / 105,002 nodes.
    """
    return build(spec_of("resnet", channels, train), n_blocks)


def mixed(n_blocks: int, *, train: bool = False) -> GraphModule:
    """Every native fusion pattern in each block (see :func:`mixed_spec`)."""
    return build(spec_of("mixed", 4, train), n_blocks)


def onednn_blocks(n_blocks: int, *, train: bool = False) -> GraphModule:
    """conv + add (+ relu) blocks for ``get_onednn_backend_config()``."""
    return build(spec_of("onednn", 4, train), n_blocks)


def huge(n_nodes: int = 1_000_000) -> GraphModule:
    """About ``n_nodes`` nodes of :func:`resnet_like` blocks (eval), built fast.

    Every conv, BN and ReLU is its own module instance (each fused conv must be),
    but parameters and buffers are shared with the template modules (fusion never
    writes them in place).  Returns a normal eager ``GraphModule``; the build time
    (graph, modules and code generation) is not part of any fusion measurement.
    """
    n_blocks = max(0, (n_nodes - 2) // 7)
    return build(spec_of("resnet", 4, False), n_blocks, share_tensors=True)


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
    spec = spec_of("resnet" if kind == "huge" else kind, 4, qat)
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
