"""``pyfuse bench --profile``: where a fusion call's time goes, by cProfile.

The call's profiled time is split into

* **code generation**: the source text (FX's ``Graph.python_code``, or pyfuse's
  native emitter) and the builtin ``compile`` of it, as
  ``GraphModule.recompile()`` does them (for pyfuse on large graphs: the wait
  for its compile worker and loading the code it sends);
* **weight arithmetic**: BatchNorm folding (torch's ``fuse_conv_bn_weights`` /
  ``fuse_linear_bn_weights`` and pyfuse's batched fold);
* **the rest**: matching, checks, module creation, graph edits, collections:
  the pass's own work, which is what can still be cut.

cProfile slows Python-level code down more than native code, so the shares are
indicative; the unprofiled wall time of a call on the same input is shown beside.
"""

from __future__ import annotations

import cProfile
import gc
import pstats
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass, field

from .cases import Case, fuse_fn, warm_up

__all__ = [
    "HeapUse",
    "Split",
    "format_heap",
    "format_splits",
    "heap_use",
    "profile_split",
]

#: (file suffix, function name) of code generation: the text (FX's
#: ``Graph.python_code`` or pyfuse's native emitter) and its compilation (the
#: builtin ``compile``, or waiting for pyfuse's compile worker and loading its code)
_CODE_TEXT = (
    ("torch/fx/graph.py", "python_code"),
    ("pyfuse/codegen.py", "try_python_code"),
)
_CODEGEN = (
    *_CODE_TEXT,
    ("~", "<built-in method builtins.compile>"),
    ("pyfuse/compileworker.py", "code"),
)
#: function names of the weight folding (torch's and pyfuse's)
_FOLD_TORCH = ("fuse_conv_bn_weights", "fuse_linear_bn_weights")
_FOLD_OURS = ("batch_folds", "_fold")


@dataclass
class Split:
    """One profiled call."""

    label: str
    side: str
    wall: float
    profiled: float
    codegen: float
    #: of which the text (the rest of ``codegen`` is its compilation)
    python_code: float
    fold: float
    top_rest: list[tuple[str, float]] = field(default_factory=list)

    @property
    def rest(self) -> float:
        return max(0.0, self.profiled - self.codegen - self.fold)


def _is_codegen(key: tuple[str, int, str]) -> bool:
    file, _, name = key
    return any(file.endswith(f) and name == n for f, n in _CODEGEN)


def _is_fold(key: tuple[str, int, str]) -> bool:
    file, _, name = key
    if name in _FOLD_TORCH:
        return file.endswith("torch/nn/utils/fusion.py")
    return name in _FOLD_OURS and "pyfuse" in file


def profile_split(case: Case, side: str = "pyfuse", top: int = 8) -> Split:
    """Profile one ``side`` call on a fresh input of ``case``; time another
    unprofiled one on another fresh input."""
    fn = fuse_fn(side)
    warm_up(case, side)
    built = case.build()
    gc.collect()
    t0 = time.perf_counter()
    fn(built.gm, case.qat, None, built.backend_config)
    wall = time.perf_counter() - t0
    del built
    built = case.build()
    gc.collect()
    prof = cProfile.Profile()
    prof.enable()
    fn(built.gm, case.qat, None, built.backend_config)
    prof.disable()
    st = pstats.Stats(prof)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    raw = st.stats  # type: ignore[attr-defined]
    total = float(st.total_tt)  # type: ignore[attr-defined]
    codegen = sum(v[3] for k, v in raw.items() if _is_codegen(k))
    text = sum(
        v[3]
        for k, v in raw.items()
        if any(k[0].endswith(f) and k[2] == n for f, n in _CODE_TEXT)
    )
    fold = sum(v[3] for k, v in raw.items() if _is_fold(k))
    # the largest own times outside codegen and folding (their callees excluded)
    inside = _callees_of(raw, lambda k: _is_codegen(k) or _is_fold(k))
    rest = sorted(
        (
            (f"{k[2]} ({_short(k[0])}:{k[1]})", v[2])
            for k, v in raw.items()
            if k not in inside
        ),
        key=lambda kv: -kv[1],
    )[:top]
    return Split(case.label, side, wall, total, codegen, text, fold, rest)


@dataclass
class HeapUse:
    """Python-heap use of one call (tracemalloc: Python objects and buffers;
    tensor storage is allocated outside Python's allocator and not seen)."""

    label: str
    side: str
    peak: int
    kept: int
    #: (file, bytes kept after the call), largest first
    top_kept: list[tuple[str, int]] = field(default_factory=list)


def heap_use(case: Case, side: str = "pyfuse", top: int = 6) -> HeapUse:
    """Trace the Python allocations of one ``side`` call on a fresh input: the
    peak over the start, what is still allocated after it (the output's new
    objects), and by which files it was allocated."""
    fn = fuse_fn(side)
    warm_up(case, side)
    built = case.build()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    start, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    out = fn(built.gm, case.qat, None, built.backend_config)
    del built
    gc.collect()
    now, peak = tracemalloc.get_traced_memory()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    by_file = after.compare_to(before, "filename")
    sites = [
        (_short(d.traceback[0].filename), d.size_diff)
        for d in sorted(by_file, key=lambda d: -d.size_diff)[:top]
        if d.size_diff > 0
    ]
    del out
    return HeapUse(case.label, side, peak - start, now - start, sites)


def format_heap(uses: Sequence[HeapUse]) -> str:
    """Markdown table of :func:`heap_use` results."""
    from .tables import markdown_table

    mib = 1024 * 1024
    rows = [
        [
            u.label,
            u.side,
            f"{u.peak / mib:.1f}",
            f"{u.kept / mib:.1f}",
            ", ".join(f"{f} {b / mib:.1f}" for f, b in u.top_kept[:3]),
        ]
        for u in uses
    ]
    return (
        "Python heap during one call (tracemalloc; tensor storage not included):\n\n"
        + (
            markdown_table(
                ["workload", "side", "peak MiB", "kept MiB", "kept by file (MiB)"], rows
            )
        )
    )


def _callees_of(
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]],
    pred: object,
) -> set[tuple[str, int, str]]:
    """Functions called (transitively) only under functions matching ``pred``."""
    assert callable(pred)
    roots = {k for k in raw if pred(k)}
    inside = set(roots)
    changed = True
    while changed:
        changed = False
        for k, v in raw.items():
            callers = v[4]
            assert isinstance(callers, dict)
            if k not in inside and callers and all(c in inside for c in callers):
                inside.add(k)
                changed = True
    return inside


def _short(path: str) -> str:
    """A source path from its package on: ``torch/fx/graph.py``,
    ``pyfuse/fx/fusers.py``, ``copy.py`` (the standard library)."""
    i = path.rfind("site-packages/")
    if i >= 0:
        return path[i + len("site-packages/") :]
    i = path.rfind("pyfuse/")
    if i >= 0:
        return path[i:]
    i = path.rfind("/lib/python")
    if i >= 0:
        return path[path.index("/", i + len("/lib/python")) + 1 :]
    return path


def _pct(x: float, total: float) -> str:
    return f"{x:.4f} s ({100 * x / total:.0f}%)" if total > 0 else f"{x:.4f} s"


def format_splits(splits: Sequence[Split]) -> str:
    """Markdown table of the splits, then each call's largest own times."""
    from .tables import markdown_table

    rows = [
        [
            s.label,
            s.side,
            f"{s.wall:.4f}",
            f"{s.profiled:.4f}",
            _pct(s.codegen, s.profiled),
            f"{s.python_code:.4f}",
            f"{s.codegen - s.python_code:.4f}",
            _pct(s.fold, s.profiled),
            _pct(s.rest, s.profiled),
        ]
        for s in splits
    ]
    parts = [
        markdown_table(
            [
                "workload",
                "side",
                "wall s (unprofiled)",
                "profiled s",
                "codegen",
                "text s",
                "compile s",
                "weight fold",
                "rest",
            ],
            rows,
        )
    ]
    for s in splits:
        lines = [f"  {t:.4f} s  {name}" for name, t in s.top_rest]
        parts.append(
            f"{s.label} {s.side}, largest own times in the rest:\n" + "\n".join(lines)
        )
    return "\n\n".join(parts)
