"""Benchmark inputs of the FX flow and the fusion calls measured on them.

A :class:`Case` names one input (a synthetic workload of
:mod:`~pyfuse.bench.workloads` or a real-width model of
:mod:`~pyfuse.bench.realwidth`) and builds a fresh one per call, because fusion
consumes its input. :func:`fuse_fn` is the call of each side.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx import GraphModule

from . import realwidth
from . import workloads as W

__all__ = ["SIDES", "Built", "Case", "fuse_fn", "warm_up"]

#: the fusion calls measured: the reference, pyfuse (eager), pyfuse lazy
SIDES = ("ref", "pyfuse", "lazy")


@dataclass(frozen=True)
class Case:
    """One benchmark input: a synthetic workload (``kind`` resnet / mixed /
    onednn / huge, ``n`` blocks) or a real-width model (``kind`` real,
    ``model`` a name of :data:`pyfuse.bench.realwidth.MODELS`)."""

    kind: str
    n: int = 0
    model: str = ""
    qat: bool = False

    @property
    def label(self) -> str:
        if self.kind == "real":
            return self.model
        return self._workload().label

    def _workload(self) -> W.Workload:
        return W.make_workload(self.kind, self.n, qat=self.qat)

    def to_json(self) -> str:
        return json.dumps(
            {"kind": self.kind, "n": self.n, "model": self.model, "qat": self.qat}
        )

    @classmethod
    def from_json(cls, text: str) -> Case:
        d = json.loads(text)
        return cls(kind=d["kind"], n=d["n"], model=d["model"], qat=d["qat"])

    def build(self) -> Built:
        """A new input for one fusion call (traced model or built workload)."""
        if self.kind == "real":
            model = realwidth.build_model(self.model, train=self.qat)
            gm = torch.fx.symbolic_trace(model)
            return Built(gm, _native_config(), None, None)
        wl = self._workload()
        return Built(
            wl.fresh(),
            wl.backend_config(),
            wl.expected_fusions,
            wl.expected_nodes_after,
        )


@dataclass
class Built:
    """A built input and what fusing it must give (``None``: compare with the
    reference only)."""

    gm: GraphModule
    backend_config: Any
    expected_fusions: int | None
    expected_nodes_after: int | None


def _native_config() -> Any:
    import torch.ao.quantization.backend_config.utils  # noqa: F401 (the getter needs it)
    from torch.ao.quantization.backend_config import get_native_backend_config

    return get_native_backend_config()


def fuse_fn(side: str) -> Callable[..., GraphModule]:
    if side == "ref":
        from torch.ao.quantization.fx.fuse import fuse

        return fuse
    import pyfuse

    fn: Callable[..., GraphModule] = pyfuse.fuse
    if side == "lazy":

        def lazy(*args: Any) -> GraphModule:
            return fn(*args, lazy=True)

        return lazy
    return fn


def warm_up(case: Case, side: str) -> None:
    """One untimed call of ``side`` on a one-block workload with the same backend
    and mode as ``case``: pays the process's first-use costs (torch kernels,
    pattern compilation, caches) outside the measurement."""
    kind = "onednn" if case.kind == "onednn" else "resnet"
    small = Case(kind, 1, qat=case.qat).build()
    fuse_fn(side)(small.gm, case.qat, None, small.backend_config)
