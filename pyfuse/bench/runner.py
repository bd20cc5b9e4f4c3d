"""Measurement machinery of ``pyfuse bench``: cases, floors, and the two heap
conditions.

The reference's time depends on the live heap (CPython's full collections run
less often when more long-lived objects exist, and the reference allocates with
the collector on while pyfuse pauses it), so every figure is taken in a named
condition:

* **fresh**: a new Python process per side and call (:func:`measure_fresh`). The
  child (``python -m pyfuse.bench.runner CASE-JSON SIDE``) imports torch, the
  reference's module and pyfuse, builds or traces the model, collects garbage,
  times ONE fusion call (wall and process CPU time), reads its resident-set
  high-water mark, and reports JSON. This is the usual call: a process that
  traces a model and fuses it once, paying the first-use costs (torch kernels
  run for the first time, pattern compilation); ``warm`` moves those into an
  untimed call on a one-block workload first.
* **heap**: one process holding extra live copies of the model (two by default),
  which makes the reference's collections rarer (:func:`measure_heap`); every
  side is warmed up first.

Sides are interleaved in both (the order rotates per repeat) and every call
gets a freshly built input (fusion consumes it). ``gc.collect()`` runs before
every timed call on every side.

Floors: the **codegen floor** is ``recompile()`` of pyfuse's output GraphModule
(what generating and compiling its Python code alone costs); the **fold floor**
is torch's ``fuse_conv_bn_weights`` / ``fuse_linear_bn_weights`` over the
model's conv/linear + BatchNorm pairs, on the same tensors (eval only: QAT
fusion folds nothing). An exact pass cannot be faster than the codegen floor,
nor than the fold floor unless it folds faster than torch does one pair at a
time (pyfuse batches many small pairs). In the fresh condition they are timed
in one more process per repeat (fold first, then an untimed pyfuse call whose
output is recompiled), in the heap condition right after pyfuse's call.

Memory (fresh condition): the high-water mark is reset (``/proc/self/clear_refs``)
after the model is built, so ``peak - RSS before the call`` is what the call
needed at its peak over the traced model; the model's own RSS (after it was
built, over the process after imports) is reported beside it.

Correctness: every output is checked. In-process, pyfuse's ``.code`` and
``state_dict`` (keys, dtypes, shapes, bits) must equal the reference's; across
processes a digest of the same is compared. Synthetic workloads also check the
fusion and node counts. A wrong result is an error of the row, printed and
turned into a non-zero exit status by the harness.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from . import realwidth
from . import workloads as W

__all__ = [
    "SIDES",
    "Built",
    "Case",
    "Sample",
    "Samples",
    "codegen_floor",
    "digest",
    "fold_floor",
    "fold_pairs",
    "measure_fresh",
    "measure_heap",
    "run_child",
]

#: the fusion calls measured: the reference, pyfuse (eager), pyfuse lazy
SIDES = ("ref", "pyfuse", "lazy")

_MiB = 1024 * 1024


# ---------------------------------------------------------------------------
# cases


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


def _fuse_fn(side: str) -> Callable[..., GraphModule]:
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


# ---------------------------------------------------------------------------
# floors


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


# ---------------------------------------------------------------------------
# checks


def _tree(gm: GraphModule) -> str:
    """Module paths and type names (by name: FX makes a class per GraphModule)."""
    return "\n".join(
        f"{name}:{type(m).__module__}.{type(m).__qualname__}"
        for name, m in gm.named_modules()
    )


def digest(gm: GraphModule) -> dict[str, Any]:
    """What must be identical between the reference's and pyfuse's outputs:
    hashes of the code, of the state_dict (keys, dtypes, shapes and bits, in
    order) and of the module tree (paths and types), and the node count."""
    sd = hashlib.sha256()
    for k, v in gm.state_dict().items():
        t = v.detach().contiguous().reshape(-1)
        sd.update(f"{k}|{t.dtype}|{tuple(v.shape)}|".encode())
        sd.update(t.view(torch.uint8).numpy().data)
    return {
        "code": hashlib.sha256(gm.code.encode()).hexdigest(),
        "state_dict": sd.hexdigest(),
        "modules": hashlib.sha256(_tree(gm).encode()).hexdigest(),
        "nodes": len(gm.graph.nodes),
    }


def _count_errors(what: str, built: Built, n: int, nodes: int) -> list[str]:
    """Errors if the fusion or node count is not the expected one."""
    errors = []
    if built.expected_fusions is not None and n != built.expected_fusions:
        errors.append(f"{what}: {n} fusions, expected {built.expected_fusions}")
    if built.expected_nodes_after is not None and nodes != built.expected_nodes_after:
        errors.append(
            f"{what}: {nodes} nodes after fusion, expected {built.expected_nodes_after}"
        )
    return errors


def compare_digests(what: str, ref: dict[str, Any], mine: dict[str, Any]) -> list[str]:
    """Errors for every part of ``mine`` that differs from the reference's."""
    return [
        f"{what}: {part} differs from the reference's"
        for part in ("code", "state_dict", "modules", "nodes")
        if ref.get(part) != mine.get(part)
    ]


# ---------------------------------------------------------------------------
# memory


def _status_kib(field_name: str) -> int | None:
    try:
        with Path("/proc/self/status").open() as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """Current resident set size (Linux), else ``None``."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def reset_peak() -> bool:
    """Reset the resident-set high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_bytes() -> int:
    """Resident-set high-water mark: VmHWM, else ``ru_maxrss``."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":  # bytes there
            return int(kib)
    return kib * 1024


# ---------------------------------------------------------------------------
# samples


@dataclass
class Sample:
    """One timed call of one side."""

    wall: float
    cpu: float
    #: peak RSS over the RSS before the call (fresh condition only)
    peak_bytes: int | None = None
    #: the model's own RSS (fresh condition only)
    model_bytes: int | None = None
    codegen_floor: float | None = None
    fold_floor: float | None = None


@dataclass
class Samples:
    """Every sample of one case in one condition, and what went wrong."""

    case: Case
    condition: str
    nodes: int = 0
    fusions: int | None = None
    pairs: int = 0
    by_side: dict[str, list[Sample]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, side: str, s: Sample) -> None:
        self.by_side.setdefault(side, []).append(s)

    def median(self, side: str, attr: str) -> float | None:
        xs = [
            float(v)
            for s in self.by_side.get(side, [])
            if (v := getattr(s, attr)) is not None
        ]
        return statistics.median(xs) if xs else None


def _rotations(repeats: int, sides: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    k = len(sides)
    for rep in range(repeats):
        yield rep, [*sides[rep % k :], *sides[: rep % k]]


@contextlib.contextmanager
def _gc_mode(off: bool) -> Iterator[None]:
    was = gc.isenabled()
    if off:
        gc.disable()
    try:
        yield
    finally:
        if off and was:
            gc.enable()


def _timed_call(
    fn: Callable[..., GraphModule], built: Built, qat: bool, gc_off: bool
) -> tuple[float, float, GraphModule]:
    args = (built.gm, qat, None, built.backend_config)
    built.gm = None  # type: ignore[assignment]  # (the call consumes its input)
    gc.collect()
    with _gc_mode(gc_off):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args)
        w1, c1 = time.perf_counter(), time.process_time()
    return w1 - w0, c1 - c0, out


def warm_up(case: Case, side: str) -> None:
    """One untimed call of ``side`` on a one-block workload with the same backend
    and mode as ``case``: pays the process's first-use costs (torch kernels,
    pattern compilation, caches) outside the measurement."""
    kind = "onednn" if case.kind == "onednn" else "resnet"
    small = Case(kind, 1, qat=case.qat).build()
    _fuse_fn(side)(small.gm, case.qat, None, small.backend_config)


# ---------------------------------------------------------------------------
# the fresh-process condition


def _weak_snapshot(gm: GraphModule) -> dict[str, weakref.ref[nn.Module]]:
    """:func:`W.module_snapshot` through weak references: the check must not
    keep the input's modules alive (that would change the call's peak memory)."""
    return {k: weakref.ref(m) for k, m in W.module_snapshot(gm).items()}


def _count_fusions_weak(
    out: GraphModule, before: dict[str, weakref.ref[nn.Module]]
) -> int:
    alive = {k: m for k, r in before.items() if (m := r()) is not None}
    return W.count_fusions(out, alive)


def run_child(
    case: Case, side: str, gc_off: bool = False, warm: bool = False
) -> dict[str, Any]:
    """What a fresh child process does (JSON-able result).

    ``side`` ``ref`` / ``pyfuse`` / ``lazy``: build, time one call, read the peak
    RSS, check. ``floors``: build, time the fold floor on its pairs, fuse with
    pyfuse (untimed), time ``recompile()`` of the output. ``warm``: first one
    :func:`warm_up` call (by default the timed call is the process's first)."""
    # Every side's process has the reference's module loaded before the timed
    # call, as a program that used the reference has: pyfuse's first call would
    # otherwise pay for importing torch.ao.quantization.fx (~30 ms), which the
    # reference's side imported before its call.
    import torch.ao.quantization.fx.fuse

    fn = _fuse_fn("pyfuse" if side == "floors" else side)
    if warm:
        warm_up(case, "pyfuse" if side == "floors" else side)
    gc.collect()
    rss0 = rss_bytes()
    built = case.build()
    nodes = len(built.gm.graph.nodes)
    result: dict[str, Any] = {"nodes": nodes, "threads": torch.get_num_threads()}
    if side == "floors":
        pairs = fold_pairs(built.gm) if not case.qat else []
        gc.collect()
        result["fold_floor"] = fold_floor(pairs)
        result["pairs"] = len(pairs)
        del pairs
        _, _, out = _timed_call(fn, built, case.qat, gc_off)
        gc.collect()
        result["codegen_floor"] = codegen_floor(out)
        return result
    before = _weak_snapshot(built.gm)
    gc.collect()
    rss1 = rss_bytes()
    exact_peak = reset_peak()
    base = rss1 if exact_peak else peak_bytes()
    wall, cpu, out = _timed_call(fn, built, case.qat, gc_off)
    peak = peak_bytes()
    n = _count_fusions_weak(out, before)
    result.update(
        wall=wall,
        cpu=cpu,
        peak_bytes=None if base is None else max(0, peak - base),
        model_bytes=None if rss0 is None or rss1 is None else rss1 - rss0,
        exact_peak=exact_peak,
        fusions=n,
        errors=_count_errors(side, built, n, W.node_count(out)),
        digest=digest(out),
    )
    return result


def _spawn(
    case: Case,
    side: str,
    gc_off: bool,
    warm: bool,
    timeout: float | None = None,
    threads: int = 0,
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pyfuse.bench.runner", case.to_json(), side]
    if gc_off:
        cmd.append("--gc-off")
    if warm:
        cmd.append("--warm")
    if threads:
        cmd.append(f"--threads={threads}")
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise _Timeout(f"stopped after {timeout:g} s") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"child exited with {proc.returncode}: {tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class _Timeout(Exception):
    pass


def measure_fresh(
    case: Case,
    repeats: int,
    *,
    sides: Sequence[str] = SIDES,
    floors: bool = True,
    gc_off: bool = False,
    warm: bool = False,
    ref_timeout: float | None = None,
    threads: int = 0,
    log: Callable[[str], None] = lambda _m: None,
) -> Samples:
    """``repeats`` fresh processes per side, interleaved (the floors in one more
    process per repeat); ``warm``: see :func:`run_child`. A reference process
    that runs longer than ``ref_timeout`` seconds is stopped, and the reference
    is skipped for the case (noted in the table; pyfuse's outputs then only meet
    the fusion and node count checks)."""
    res = Samples(case, "fresh")
    ref_digest: dict[str, Any] | None = None
    pending: list[tuple[str, dict[str, Any]]] = []
    failed: set[str] = set()
    for rep, order in _rotations(repeats, sides):
        for side in [*order, "floors"] if floors else order:
            if side in failed:
                continue
            try:
                r = _spawn(
                    case,
                    side,
                    gc_off,
                    warm,
                    ref_timeout if side == "ref" else None,
                    threads,
                )
            except _Timeout as e:
                res.notes.append(f"{case.label}: reference {e}, skipped")
                failed.add(side)
                log(f"  {side}: {e}")
                continue
            except (RuntimeError, ValueError) as e:
                res.errors.append(f"{side}: {e}")
                failed.add(side)
                log(f"  {side}: {e}")
                continue
            res.nodes = r["nodes"]
            if side == "floors":
                res.pairs = r["pairs"]
                res.add(
                    side,
                    Sample(
                        0.0,
                        0.0,
                        codegen_floor=r["codegen_floor"],
                        fold_floor=r["fold_floor"],
                    ),
                )
                log(
                    f"  fresh floors repeat {rep + 1}: codegen {r['codegen_floor']:.4f} s, "
                    f"fold {r['fold_floor']:.4f} s"
                )
                continue
            res.errors.extend(r["errors"])
            if not r["exact_peak"]:
                res.notes.append("peak memory: process-lifetime ru_maxrss")
            res.add(
                side, Sample(r["wall"], r["cpu"], r["peak_bytes"], r["model_bytes"])
            )
            if side == "ref":
                res.fusions = r["fusions"]
                if ref_digest is None:
                    ref_digest = r["digest"]
                else:
                    res.errors.extend(
                        compare_digests("reference (repeat)", ref_digest, r["digest"])
                    )
            else:
                if res.fusions is None:
                    res.fusions = r["fusions"]
                pending.append((side, r["digest"]))
            log(f"  fresh {side:6s} repeat {rep + 1}: {r['wall']:.4f} s")
    if ref_digest is not None:
        for side, d in pending:
            res.errors.extend(compare_digests(side, ref_digest, d))
    elif "ref" in sides and pending and "ref" not in failed:
        res.errors.append("no reference output to compare with")
    res.errors = sorted(set(res.errors))
    res.notes = sorted(set(res.notes))
    return res


# ---------------------------------------------------------------------------
# the large-heap condition


def measure_heap(
    case: Case,
    repeats: int,
    *,
    copies: int = 2,
    sides: Sequence[str] = SIDES,
    gc_off: bool = False,
    log: Callable[[str], None] = lambda _m: None,
) -> Samples:
    """All sides in this process, with ``copies`` extra copies of the model alive
    (each side warmed up first: only the process's first call would pay the
    first-use costs)."""
    res = Samples(case, "heap")
    for side in sides:
        warm_up(case, side)
    alive = [case.build() for _ in range(copies)]
    ref_digest: dict[str, Any] | None = None
    failed: set[str] = set()
    for rep, order in _rotations(repeats, sides):
        for side in order:
            if side in failed:
                continue
            built = case.build()
            res.nodes = len(built.gm.graph.nodes)
            before = W.module_snapshot(built.gm)
            pairs = fold_pairs(built.gm) if not case.qat else []
            res.pairs = len(pairs)
            try:
                wall, cpu, out = _timed_call(_fuse_fn(side), built, case.qat, gc_off)
            except Exception as e:  # noqa: BLE001 (a crash is a result: report it)
                res.errors.append(f"{side}: raised {type(e).__name__}: {e}")
                failed.add(side)
                log(f"  {side}: raised {type(e).__name__}: {e}")
                continue
            s = Sample(wall, cpu)
            if side == "pyfuse":
                s.codegen_floor = codegen_floor(out)
                s.fold_floor = fold_floor(pairs)
            res.add(side, s)
            n = W.count_fusions(out, before)
            res.errors.extend(_count_errors(side, built, n, W.node_count(out)))
            d = digest(out)
            if side == "ref":
                res.fusions = n
                if ref_digest is None:
                    ref_digest = d
                else:
                    res.errors.extend(
                        compare_digests("reference (repeat)", ref_digest, d)
                    )
            else:
                res.fusions = n if res.fusions is None else res.fusions
                if ref_digest is not None:
                    res.errors.extend(compare_digests(side, ref_digest, d))
                elif "ref" in sides:
                    res.errors.append(f"{side}: no reference output to compare with")
            log(f"  heap  {side:6s} repeat {rep + 1}: {wall:.4f} s")
            del out, before, pairs, built
    del alive
    res.errors = sorted(set(res.errors))
    return res


def mib(x: float | None) -> float | None:
    return None if x is None else x / _MiB


# ---------------------------------------------------------------------------
# child entry point


def _child_main(argv: list[str]) -> int:
    case = Case.from_json(argv[0])
    side = argv[1]
    if side not in (*SIDES, "floors"):
        print(f"unknown side {side!r}", file=sys.stderr)
        return 2
    for arg in argv[2:]:
        if arg.startswith("--threads="):
            torch.set_num_threads(int(arg.split("=", 1)[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        result = run_child(
            case, side, gc_off="--gc-off" in argv[2:], warm="--warm" in argv[2:]
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
