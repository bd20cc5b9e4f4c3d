"""The export flow's tables of ``pyfuse bench --flow pt2e``.

Two tables, both measured in this one process (each side warmed up on a small
graph first, no extra copies of the model kept alive), sides interleaved (the
order rotates per repeat), ``gc.collect()`` before every timed call, medians of
``--repeats`` of wall and process CPU time, and the load average around each
table (:mod:`~pyfuse.bench.load`):

* **fold**: torchao's ``_fuse_conv_bn_`` + ``_fuse_linear_bn_`` against
  :func:`pyfuse.pt2e.fuse_conv_bn_` + :func:`pyfuse.pt2e.fuse_linear_bn_` on the
  ResNet-like aten graphs of :mod:`~pyfuse.bench.export_workloads`. torchao's
  folds are quadratic in the graph (about 600 s at 42k nodes), so above
  ``--torchao-max-nodes`` pyfuse runs alone.
* **prepare**: ``prepare_pt2e`` with torchao's ``X86InductorQuantizer`` end to
  end on the exported network, with and without
  :func:`pyfuse.pt2e.patched_torchao`.

Every output is checked before any number is reported: no BatchNorm left and
the expected number of folds, every folded weight and bias bit-identical to
torch's ``fuse_conv_bn_weights`` of its pair, outputs close to the unfolded
graph's (where they do not overflow), and where
torchao ran, the same code, state_dict (bits) and module tree as torchao's
(:func:`~pyfuse.bench.digests.digest`). A table with a wrong result prints the
errors instead of its numbers, and the run exits with status 1.
"""

from __future__ import annotations

import contextlib
import gc
import io
import operator
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.fx import GraphModule

from . import load as L
from .digests import compare_digests, digest
from .export_tables import ExportRow, ExportTable
from .export_workloads import NODES_PER_BLOCK, ResNetLike, resnet_like
from .samples import Sample, rotations

__all__ = [
    "E2E_SIZES",
    "FOLD_SIZES",
    "TORCHAO_MAX_NODES",
    "MissingTorchao",
    "fold_row",
    "prepare_row",
    "require_torchao",
    "run_export_tables",
]

FOLD_SIZES = (1000, 2000, 10000, 42000, 100000, 200000)
E2E_SIZES = (1000, 4000)
#: torchao's folds above this many nodes take minutes (quadratic)
TORCHAO_MAX_NODES = 11000
#: prepare_pt2e's exported graph has about this many nodes per residual block
E2E_NODES_PER_BLOCK = 21


class MissingTorchao(RuntimeError):
    """torchao (the optional ``pt2e`` extra) is not installed."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torchao's import-time and per-call warnings and prints, silenced."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def require_torchao() -> tuple[Any, Any]:
    """torchao's pt2e ``utils`` and ``quantize_pt2e`` modules, or
    :class:`MissingTorchao` naming the extra to install."""
    try:
        with _quiet():
            from torchao.quantization.pt2e import (  # type: ignore[import-untyped]
                quantize_pt2e,
                utils,
            )
    except ImportError as e:
        raise MissingTorchao(
            "pyfuse bench --flow pt2e compares with torchao, which is not installed "
            f"({e}): pip install pyfuse[pt2e]"
        ) from None
    return utils, quantize_pt2e


# rows and tables


# ---------------------------------------------------------------------------
# timing and checks


def _timed(fn: Callable[[Any], Any], arg: Any) -> tuple[Sample, Any]:
    """One call of ``fn(arg)``: wall and process CPU time. (No peak memory: in
    one process the allocator reuses what earlier calls freed, which the
    resident-set probe cannot see; the FX flow's fresh processes can.)"""
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(arg)
    w1, c1 = time.perf_counter(), time.process_time()
    return Sample(w1 - w0, c1 - c0), out


def _count_bn(gm: GraphModule) -> int:
    bn = (
        torch.ops.aten.batch_norm.default,
        torch.ops.aten._native_batch_norm_legit_no_training.default,
    )
    return sum(n.target in bn for n in gm.graph.nodes)


def _forward(gm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = gm(x)
    return out


def _input() -> torch.Tensor:
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))


def _fold_fns() -> dict[str, Callable[[GraphModule], int]]:
    """Each side's fold of a graph in place; returns the number of folds."""
    from pyfuse import pt2e

    utils, _ = require_torchao()

    def ao(gm: GraphModule) -> int:
        before = _count_bn(gm)
        with _quiet():
            utils._fuse_conv_bn_(gm)
            utils._fuse_linear_bn_(gm)
        return before - _count_bn(gm)

    def ours(gm: GraphModule) -> int:
        return len(pt2e.fuse_conv_bn_(gm).fused) + len(pt2e.fuse_linear_bn_(gm).fused)

    return {"torchao": ao, "pyfuse": ours}


def _reference_folds(gm: GraphModule) -> dict[str, torch.Tensor]:
    """The folded conv weight and bias of every conv + batch_norm pair of the
    unfolded ``gm``, by attribute name, as torch's ``fuse_conv_bn_weights`` (which
    torchao's fold calls) computes them; both folds keep the conv's names."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    def attr(node: Any) -> Any:
        return operator.attrgetter(node.target)(gm)

    out: dict[str, torch.Tensor] = {}
    for conv in gm.graph.nodes:
        if conv.target is not torch.ops.aten.conv2d.default:
            continue
        (bn,) = conv.users
        w, b = conv.args[1], conv.args[2]
        _, gamma, beta, mean, var, _, _, eps, _ = bn.args
        fw, fb = fuse_conv_bn_weights(
            attr(w), attr(b), attr(mean), attr(var), eps, attr(gamma), attr(beta)
        )
        out[w.target], out[b.target] = fw.detach(), fb.detach()
    return out


def _pair_errors(
    side: str, gm: GraphModule, expected: dict[str, torch.Tensor]
) -> list[str]:
    """Errors for every folded tensor of ``gm`` that is not bit-identical to
    torch's fold of the same pair (depth-independent, unlike the output check)."""
    wrong = []
    for name, want in expected.items():
        try:
            got = operator.attrgetter(name)(gm)
        except AttributeError:
            wrong.append(name)
            continue
        if not torch.equal(got, want):
            wrong.append(name)
    if not wrong:
        return []
    return [
        f"{side}: {len(wrong)} folded tensors differ from torch's fold ({wrong[0]}, ...)"
    ]


def fold_row(
    nodes: int,
    repeats: int,
    *,
    with_torchao: bool,
    log: Callable[[str], None] = lambda _m: None,
) -> ExportRow:
    """One graph size of the fold table (sides interleaved, checked)."""
    fns = _fold_fns()
    sides = ["torchao", "pyfuse"] if with_torchao else ["pyfuse"]
    probe = resnet_like(nodes)
    blocks = max(1, nodes // NODES_PER_BLOCK)
    row = ExportRow(f"resnet-like {len(probe.graph.nodes):,}", len(probe.graph.nodes))
    expected = 2 * blocks
    x = _input()
    unfolded = _forward(probe, x)
    finite = bool(torch.isfinite(unfolded).all())
    scale = 1.0 + float(unfolded.abs().max()) if finite else 1.0
    if not finite:
        row.notes.append(
            "the deepest graphs' outputs overflow float32: their output check is "
            "skipped (every pair is still checked against torch's fold)"
        )
    expected_pairs = _reference_folds(probe)
    del probe
    digests: dict[str, dict[str, Any]] = {}
    failed: set[str] = set()
    for rep, order in rotations(repeats, sides):
        for side in order:
            if side in failed:
                continue
            gm = resnet_like(nodes)
            try:
                sample, folds = _timed(fns[side], gm)
            except Exception as e:  # noqa: BLE001 (a crash is a result: report it)
                row.errors.append(f"{side}: raised {type(e).__name__}: {e}")
                failed.add(side)
                continue
            row.add(side, sample)
            log(f"  {side:7s} repeat {rep + 1}: {sample.wall:.4f} s")
            if folds != expected:
                row.errors.append(f"{side}: {folds} folds, expected {expected}")
            if _count_bn(gm):
                row.errors.append(f"{side}: {_count_bn(gm)} BatchNorms left")
            row.errors += _pair_errors(side, gm, expected_pairs)
            if side not in digests:
                diff = float((_forward(gm, x) - unfolded).abs().max()) / scale
                if finite and not diff < 1e-4:
                    row.errors.append(
                        f"{side}: output differs from the unfolded graph's "
                        f"(max relative difference {diff:.3g})"
                    )
                digests[side] = digest(gm)
            else:
                row.errors += compare_digests(
                    f"{side} (repeat)", digests[side], digest(gm)
                )
            del gm
    row.folds = expected
    if "torchao" in digests and "pyfuse" in digests:
        row.errors += compare_digests("pyfuse", digests["torchao"], digests["pyfuse"])
    elif not with_torchao:
        row.notes.append(
            "torchao not run above --torchao-max-nodes: checked pair by pair against "
            "torch's fold, against the unfolded graph's output and by the fold count"
        )
    row.errors = sorted(set(row.errors))
    return row


def prepare_row(
    nodes: int,
    repeats: int,
    *,
    log: Callable[[str], None] = lambda _m: None,
) -> ExportRow:
    """``prepare_pt2e`` on an exported ResNetLike of about ``nodes`` nodes, with
    torchao's folds and with pyfuse's (sides interleaved, checked)."""
    from pyfuse import pt2e

    _, quantize_pt2e = require_torchao()
    with _quiet():
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (  # type: ignore[import-untyped]
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )

    model = ResNetLike(max(1, nodes // E2E_NODES_PER_BLOCK)).eval()
    ep = torch.export.export(model, (torch.randn(1, 4, 8, 8),))
    del model

    def prepare(gm: GraphModule) -> GraphModule:
        quantizer = X86InductorQuantizer().set_global(
            get_default_x86_inductor_quantization_config()
        )
        with _quiet():
            out: GraphModule = quantize_pt2e.prepare_pt2e(gm, quantizer)
        return out

    row = ExportRow("", len(ep.module().graph.nodes))
    row.label = f"resnet-like {row.nodes:,}"
    digests: dict[str, dict[str, Any]] = {}
    for rep, order in rotations(repeats, ["torchao", "pyfuse"]):
        for side in order:
            gm = ep.module()
            patch = (
                pt2e.patched_torchao() if side == "pyfuse" else contextlib.nullcontext()
            )
            try:
                with patch:
                    sample, out = _timed(prepare, gm)
            except Exception as e:  # noqa: BLE001 (a crash is a result: report it)
                row.errors.append(f"{side}: raised {type(e).__name__}: {e}")
                continue
            del gm
            row.add(side, sample)
            log(f"  {side:7s} repeat {rep + 1}: {sample.wall:.4f} s")
            d = digest(out)
            if side in digests:
                row.errors += compare_digests(f"{side} (repeat)", digests[side], d)
            else:
                digests[side] = d
            del out
    if "torchao" in digests and "pyfuse" in digests:
        row.errors += compare_digests("patched", digests["torchao"], digests["pyfuse"])
    row.errors = sorted(set(row.errors))
    return row


def warm_up() -> None:
    """Each side's first-use costs (imports, kernels, caches) paid untimed."""
    for fn in _fold_fns().values():
        fn(resnet_like(4 * NODES_PER_BLOCK))


# ---------------------------------------------------------------------------
# the tables


def run_export_tables(
    fold_sizes: Sequence[int],
    e2e_sizes: Sequence[int],
    *,
    repeats: int,
    torchao_max_nodes: int,
    threshold: float,
    settle: float,
    strict: bool,
    log: Callable[[str], None],
    emit: Callable[[ExportTable], None],
    tables: list[ExportTable],
) -> bool:
    """Measure the fold and prepare tables into ``tables``; ``False`` if
    ``--strict`` refused a table on a busy machine."""
    require_torchao()
    warm_up()
    cap = f"--torchao-max-nodes {torchao_max_nodes}"
    specs: list[tuple[str, str, Sequence[int], str]] = [
        (
            "BatchNorm folds on ResNet-like aten graphs (torchao vs pyfuse.pt2e)",
            "fold",
            fold_sizes,
            (
                f"pyfuse bench --flow pt2e --fold-sizes "
                f"{','.join(map(str, fold_sizes))} {cap} --e2e-sizes '' "
                f"--repeats {repeats}"
            ),
        ),
        (
            (
                "prepare_pt2e (X86InductorQuantizer) end to end, with and without "
                "pyfuse.pt2e.patched_torchao()"
            ),
            "prepare",
            e2e_sizes,
            (
                f"pyfuse bench --flow pt2e --fold-sizes '' --e2e-sizes "
                f"{','.join(map(str, e2e_sizes))} --repeats {repeats}"
            ),
        ),
    ]
    for title, kind, sizes, command in specs:
        if not sizes:
            continue
        log(f"== {title}")
        with L.LoadCheck(threshold, wait=settle, log=log) as load:
            if strict and load.busy:
                log(f"refused: {load.describe()}")
                return False
            rows = []
            for n in sizes:
                log(f"~{n} nodes")
                if kind == "fold":
                    rows.append(
                        fold_row(
                            n, repeats, with_torchao=n <= torchao_max_nodes, log=log
                        )
                    )
                else:
                    rows.append(prepare_row(n, repeats, log=log))
        table = ExportTable(title, kind, rows, load, repeats, command)
        if kind == "fold" and any(n > torchao_max_nodes for n in sizes):
            table.notes.append(
                f"torchao runs only up to {torchao_max_nodes:,} nodes ({cap}; its "
                "folds are quadratic, about 600 s at 42k nodes)"
            )
        tables.append(table)
        emit(table)
    return True
