"""Random real models and backend configs for the fused-output fuzzer.

A model is an ``nn.Module`` holding random submodules (Conv1d/2d/3d, ConvTranspose1d/2d/3d
with groups, BatchNorm1d/2d/3d with and without affine / running stats, Linear, ReLU,
LeakyReLU, Tanh, Sigmoid, Identity, Dropout, sometimes parametrized) and a random DAG
``forward`` built directly as a ``torch.fx.Graph``: call_module (new modules and shared
modules called at several sites, sometimes through an alias path), call_function
(``F.relu``, ``torch.relu``, ``torch.add``, ``operator.add`` with literals, ``getattr``
of ``.shape``), call_method (``.relu()``, ``.add()``, ``.flatten()``, ``.reshape()``,
``.sum()``), get_attr of parameters and buffers, multi-user nodes, runs of 8-10
same-shape conv-bn(-relu) chains (pyfuse's batched BN folding), a leaf module holding a
conv that is also called on its own, float64 models, frozen parameters. Each op is
evaluated on a concrete example tensor while the graph is built, so every model runs on
its example input. Mode: eval, QAT (train, ``is_qat=True``) or rarely mixed training
flags.

Backend config: one of torch's seven, or a custom ``BackendConfig``: a shuffled subset of
a torch backend's fusion configs plus random ``BackendPatternConfig`` s (forward-format
and nested reversed chains, multi-argument patterns, ``MatchAllNode`` (also as the last
position), literal entries), with fuser methods from ``torch.ao.nn.intrinsic`` / torch's
fusers or simple custom fusers (a chain module, a fuser that raises, a root-node getter
that picks the last node).

The strategy is :func:`cases`; :class:`Case` is one generated example.
"""

from __future__ import annotations

import copy
import operator
import random
import warnings

import torch
import torch.fx
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn
from torch.fx import Graph, GraphModule, Node
from torch.nn.utils import parametrize

from tests.fuzz.graphs import _int, _pick
from tests.support.contract import single_thread

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torch.ao.nn.intrinsic as nni
    from torch.ao.quantization.backend_config import (
        BackendConfig,
        BackendPatternConfig,
        get_fbgemm_backend_config,
        get_native_backend_config,
        get_qnnpack_backend_config,
        get_tensorrt_backend_config,
    )
    from torch.ao.quantization.backend_config.executorch import (
        get_executorch_backend_config,
    )
    from torch.ao.quantization.backend_config.onednn import get_onednn_backend_config
    from torch.ao.quantization.backend_config.x86 import get_x86_backend_config
    from torch.ao.quantization.fuser_method_mappings import (
        fuse_conv_bn,
        fuse_conv_bn_relu,
        fuse_convtranspose_bn,
        fuse_linear_bn,
    )
    from torch.ao.quantization.utils import MatchAllNode

BACKENDS = {
    "native": get_native_backend_config,
    "fbgemm": get_fbgemm_backend_config,
    "qnnpack": get_qnnpack_backend_config,
    "x86": get_x86_backend_config,
    "onednn": get_onednn_backend_config,
    "tensorrt": get_tensorrt_backend_config,
    "executorch": get_executorch_backend_config,
}


# --------------------------------------------------------------------------------------
# cheap draw helpers (a strategy built per draw is costly); _int and _pick come
# from tests.fuzz.graphs


def _chance(draw, percent):
    return _int(draw, 0, 99) < percent


# --------------------------------------------------------------------------------------
# modules


class _Ident(nn.Module):
    """An identity parametrization: the module's type_before_parametrizations is kept."""

    def forward(self, x):
        return x


class Chain(nn.Module):
    """A custom fuser's result: applies the matched ops in forward order.

    ``steps`` holds modules (registered as children), functions and method names.
    """

    def __init__(self, steps):
        super().__init__()
        self.kinds = []
        self.funcs = []
        for i, s in enumerate(steps):
            if isinstance(s, nn.Module):
                self.add_module(str(i), s)
                self.kinds.append(("module", str(i)))
            elif isinstance(s, str):
                self.kinds.append(("method", s))
            else:
                self.funcs.append(s)
                self.kinds.append(("func", len(self.funcs) - 1))

    def forward(self, x, *extra):
        for kind, key in self.kinds:
            if kind == "module":
                x = self._modules[key](x)
            elif kind == "method":
                x = getattr(x, key)()
            else:
                x = self.funcs[key](x)
        for e in extra:
            x = x + e
        return x

    def extra_repr(self):
        return ", ".join(
            f"{k}:{getattr(v, '__name__', v) if k == 'func' else v}"
            for k, v in self.kinds
        )


class LeafBlock(nn.Module):
    """A module with a child that the tracer keeps as one call (a leaf, as a custom
    tracer's leaf modules are): relu(inner(x))."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return F.relu(self.inner(x))


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, LeafBlock) or super().is_leaf_module(m, qualname)


def trace(model):
    """``torch.fx.symbolic_trace``, keeping LeafBlock calls."""
    tracer = _Tracer()
    graph = tracer.trace(model)
    return GraphModule(tracer.root, graph, type(model).__name__)


CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONVT = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
_MAX_NUMEL = 1500
_FUSION_ROOTS = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)


def _init_module(m, gen):
    """Deterministic, well-scaled parameters and BN statistics from ``gen``."""
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                if mod.running_mean is not None:
                    mod.running_mean.copy_(
                        torch.rand(mod.num_features, generator=gen) - 0.5
                    )
                    mod.running_var.copy_(
                        torch.rand(mod.num_features, generator=gen) * 1.5 + 0.5
                    )
                    mod.num_batches_tracked.fill_(
                        int(torch.randint(0, 5, (1,), generator=gen))
                    )
                if mod.affine:
                    mod.weight.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
                    mod.bias.copy_(torch.rand(mod.num_features, generator=gen) - 0.5)
            elif isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)):
                w = mod.weight
                bound = 1.5 / max(1, w[0].numel()) ** 0.5
                w.copy_((torch.rand(w.shape, generator=gen) * 2 - 1) * bound)
                if mod.bias is not None:
                    mod.bias.copy_(torch.rand(mod.bias.shape, generator=gen) - 0.5)


# --------------------------------------------------------------------------------------
# the model strategy


class _Builder:
    """Builds a graph op by op, evaluating each op on concrete tensors (shape checking)."""

    def __init__(self, draw, seed):
        self.draw = draw
        self.gen = torch.Generator().manual_seed(seed)
        # (user attributes come from their own stream: drawing them from hypothesis
        # would shift every later draw, and with it the cases a fixed seed yields)
        self.attr_rng = random.Random(seed)
        self.g = Graph()
        self.root = nn.Module()
        self.vals: list[tuple[Node, torch.Tensor]] = []  # usable values
        self.shapes: list[tuple[Node, object]] = []  # getattr(., "shape") nodes
        self.paths: dict[str, nn.Module] = {}  # path -> module (aliases included)
        self.alias_of: dict[str, str] = {}
        self.in_shapes: dict[str, torch.Size] = {}  # path -> shape of its first input
        self.chain_heads: list[str] = []  # paths of modules that start a chain
        self.linear_rank3_bn = False  # a Linear over a rank>2 input feeding a BN
        self.n = 0

    # -- draws
    def i(self, lo, hi):
        return _int(self.draw, lo, hi)

    def pick(self, seq):
        return _pick(self.draw, seq)

    def chance(self, p):
        return _chance(self.draw, p)

    def value(self, pred=None):
        """A usable value, biased to recent ones (multi-user nodes come from reuse)."""
        cands = [v for v in self.vals if pred is None or pred(v[1])]
        if not cands:
            return None
        r = self.i(0, 9)
        if r < 5:
            return cands[-1]
        if r < 8:
            return cands[-min(len(cands), self.i(1, 3))]
        return cands[self.i(0, len(cands) - 1)]

    # -- graph construction with concrete evaluation
    def _concrete(self, a):
        if isinstance(a, Node):
            return a.meta["pbt_val"]
        if isinstance(a, (tuple, list)):
            return type(a)(self._concrete(x) for x in a)
        return a

    def add(self, op, target, args, kwargs=None, *, usable=True):
        kwargs = kwargs or {}
        cargs, ckw = self._concrete(args), self._concrete(kwargs)
        try:
            with torch.no_grad():
                if op == "call_module":
                    out = self.paths[target](*cargs, **ckw)
                elif op == "call_function":
                    out = target(*cargs, **ckw)
                elif op == "call_method":
                    out = getattr(cargs[0], target)(*cargs[1:], **ckw)
                else:  # get_attr
                    out = _attr(self.root, target)
        except Exception:  # noqa: BLE001 - shape mismatch: op rejected
            return None
        if isinstance(out, torch.Tensor) and (
            out.numel() > _MAX_NUMEL or not bool(torch.isfinite(out).all())
        ):
            return None
        node = self.g.create_node(op, target, tuple(args), kwargs)
        if op == "call_module" and cargs and isinstance(cargs[0], torch.Tensor):
            self.in_shapes.setdefault(target, cargs[0].shape)
        node.meta["pbt_val"] = out
        if usable and isinstance(out, torch.Tensor):
            self.vals.append((node, out))
        return node

    def consume(self, node):
        """``node`` is mutated in place by its (only) user: no other op may read it."""
        self.vals = [v for v in self.vals if v[0] is not node]

    def new_path(self):
        self.n += 1
        prefix = self.pick(["", "", "", "blk.", "blk.sub.", "b2."])
        return f"{prefix}m{self.n}"

    def register(self, m):
        path = self.new_path()
        _set_attr_path(self.root, path, m)
        self.paths[path] = m
        if self.chance(3):  # the same instance under a second name
            alias = self.new_path()
            _set_attr_path(self.root, alias, m)
            self.paths[alias] = m
            self.alias_of[alias] = path
            if self.chance(50):
                return alias
        return path

    def maybe_parametrize(self, m):
        if self.chance(1):
            parametrize.register_parametrization(m, "weight", _Ident())
        return self.maybe_freeze(m)

    def maybe_annotate(self, m):
        """A user attribute, sometimes: plain values are shared by a fold's copy,
        a list or dict (inside a tuple too) is copied, as deepcopy copies it."""
        if self.attr_rng.random() < 0.6:
            m.note = self.attr_rng.choice(
                [(1, "a"), ((2, None), 3.0), ([1],), [(1, [2])], {"k": ([3],)}]
            )
        return m

    def maybe_freeze(self, m):
        if self.chance(4):  # frozen parameters: the fused ones keep requires_grad
            for p in m.parameters():
                p.requires_grad_(False)
        return m

    # -- module factories for an input tensor
    def make_conv(self, t, transposed):
        dim = t.dim() - 2
        if dim not in CONV:
            return None
        c_in = t.shape[1]
        c_out = self.pick([1, 2, 3, 4, c_in])
        groups = 1
        if self.chance(30):
            common = [g for g in range(2, 5) if c_in % g == 0 and c_out % g == 0]
            if common:
                groups = self.pick(common)
        small = max(t.shape[2:]) <= 3
        k, s, p = self.pick(
            [(1, 1, 0), (3, 1, 1), (2, 2, 0) if transposed and small else (2, 1, 0)]
        )
        if min(t.shape[2:]) < k and not transposed:
            k, s, p = 1, 1, 0
        cls = (CONVT if transposed else CONV)[dim]
        m = cls(
            c_in, c_out, k, stride=s, padding=p, groups=groups, bias=self.chance(70)
        )
        _init_module(m, self.gen)
        return self.maybe_parametrize(self.maybe_annotate(m))

    def make_linear(self, t):
        m = nn.Linear(
            t.shape[-1], self.pick([1, 2, 3, 4, t.shape[-1]]), bias=self.chance(75)
        )
        _init_module(m, self.gen)
        return self.maybe_parametrize(self.maybe_annotate(m))

    def make_bn(self, t, rank=None):
        cls = BN.get(rank or t.dim())
        if cls is None:
            return None
        m = cls(
            t.shape[1],
            eps=self.pick([1e-5, 1e-5, 1e-3]),
            momentum=self.pick([0.1, 0.1, 0.3, None]),
            affine=self.chance(90),
            track_running_stats=self.chance(94),
        )
        _init_module(m, self.gen)
        return self.maybe_freeze(m)

    def make_act(self):
        k = self.i(0, 9)
        if k < 4:
            return nn.ReLU(inplace=False)
        return [
            nn.LeakyReLU(self.pick([0.01, 0.2])),
            nn.Tanh(),
            nn.Sigmoid(),
            nn.Identity(),
            nn.Dropout(self.pick([0.0, 0.5])),
            nn.ReLU(inplace=True),
        ][k - 4]

    # -- ops
    def call_new_module(self, m, v):
        node = self.add("call_module", self.register(m), (v[0],))
        if node is not None and getattr(m, "inplace", False):
            self.consume(v[0])
        return node

    def call_shared_module(self):
        """Call an existing module again (a module called at several sites). Mostly a
        module a fusion can start at (conv, linear, BN), on a value of the shape it
        was first called on: the shared-module cases the oracle must tell apart."""
        if not self.paths:
            return None
        fusable = [
            p
            for p in sorted(self.in_shapes)
            if isinstance(self.paths.get(p), _FUSION_ROOTS)
        ]
        heads = [p for p in self.chain_heads if p in self.in_shapes]
        if heads and self.chance(70):
            path = self.pick(heads)  # its first site likely fuses, this one may not
        elif fusable and self.chance(50):
            path = self.pick(fusable)
        else:
            path = self.pick(sorted(self.paths))
        m = self.paths[path]
        if getattr(m, "inplace", False):
            return None
        shape = self.in_shapes.get(path)
        for _ in range(3):
            v = None
            if shape is not None and self.chance(80):
                v = self.value(lambda t: t.shape == shape)
            v = v or self.value()
            if v is None:
                return None
            node = self.add("call_module", path, (v[0],))
            if node is not None:
                return node
        return None

    def relu_variant(self, v, allow_inplace):
        k = self.i(0, 13)
        node = v[0]
        if k < 3:
            return self.call_new_module(nn.ReLU(), v)
        if k == 3 and allow_inplace:
            return self.call_new_module(nn.ReLU(inplace=True), v)
        if k == 4:
            relus = [
                p for p, m in self.paths.items() if type(m) is nn.ReLU and not m.inplace
            ]
            if relus:  # a shared nn.ReLU
                return self.add("call_module", self.pick(sorted(relus)), (node,))
            return self.call_new_module(nn.ReLU(), v)
        if k < 8:
            return self.add("call_function", F.relu, (node,))
        if k == 8:
            return self.add("call_function", F.relu, (node,), {"inplace": False})
        if k == 9 and allow_inplace:
            out = self.add("call_function", F.relu, (node,), {"inplace": True})
            if out is not None:
                self.consume(node)
            return out
        if k < 12:
            return self.add("call_function", torch.relu, (node,))
        return self.add("call_method", "relu", (node,))

    def chain(self):
        """conv / convT / linear, maybe followed by BN, maybe by a relu (fusion material)."""
        v = self.value()
        if v is None:
            return None
        t = v[1]
        k = self.i(0, 9)
        if k < 5 and t.dim() >= 3:
            m = self.make_conv(t, transposed=False)
        elif k < 7 and t.dim() >= 3:
            m = self.make_conv(t, transposed=True)
        else:
            m = self.make_linear(t)
        if m is None:
            return None
        first = self.call_new_module(m, v)
        if first is None:
            return None
        self.chain_heads.append(first.target)
        last = (first, first.meta["pbt_val"])
        if self.chance(65):
            bn = self.make_bn(last[1])
            if bn is not None:
                node = self.call_new_module(bn, last)
                if node is not None:
                    if isinstance(m, nn.Linear) and t.dim() > 2:
                        self.linear_rank3_bn = True
                    last = (node, node.meta["pbt_val"])
        if self.chance(60):
            node = self.relu_variant(last, allow_inplace=True)
            if node is not None:
                last = (node, node.meta["pbt_val"])
        return last[0]

    def binary(self):
        a = self.value()
        if a is None:
            return None
        k = self.i(0, 19)
        if k < 5:  # with a literal
            lit = self.pick([1, 2, 0.5, -1.0, 3.0])
            form = self.i(0, 3)
            if form == 0:
                return self.add("call_function", operator.add, (a[0], lit))
            if form == 1:
                return self.add("call_function", operator.add, (lit, a[0]))
            if form == 2:
                return self.add("call_function", torch.add, (a[0], lit))
            return self.add("call_method", "add", (a[0], lit))
        same = [v for v in self.vals if v[1].shape == a[1].shape]
        b = self.pick(same)
        if k < 10:
            return self.add("call_function", operator.add, (a[0], b[0]))
        if k < 14:
            return self.add("call_function", torch.add, (a[0], b[0]))
        if k == 14:
            return self.add("call_function", torch.add, (a[0], b[0]), {"alpha": 2})
        if k == 15:
            return self.add("call_function", torch.add, (a[0],), {"other": b[0]})
        if k == 16:
            return self.add("call_function", operator.mul, (a[0], b[0]))
        if k == 17:
            return self.add("call_function", operator.sub, (a[0], b[0]))
        return self.add("call_method", "add", (a[0], b[0]))

    def get_attr(self):
        """Read a parameter / buffer (of a called module, or of the root), reduce it to a
        scalar and add it to a value."""
        owners = [
            (p, m)
            for p, m in self.paths.items()
            if list(m.named_parameters()) or list(m.named_buffers())
        ]
        if owners and self.chance(75):
            path, m = self.pick(sorted(owners, key=lambda x: x[0]))
            names = [n for n, _ in m.named_parameters()] + [
                n for n, b in m.named_buffers() if b.is_floating_point()
            ]
            if not names:
                return None
            target = f"{path}.{self.pick(names)}"
        else:
            target = self.pick(["scale", "offset"])
        attr = self.add("get_attr", target, (), usable=False)
        if attr is None:
            return None
        red = self.add("call_method", "sum", (attr,), usable=False)
        a = self.value()
        if red is None or a is None:
            return None
        return self.add("call_function", operator.add, (a[0], red))

    def shape_op(self):
        v = self.value()
        if v is None:
            return None
        k = self.i(0, 9)
        if k < 3:  # getattr(., "shape") feeding a reshape of a same-numel value
            shp = self.add("call_function", getattr, (v[0], "shape"), usable=False)
            if shp is None:
                return None
            self.shapes.append((shp, v[1].shape))
            same = [u for u in self.vals if u[1].numel() == v[1].numel()]
            u = self.pick(same)
            return self.add("call_method", "reshape", (u[0], shp))
        if k < 6 and v[1].dim() > 2:
            return self.add("call_method", "flatten", (v[0], 1))
        if k < 8 and v[1].dim() == 2:
            return self.add("call_method", "unsqueeze", (v[0], -1))
        if k == 8:
            return self.add("call_function", torch.flatten, (v[0], 1))
        return self.add("call_method", "mean", (v[0], -1), {"keepdim": True})

    def repeated_chains(self):
        """8-10 conv-bn(-relu) chains of one shape, in sequence or in parallel: pyfuse
        folds groups of 8+ same-shape pairs in batch."""
        v = self.value(lambda t: t.dim() >= 3)
        if v is None:
            return None
        dim, c = v[1].dim() - 2, v[1].shape[1]
        bias, relu, parallel = self.chance(70), self.i(0, 2), self.chance(50)
        x, outs = v, []
        for _ in range(self.i(8, 10)):
            conv = CONV[dim](c, c, 1, bias=bias)
            _init_module(conv, self.gen)
            node = self.call_new_module(conv, v if parallel else x)
            if node is None:
                return None
            bn = nn.BatchNorm2d(c) if dim == 2 else BN[dim + 2](c)
            _init_module(bn, self.gen)
            node = self.call_new_module(bn, (node, node.meta["pbt_val"]))
            if node is not None and relu == 1:
                node = self.call_new_module(nn.ReLU(), (node, node.meta["pbt_val"]))
            elif node is not None and relu == 2:
                node = self.add("call_function", F.relu, (node,))
            if node is None:
                return None
            x = (node, node.meta["pbt_val"])
            outs.append(node)
        if parallel:
            acc = outs[0]
            for o in outs[1:]:
                acc = self.add("call_function", operator.add, (acc, o))
                if acc is None:
                    return None
            return acc
        return x[0]

    def container(self):
        """A leaf module holding a conv / linear, called as a whole, and maybe its inner
        module called on its own too (fusing the inner one would change the container's
        result)."""
        v = self.value(lambda t: t.dim() in (2, 3, 4, 5))
        if v is None:
            return None
        t = v[1]
        if t.dim() == 2:
            inner = nn.Linear(t.shape[-1], self.pick([1, 2, 3]), bias=self.chance(70))
        else:
            inner = CONV[t.dim() - 2](t.shape[1], self.pick([1, 2, 3]), 1)
        _init_module(inner, self.gen)
        path = self.register(LeafBlock(inner))
        self.paths[f"{path}.inner"] = inner
        node = self.add("call_module", path, (v[0],))
        if node is None or not self.chance(60):
            return node
        inner_node = self.add("call_module", f"{path}.inner", (v[0],))
        if inner_node is None:
            return node
        last = (inner_node, inner_node.meta["pbt_val"])
        if self.chance(60):
            bn = self.make_bn(last[1])
            if bn is not None:
                out = self.call_new_module(bn, last)
                if out is not None:
                    last = (out, out.meta["pbt_val"])
        if self.chance(50):
            out = self.relu_variant(last, allow_inplace=False)
            if out is not None:
                last = (out, out.meta["pbt_val"])
        both = self.add(
            "call_function", operator.add, (node, last[0])
        )  # keep both used
        return last[0] if both is None else both

    def shared_chain(self):
        """A chain (conv / convT / linear, maybe BN, maybe relu) whose first module is
        called again at a second site that may or may not fuse the same way: README
        "Differences" row 1."""
        v = self.value()
        if v is None:
            return None
        first = self.chain()
        if first is None or not self.chain_heads:
            return first
        path = self.chain_heads[-1]
        w = self.value(lambda t: t.shape == self.in_shapes.get(path)) or v
        node = self.add("call_module", path, (w[0],))
        if node is None:
            return first
        if self.chance(40):
            out = self.relu_variant((node, node.meta["pbt_val"]), allow_inplace=False)
            node = out if out is not None else node
        both = self.add("call_function", operator.add, (first, node))
        return node if both is None else both

    def step(self):
        k = self.i(0, 199)
        if k < 4:
            return self.repeated_chains()
        if k < 6:
            return self.container()
        if k < 16:
            return self.shared_chain()
        k = self.i(0, 99)
        if k < 36:
            return self.chain()
        if k < 48:
            v = self.value()
            if v is None:
                return None
            t = v[1]
            r = self.i(0, 6)
            if r == 0 and t.dim() >= 3:
                m = self.make_conv(t, transposed=self.chance(30))
            elif r == 1:
                m = self.make_linear(t)
            elif r == 2:
                m = self.make_bn(t)
            else:
                m = self.make_act()
            if m is None:
                return None
            if getattr(m, "inplace", False) and v[0].op in ("placeholder", "get_attr"):
                return None
            return self.call_new_module(m, v)
        if k < 62:
            return self.call_shared_module()
        if k < 69:
            v = self.value()
            return (
                None
                if v is None
                else self.relu_variant(v, allow_inplace=self.chance(30))
            )
        if k < 83:
            return self.binary()
        if k < 88:
            return self.get_attr()
        return self.shape_op()


def _set_attr_path(root, path, value):
    *prefix, name = path.split(".")
    parent = root
    for item in prefix:
        if not hasattr(parent, item):
            setattr(parent, item, nn.Module())
        parent = getattr(parent, item)
    setattr(parent, name, value)


def _attr(root, target):
    obj = root
    for atom in target.split("."):
        obj = getattr(obj, atom)
    return obj


class Case:
    """One generated example: an unfused model, its input, a mode and a backend config."""

    def __init__(
        self, template, inputs, mode, is_qat, backend, backend_factory, semantic, notes
    ):
        self.template = template
        self.inputs = inputs
        self.mode = mode
        self.is_qat = is_qat
        self.backend = backend
        self.backend_factory = backend_factory
        self.semantic = semantic  # every fuser that can run preserves the model's math
        self.notes = notes

    def make(self):
        return copy.deepcopy(self.template)

    def module_table(self):
        rows = []
        for path, m in self.template.named_modules(remove_duplicate=False):
            if (path and not m._modules) or parametrize.is_parametrized(m):
                kind = parametrize.type_before_parametrizations(m).__name__
                extra = " (parametrized)" if parametrize.is_parametrized(m) else ""
                rows.append(
                    f"  {path}: {kind}({m.extra_repr()}){extra} training={m.training}"
                )
        return "\n".join(rows)

    def __repr__(self):
        return (
            f"Case(mode={self.mode}, is_qat={self.is_qat}, backend={self.backend}, "
            f"semantic={self.semantic}, inputs={[tuple(x.shape) for x in self.inputs]})\n"
            f"{self.notes}\n--- modules ---\n{self.module_table()}\n--- model code ---{self.template.code}"
        )


@st.composite
def cases(draw, max_ops=18):
    with single_thread():  # tiny tensors: one intra-op thread is much faster
        return _draw_case(draw, max_ops)


def _draw_case(draw, max_ops):
    seed = _int(draw, 0, 2**31 - 1)
    b = _Builder(draw, seed)
    b.root.register_parameter("scale", nn.Parameter(torch.tensor([0.5, -0.25])))
    b.root.register_buffer("offset", torch.tensor([0.1]))

    rank = _pick(draw, [2, 3, 3, 4, 4, 4, 5])
    channels = _pick(draw, [1, 2, 3, 4, 4])
    spatial = {2: (), 3: (_int(draw, 2, 5),), 4: (3, 3), 5: (2, 3, 2)}[rank]
    shape = (2, channels, *spatial) if rank > 2 else (2, _int(draw, 1, 5))
    x = torch.randn(shape, generator=b.gen)
    inputs = [x]
    ph = b.g.placeholder("x")
    ph.meta["pbt_val"] = x
    b.vals.append((ph, x))
    if _chance(draw, 20):  # a second input of the same shape
        y = torch.randn(shape, generator=b.gen)
        ph2 = b.g.placeholder("y")
        ph2.meta["pbt_val"] = y
        b.vals.append((ph2, y))
        inputs.append(y)

    for _ in range(_int(draw, 1, max_ops)):
        b.step()

    outs = [b.vals[-1][0]]
    for _ in range(_int(draw, 0, 2)):
        outs.append(b.value()[0])
    if b.shapes and _chance(draw, 30):
        outs.append(_pick(draw, b.shapes)[0])
    b.g.output(outs[0] if len(outs) == 1 else tuple(outs))
    for n in b.g.nodes:
        n.meta.pop("pbt_val", None)
    mode = _pick(draw, ["eval"] * 11 + ["qat"] * 8 + ["mixed"])
    for n in reversed(list(b.g.nodes)):  # dead code (every op generated here is pure)
        if not n.users and n.op not in ("placeholder", "output"):
            b.g.erase_node(n)
    b.g.lint()
    template = GraphModule(b.root, b.g)
    if _chance(draw, 5):
        template.double()
        inputs = [t.double() for t in inputs]
    if mode == "eval":
        template.eval()
        is_qat = False
    elif mode == "qat":
        template.train()
        is_qat = True
    else:
        for m in template.modules():
            m.training = _chance(draw, 50)
        is_qat = _chance(draw, 50)

    backend, factory, semantic, bnotes = _draw_backend(draw, template)
    semantic = semantic and not b.linear_rank3_bn
    notes = bnotes + (f"\naliases: {b.alias_of}" if b.alias_of else "")
    return Case(
        template, tuple(inputs), mode, is_qat, backend, factory, semantic, notes
    )


# --------------------------------------------------------------------------------------
# backend configs


def _fwd_chain_fuser(_is_qat, *mods):
    """Fuser for a forward-format chain pattern: arguments in forward order."""
    return Chain(list(mods))


def _flatten_reversed(p, out):
    if isinstance(p, tuple):
        head, *args = p
        for a in args:
            _flatten_reversed(a, out)
        _flatten_reversed(head, out)
    elif p is not MatchAllNode:
        out.append(p)
    return out


def _rev_chain_fuser(_is_qat, *mods):
    """Fuser for a complex-format (reversed nested) pattern."""
    return Chain(_flatten_reversed(tuple(mods), []))


def _raising_fuser(_is_qat, *_mods):
    raise NotImplementedError("pbt: this fuser refuses")


def _last_node_root_getter(node_pattern):
    """A root-node getter returning the pattern's last node (not the default innermost)."""
    while isinstance(node_pattern, (tuple, list)):
        node_pattern = node_pattern[0]
    return node_pattern


# forward-format chain fusers from torch, keyed by the module types they accept
def _intrinsic_fusers():
    out = {
        (nn.Conv1d, nn.ReLU): lambda _is_qat, c, r: nni.ConvReLU1d(c, r),
        (nn.Conv2d, nn.ReLU): lambda _is_qat, c, r: nni.ConvReLU2d(c, r),
        (nn.Conv3d, nn.ReLU): lambda _is_qat, c, r: nni.ConvReLU3d(c, r),
        (nn.Linear, nn.ReLU): lambda _is_qat, lin, r: nni.LinearReLU(lin, r),
        (nn.BatchNorm2d, nn.ReLU): lambda _is_qat, b, r: nni.BNReLU2d(b, r),
        (nn.BatchNorm3d, nn.ReLU): lambda _is_qat, b, r: nni.BNReLU3d(b, r),
        (nn.Linear, nn.BatchNorm1d): fuse_linear_bn,
    }
    for d in (1, 2, 3):
        out[(CONV[d], BN[d + 1])] = fuse_conv_bn
        out[(CONV[d], BN[d + 1], nn.ReLU)] = fuse_conv_bn_relu
        out[(CONVT[d], BN[d + 1])] = fuse_convtranspose_bn
    return out


INTRINSIC = _intrinsic_fusers()

_CHAIN_HEADS = [
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.Sigmoid,
    nn.Identity,
    nn.LeakyReLU,
]
_CHAIN_TAILS = [
    nn.ReLU,
    nn.ReLU,
    F.relu,
    F.relu,
    torch.relu,
    "relu",
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.Sigmoid,
    nn.Tanh,
    nn.Identity,
    nn.Dropout,
    nn.LeakyReLU,
]
_ANY = [
    nn.Conv2d,
    nn.Conv1d,
    nn.Linear,
    nn.BatchNorm2d,
    nn.BatchNorm1d,
    nn.ReLU,
    F.relu,
    torch.relu,
    "relu",
    operator.add,
    torch.add,
    "add",
    nn.Sigmoid,
    nn.Identity,
]


def _gen_nested(draw, depth=0):
    """A random reversed nested pattern (multi-arg, MatchAllNode, literals)."""
    r = _int(draw, 0, 99)
    if depth and r < 20:
        return MatchAllNode
    if depth and r < 23:
        return _pick(draw, [1, 0.5, 2])  # a literal entry
    head = _pick(draw, _ANY)
    if not depth and _chance(draw, 10):
        head = MatchAllNode  # "headless": the match's last node is not part of it
    if depth >= 2 or _chance(draw, 25):
        return head if depth or _chance(draw, 50) else (head,)
    n = 2 if head in (operator.add, torch.add, "add") else 1
    if _chance(draw, 10):
        n = _int(draw, 0, 3)
    return (head, *(_gen_nested(draw, depth + 1) for _ in range(n)))


_BASE_CACHE: dict = {}


def _base_fusion_configs(name):
    if name not in _BASE_CACHE:
        _BASE_CACHE[name] = [
            c for c in BACKENDS[name]().configs if c.fuser_method is not None
        ]
    return _BASE_CACHE[name]


def _build_custom(specs):
    bc = BackendConfig("pbt_custom")
    getters = {}
    for spec in specs:
        if spec[0] == "getter":
            getters[spec[1]] = spec[2]
    for spec in specs:
        kind = spec[0]
        if kind == "base":
            bc.set_backend_pattern_config(_base_fusion_configs(spec[1])[spec[2]])
            continue
        if kind == "getter":
            continue
        _, pat, fuser = spec
        c = BackendPatternConfig()
        if kind == "fwd":
            c.set_pattern(pat)
            f = INTRINSIC[pat] if fuser == "intrinsic" else _fwd_chain_fuser
        else:
            c._set_pattern_complex_format(pat)
            f = _rev_chain_fuser if fuser == "chain" else _raising_fuser
        c.set_fuser_method(f)
        if getters.get(pat) == "last_node_root" and kind == "rev":
            c._set_root_node_getter(_last_node_root_getter)
        bc.set_backend_pattern_config(c)
    return bc


def _draw_backend(draw, gm):
    if _chance(draw, 65):
        name = _pick(
            draw,
            [
                "native",
                "native",
                "fbgemm",
                "qnnpack",
                "x86",
                "onednn",
                "onednn",
                "tensorrt",
                "executorch",
            ],
        )
        return name, BACKENDS[name], True, ""
    specs, semantic = _draw_custom_spec(draw, gm)
    return (
        "custom",
        lambda: _build_custom(specs),
        semantic,
        "custom backend specs:\n  " + "\n  ".join(_fmt_spec(s) for s in specs),
    )


def _entry(node, modules):
    """The pattern entry matching ``node`` (None for placeholders / get_attr)."""
    if node.op == "call_module":
        return parametrize.type_before_parametrizations(modules[node.target])
    if node.op in ("call_function", "call_method"):
        return node.target
    return None


def _derive_pattern(draw, node, modules, depth=0):
    """A reversed nested pattern read off the graph at ``node`` (so that it matches
    there, unless perturbed): arguments followed to a random depth, some replaced by
    MatchAllNode. Returns (pattern, is_single_input_chain)."""
    head = _entry(node, modules)
    if head is None or (depth and _chance(draw, 15)):
        return MatchAllNode, False
    if head is getattr:
        return (getattr, node.args[1]), False
    stop = depth >= 3 or not node.args or _chance(draw, 30 if depth else 15)
    if (
        stop
        and node.op != "call_module"
        and depth < 3
        and node.args
        and _chance(draw, 80)
    ):
        stop = False  # reach a module: the default root node is the innermost entry
    if stop:
        return (head if depth or _chance(draw, 60) else (head,)), True
    subs, chain = [], len(node.args) == 1
    for a in node.args:
        if isinstance(a, Node) and len(a.users) > 1 and _chance(draw, 85):
            p, chain = MatchAllNode, False  # an inner node must have one user to match
        elif isinstance(a, Node):
            p, c = _derive_pattern(draw, a, modules, depth + 1)
            chain = chain and c
        else:
            p, chain = (a if _chance(draw, 50) else MatchAllNode), False
        subs.append(p)
    return (head, *subs), chain


def _grow_pattern(draw, node, modules):
    """A reversed nested pattern grown forward from the call_module ``node`` through
    single-user nodes (so that ``node`` is the default root). Returns
    (pattern, is_single_input_chain)."""
    p, cur, chain = _entry(node, modules), node, True
    for _ in range(_int(draw, 0, 3)):
        if len(cur.users) != 1:
            break
        (user,) = cur.users
        head = _entry(user, modules)
        if head is None or head is getattr or cur not in user.args:
            break
        subs = []
        for a in user.args:
            if a is cur:
                subs.append(p)
            elif isinstance(a, Node):
                leaf = _entry(a, modules)
                use_leaf = (
                    leaf is not None and leaf is not getattr and len(a.users) == 1
                )
                subs.append(leaf if use_leaf and _chance(draw, 30) else MatchAllNode)
            else:
                subs.append(a if _chance(draw, 50) else MatchAllNode)
        chain = chain and len(subs) == 1
        p, cur = (head, *subs), user
    if not isinstance(p, tuple) and _chance(draw, 30):
        p = (p,)
    return p, chain


def _draw_custom_spec(draw, gm):
    """A list of pattern-config specs (plain data, so each run rebuilds fresh configs)."""
    specs = []
    semantic = True
    base = _pick(draw, [None, None, "native", "onednn", "x86", "tensorrt"])
    if base is not None:
        n_base = len(_base_fusion_configs(base))
        idx = [_int(draw, 0, n_base - 1) for _ in range(_int(draw, 0, 12))]
        specs += [("base", base, i) for i in idx]
    modules = dict(gm.named_modules(remove_duplicate=False))
    calls = [
        n
        for n in gm.graph.nodes
        if n.op in ("call_module", "call_function", "call_method")
    ]
    for i in range(_int(draw, 1, 4)):
        k = 0 if i == 0 else _int(draw, 0, 99)
        if k < 55 and calls:  # read off the model
            module_calls = [n for n in calls if n.op == "call_module"]
            if module_calls and _chance(draw, 65):
                p, chain = _grow_pattern(draw, _pick(draw, module_calls), modules)
            else:
                p, chain = _derive_pattern(draw, _pick(draw, calls), modules)
            if p is MatchAllNode:
                continue
            fuser = "chain" if chain or _chance(draw, 80) else "raise"
            semantic = semantic and chain
            specs.append(("rev", p, fuser))
        elif k < 72:  # forward-format chain of 2 or 3
            length = _pick(draw, [2, 2, 3])
            pat = (
                _pick(draw, _CHAIN_HEADS),
                *(_pick(draw, _CHAIN_TAILS) for _ in range(length - 1)),
            )
            fuser = "intrinsic" if pat in INTRINSIC and _chance(draw, 60) else "chain"
            specs.append(("fwd", pat, fuser))
        elif k < 85:  # complex-format chain of 1 to 4
            p = _pick(draw, _CHAIN_HEADS)
            for _ in range(_int(draw, 0, 3)):
                p = (_pick(draw, _CHAIN_TAILS), p)
            if not isinstance(p, tuple) and _chance(draw, 30):
                p = (p,)
            specs.append(("rev", p, "chain"))
        else:  # nested, multi-arg, MatchAllNode, literals
            p = _gen_nested(draw)
            fuser = _pick(draw, ["chain", "chain", "raise"])
            specs.append(("rev", p, fuser))
            semantic = False
        if _chance(draw, 4):
            specs.append(("getter", specs[-1][1], "last_node_root"))
            semantic = False
    # order matters for ties in the priority sort
    for i in range(len(specs) - 1, 0, -1):
        j = _int(draw, 0, i)
        specs[i], specs[j] = specs[j], specs[i]
    return specs, semantic


def _fmt(x):
    if isinstance(x, tuple):
        return "(" + ", ".join(_fmt(i) for i in x) + ("," if len(x) == 1 else "") + ")"
    if x is MatchAllNode:
        return "MatchAllNode"
    if isinstance(x, type):
        return x.__name__
    if callable(x):
        return (
            f"{getattr(x, '__module__', '') or ''}.{getattr(x, '__name__', x)}".lstrip(
                "."
            )
        )
    return repr(x)


def _fmt_spec(s):
    if s[0] == "base":
        c = _base_fusion_configs(s[1])[s[2]]
        return f"base {s[1]}[{s[2]}]: {_fmt(c._pattern_complex_format or c.pattern)}"
    return f"{s[0]} {_fmt(s[1])} fuser={s[2]}"
