"""Random exportable models for the export-flow fuzzer, and the oracle.

A spec is a chain of producer calls (conv / conv with padding="same" /
conv-transpose of one dimensionality, then a linear head), each optionally
followed by a BatchNorm. Modules may be called more than once (shared weights),
BatchNorm modules may be shared, a producer's output may also be added back or
returned (multi-reader), its weight may be read elsewhere, BatchNorms may be
affine-less, stat-less or in training mode, and the BatchNorm op may be rewritten
into the ``_native_batch_norm_legit_no_training`` + getitem form.

The oracle decides from the spec alone, independently of pyfuse's code, which
BatchNorm calls fold and whether torchao's fold is right for the whole model.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from torch import nn
from torch.fx import GraphModule

aten = torch.ops.aten
C = 4  # channels everywhere
S = 5  # spatial size
L = 3  # features of the 3-D linear input


@dataclass(frozen=True)
class BnSpec:
    affine: bool
    stats: bool  # track_running_stats
    train: bool


@dataclass(frozen=True)
class ProdSpec:
    kind: str  # "conv", "same", "transpose", "linear", "linear3d"
    bias: bool
    groups: int


@dataclass(frozen=True)
class Step:
    prod: int
    bn: int | None
    extra: str | None  # None, "add" (output also added), "out" (also returned), "wsum"
    act: bool


@dataclass(frozen=True)
class Spec:
    dim: int
    dtype: torch.dtype
    prods: tuple[ProdSpec, ...]
    bns: tuple[BnSpec, ...]
    steps: tuple[Step, ...]  # conv steps, then linear steps
    native: bool
    seed: int


# ---------------------------------------------------------------------------
# Generation


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    dim = draw(st.integers(1, 3))
    # about half the models avoid every torchao defect, so the exact contract is
    # exercised as often as the defects
    clean = draw(st.booleans())
    dtype = draw(
        st.sampled_from([torch.float32, torch.float32, torch.float64, torch.bfloat16])
    )
    prods: list[ProdSpec] = []
    bns: list[BnSpec] = []
    steps: list[Step] = []

    def bn_for(shared_from: list[int]) -> int | None:
        choice = draw(st.sampled_from(["none", "new", "new", "new", "shared"]))
        if choice == "none":
            return None
        if choice == "shared" and shared_from:
            return draw(st.sampled_from(shared_from))
        bns.append(
            BnSpec(
                affine=clean or draw(st.booleans() | st.just(True)),
                stats=clean or draw(st.integers(0, 9)) > 0,
                train=not clean and draw(st.integers(0, 9)) == 0,
            )
        )
        return len(bns) - 1

    def extra() -> str | None:
        if clean:
            return None
        return draw(st.sampled_from([None, None, None, None, "add", "out", "wsum"]))

    conv_bns: list[int] = []
    for _ in range(draw(st.integers(1, 5))):
        reuse = [
            i for i, p in enumerate(prods) if p.kind in ("conv", "same", "transpose")
        ]
        if reuse and draw(st.integers(0, 3)) == 0:
            p = draw(st.sampled_from(reuse))
        else:
            kind = draw(st.sampled_from(["conv", "conv", "same", "transpose"]))
            groups = (
                1 if clean and kind == "transpose" else draw(st.sampled_from([1, 1, 2]))
            )
            prods.append(ProdSpec(kind, draw(st.booleans()), groups))
            p = len(prods) - 1
        b = bn_for(conv_bns)
        if clean:  # a weight read twice stays clean under one BN, with a bias
            before = [t for t in steps if t.prod == p]
            if before:
                b = before[0].bn
                prods[p] = ProdSpec(prods[p].kind, True, prods[p].groups)
        if b is not None:
            conv_bns.append(b)
        steps.append(Step(p, b, extra(), draw(st.booleans())))
    lin3d = draw(st.integers(0, 5)) == 0
    lin_bns: list[int] = []
    for _ in range(draw(st.integers(0, 3))):
        reuse = [i for i, p in enumerate(prods) if p.kind.startswith("linear")]
        if reuse and draw(st.integers(0, 3)) == 0:
            p = draw(st.sampled_from(reuse))
        else:
            prods.append(
                ProdSpec("linear3d" if lin3d else "linear", draw(st.booleans()), 1)
            )
            p = len(prods) - 1
        b = bn_for(lin_bns)
        if clean:
            before = [t for t in steps if t.prod == p]
            if before:
                b = before[0].bn
                prods[p] = ProdSpec(prods[p].kind, True, 1)
        if b is not None:
            lin_bns.append(b)
        steps.append(Step(p, b, extra(), draw(st.booleans())))
    return Spec(
        dim,
        dtype,
        tuple(prods),
        tuple(bns),
        tuple(steps),
        draw(st.booleans()),
        draw(st.integers(0, 2**16)),
    )


# ---------------------------------------------------------------------------
# Models


def _bn_class(dim: int) -> type[nn.Module]:
    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[dim - 1]


class FuzzNet(nn.Module):
    def __init__(self, spec: Spec) -> None:
        super().__init__()
        self.spec = spec
        g = torch.Generator().manual_seed(spec.seed)
        torch.manual_seed(spec.seed)
        d = spec.dim
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[d - 1]
        convt = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[d - 1]
        prods: list[nn.Module] = []
        for p in spec.prods:
            if p.kind == "conv":
                prods.append(conv(C, C, 3, padding=1, bias=p.bias, groups=p.groups))
            elif p.kind == "same":
                prods.append(
                    conv(C, C, 3, padding="same", bias=p.bias, groups=p.groups)
                )
            elif p.kind == "transpose":
                prods.append(convt(C, C, 3, padding=1, bias=p.bias, groups=p.groups))
            else:
                n = L if p.kind == "linear3d" else C
                prods.append(nn.Linear(n, n, bias=p.bias))
        self.prods = nn.ModuleList(prods)
        conv_bn = {
            s.bn
            for s in spec.steps
            if s.bn is not None and not spec.prods[s.prod].kind.startswith("linear")
        }
        bns: list[nn.Module] = []
        for i, b in enumerate(spec.bns):
            cls = _bn_class(d) if i in conv_bn else nn.BatchNorm1d
            m = cls(C, affine=b.affine, track_running_stats=b.stats)
            with torch.no_grad():
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.rand(C, generator=g) * 2 - 1)
                    m.running_var.copy_(torch.rand(C, generator=g) * 2 + 0.3)
                if b.affine:
                    m.weight.copy_(torch.rand(C, generator=g) * 1.5 + 0.5)
                    m.bias.copy_(torch.rand(C, generator=g) * 2 - 1)
            bns.append(m)
        self.bns = nn.ModuleList(bns)
        self.to(spec.dtype)
        self.eval()
        for i, b in enumerate(spec.bns):
            if b.train:
                self.bns[i].train()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs: list[torch.Tensor] = []
        head = False
        for step in self.spec.steps:
            kind = self.spec.prods[step.prod].kind
            if kind.startswith("linear") and not head:
                head = True
                x = (
                    x.flatten(2)[..., :L]
                    if kind == "linear3d"
                    else x.flatten(2).mean(-1)
                )
            prod = self.prods[step.prod]
            y = prod(x)
            if step.extra == "out":
                outs.append(y)
            z = self.bns[step.bn](y) if step.bn is not None else y
            if step.extra == "add":
                z = z + y
            elif step.extra == "wsum":
                outs.append(prod.weight * 2)  # the weight read by another op
            if step.act:
                outs.append(
                    z
                )  # the pre-activation too: a ReLU cannot hide a wrong fold
            x = torch.relu(z) if step.act else z
            outs.append(x)  # every step observable: a later BN cannot hide a wrong fold
        return tuple(outs)


def example_input(spec: Spec) -> torch.Tensor:
    """16 samples: enough that no ReLU zeroes every value a wrong fold changes."""
    g = torch.Generator().manual_seed(spec.seed + 1)
    return torch.randn((16, C) + (S,) * spec.dim, generator=g).to(spec.dtype)


def to_native(gm: GraphModule) -> GraphModule:
    """batch_norm.default (inference) -> _native_batch_norm_legit_no_training + getitem 0."""
    g = gm.graph
    changed = False
    for n in list(g.nodes):
        if n.target is aten.batch_norm.default and n.args[5] is False:
            x, w, b, rm, rv, _training, momentum, eps, _cudnn = n.args
            with g.inserting_before(n):
                native = g.call_function(
                    aten._native_batch_norm_legit_no_training.default,
                    (x, w, b, rm, rv, momentum, eps),
                )
                first = g.call_function(operator.getitem, (native, 0))
            first.meta = dict(n.meta)
            n.replace_all_uses_with(first)
            g.erase_node(n)
            changed = True
    if changed:
        gm.recompile()
    return gm


# ---------------------------------------------------------------------------
# Oracle


def _is_linear(p: ProdSpec) -> bool:
    return p.kind.startswith("linear")


@dataclass(frozen=True)
class Expected:
    folds: frozenset[int]  # indices of the steps whose BatchNorm folds
    bn_steps: int  # steps with a BatchNorm
    torchao_defects: frozenset[str]  # why torchao's fold is wrong for this model

    @property
    def torchao_right(self) -> bool:
        return not self.torchao_defects


def expected(spec: Spec, *, fold_training: bool = False) -> Expected:
    """What a correct fold does with `spec`, and whether torchao's is correct.

    `fold_training`: training-mode BatchNorms fold with their running statistics
    (the pt2e folds, as torchao's), and are judged against the model with those
    BatchNorms in eval mode.
    """
    steps = spec.steps

    bn_calls = Counter(s.bn for s in steps)

    def site_ok(s: Step) -> bool:
        if s.bn is None:
            return False
        b = spec.bns[s.bn]
        return (
            b.stats
            and (not b.train or (fold_training and bn_calls[s.bn] == 1))
            and s.extra not in ("add", "out")
            and spec.prods[s.prod].kind != "linear3d"
        )

    folds: set[int] = set()
    for i, s in enumerate(steps):
        same = [t for t in steps if t.prod == s.prod]
        if site_ok(s) and all(
            site_ok(t) and t.bn == s.bn and t.extra != "wsum" for t in same
        ):
            folds.add(i)
    # torchao: folds every BatchNorm after a producer (not a 3-D linear input),
    # with running stats or crashing without; later folds of one weight only
    # drop the BatchNorm (zeroing a bias-less producer's bias).
    defects: set[str] = set()
    folded_prods: dict[int, int | None] = {}
    for s in steps:
        p = spec.prods[s.prod]
        if s.bn is None or p.kind == "linear3d":
            continue
        b = spec.bns[s.bn]
        if not b.stats:
            defects.add("bn without running stats (torchao raises)")
        elif b.train and (not fold_training or bn_calls[s.bn] > 1):
            defects.add("training-mode bn folded")
        if s.extra in ("add", "out"):
            defects.add("producer output read elsewhere")
        if p.kind == "transpose" and p.groups != 1:
            defects.add("grouped conv_transpose (torchao raises)")
        if _is_linear(p) and not b.affine:
            defects.add("linear + affine-less bn (torchao raises)")
        if s.prod in folded_prods:
            if folded_prods[s.prod] != s.bn:
                defects.add("weight shared by producers with different bns")
            elif not p.bias:
                defects.add("bias-less weight shared under one bn (bias zeroed)")
        folded_prods.setdefault(s.prod, s.bn)
    for s in steps:
        if s.prod in folded_prods:
            if s.bn is None:
                defects.add("weight also read by a producer without bn")
            if s.extra == "wsum":
                defects.add("weight also read by another op")
    return Expected(
        frozenset(folds), sum(s.bn is not None for s in steps), frozenset(defects)
    )
