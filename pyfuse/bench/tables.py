"""Tables of ``pyfuse bench``: one per condition, mode and workload group.

Every table carries its condition (fresh process per call, or one process with a
large live heap), the load average at its start and end (``BUSY`` when the
machine was not quiet), and per workload: wall and CPU time medians per side,
pyfuse's speedups, the two floors and pyfuse's ratio to their sum, peak memory
per side (fresh condition), and whether every output equalled the reference's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .load import Load
from .memory import mib
from .samples import Samples

__all__ = ["Table", "format_table", "markdown_table", "tables_json", "write_png"]

CONDITIONS = {
    "fresh": "a fresh process per side and call (model built/traced, then fused once: "
    "the call pays the process's first-use costs)",
    "fresh-warm": "a fresh process per side and call (model built/traced; one untimed "
    "fusion of a one-block workload first, then the timed call)",
    "heap": "one process with {copies} more copies of the model alive (a large live heap)",
}


@dataclass
class Table:
    """One measured table."""

    title: str
    condition: str
    mode: str
    rows: list[Samples]
    load: Load | None
    repeats: int
    command: str = ""
    copies: int = 2
    #: fresh condition: each process warmed up before its timed call
    warm: bool = False
    #: add a row summing the medians (real-width models)
    total: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(not r.errors for r in self.rows)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    if x >= 0.01:
        return f"{x:.3f}"
    if x == 0:
        return "0"
    return f"{x:.2e}"


def fmt_x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def fmt_mib(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, first column left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    sep = (
        "|"
        + "|".join(
            ":" + "-" * (w + 1) if i == 0 else "-" * (w + 1) + ":"
            for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


@dataclass
class _Medians:
    ref: float | None
    ref_cpu: float | None
    py: float | None
    py_cpu: float | None
    lazy: float | None
    codegen: float | None
    fold: float | None
    mem_ref: float | None
    mem_py: float | None
    mem_worker: float | None
    mem_lazy: float | None
    model: float | None

    @classmethod
    def of(cls, s: Samples) -> _Medians:
        floors = "floors" if "floors" in s.by_side else "pyfuse"
        return cls(
            s.median("ref", "wall"),
            s.median("ref", "cpu"),
            s.median("pyfuse", "wall"),
            s.median("pyfuse", "cpu"),
            s.median("lazy", "wall"),
            s.median(floors, "codegen_floor"),
            s.median(floors, "fold_floor"),
            mib(s.median("ref", "peak_bytes")),
            mib(s.median("pyfuse", "peak_bytes")),
            mib(s.median("pyfuse", "worker_bytes")),
            mib(s.median("lazy", "peak_bytes")),
            mib(s.median("pyfuse", "model_bytes") or s.median("ref", "model_bytes")),
        )


def _sum(xs: Sequence[float | None]) -> float | None:
    return None if any(x is None for x in xs) else sum(x for x in xs if x is not None)


def _cells(
    label: str, nodes: str, fusions: str, m: _Medians, memory: bool, check: str
) -> list[str]:
    floor = _sum([m.codegen, m.fold])
    cells = [
        label,
        nodes,
        fusions,
        fmt_s(m.ref),
        fmt_s(m.ref_cpu),
        fmt_s(m.py),
        fmt_s(m.py_cpu),
        fmt_x(_ratio(m.ref, m.py)),
        fmt_s(m.lazy),
        fmt_x(_ratio(m.ref, m.lazy)),
        fmt_s(m.codegen),
        fmt_s(m.fold),
        fmt_x(_ratio(m.py, floor)),
    ]
    if memory:
        cells += [
            fmt_mib(m.model),
            fmt_mib(m.mem_ref),
            fmt_mib(m.mem_py),
            fmt_mib(m.mem_worker),
            fmt_mib(m.mem_lazy),
        ]
    return [*cells, check]


HEADERS = [
    "workload",
    "nodes",
    "fusions",
    "ref wall s",
    "ref cpu s",
    "pyfuse wall s",
    "pyfuse cpu s",
    "speedup",
    "lazy wall s",
    "lazy speedup",
    "codegen floor s",
    "fold floor s",
    "pyfuse/floors",
]
MEMORY_HEADERS = [
    "model MiB",
    "ref +MiB",
    "pyfuse +MiB",
    "of which worker MiB",
    "lazy +MiB",
]


def _check(r: Samples) -> str:
    if r.errors:
        return "FAIL"
    # without a reference output only the fusion and node counts were checked
    return "OK" if r.by_side.get("ref") else "counts OK"


def format_table(t: Table) -> str:
    """The table as Markdown, with its heading, condition, load and problems."""
    memory = t.condition == "fresh"
    rows = []
    meds = [_Medians.of(r) for r in t.rows]
    for r, m in zip(t.rows, meds, strict=True):
        rows.append(
            _cells(
                r.case.label,
                f"{r.nodes:,}",
                "-" if r.fusions is None else f"{r.fusions:,}",
                m,
                memory,
                _check(r),
            )
        )
    if t.total and len(t.rows) > 1:
        fields = _Medians.__dataclass_fields__
        summed = _Medians(**{k: _sum([getattr(m, k) for m in meds]) for k in fields})
        rows.append(
            _cells(
                "**sum**",
                f"{sum(r.nodes for r in t.rows):,}",
                "-"
                if any(r.fusions is None for r in t.rows)
                else f"{sum(r.fusions or 0 for r in t.rows):,}",
                summed,
                memory,
                "OK" if t.ok else "FAIL",
            )
        )
    key = "fresh-warm" if t.condition == "fresh" and t.warm else t.condition
    cond = CONDITIONS[key].format(copies=t.copies)
    busy = t.load is not None and t.load.busy
    head = [f"### {t.title}{' (BUSY)' if busy else ''}", ""]
    if t.command:
        head += [f"`{t.command}`", ""]
    head.append(
        f"Condition: {cond}; {t.mode}; median of {t.repeats} interleaved calls per side"
        + (" (fewer than 5: a smoke run, not a result)" if t.repeats < 5 else "")
        + "."
    )
    if t.load is not None:
        head.append(f"Load: {t.load.describe()}.")
    head.append("")
    parts = [
        "\n".join(head),
        markdown_table([*HEADERS, *(MEMORY_HEADERS if memory else []), "check"], rows),
    ]
    notes = sorted({n for r in t.rows for n in r.notes} | set(t.notes))
    if notes:
        parts.append("Notes: " + "; ".join(notes))
    errors = [f"- {r.case.label}: {e}" for r in t.rows for e in r.errors]
    if errors:
        parts.append("**WRONG RESULTS / FAILURES:**\n" + "\n".join(errors))
    return "\n\n".join(parts)


def write_png(t: Table, path: str) -> None:
    """Log-log plot of a table's median wall times against graph nodes, per side
    and workload kind, with the floors' sum (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    meds = [(r, _Medians.of(r)) for r in t.rows]
    series: list[tuple[str, str, str, Callable[[_Medians], float | None]]] = [
        ("reference", "tab:red", "-", lambda m: m.ref),
        ("pyfuse", "tab:blue", "-", lambda m: m.py),
        ("pyfuse lazy", "tab:green", "-", lambda m: m.lazy),
        ("codegen + fold floor", "gray", ":", lambda m: _sum([m.codegen, m.fold])),
    ]
    markers = "osD^vP*X"
    kinds = sorted({r.case.kind for r, _ in meds})
    for label, color, style, get in series:
        for i, kind in enumerate(kinds):
            pts = sorted(
                (r.nodes, y)
                for r, m in meds
                if r.case.kind == kind and (y := get(m)) is not None
            )
            if pts:
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    linestyle=style,
                    marker=markers[i % len(markers)],
                    color=color,
                    label=f"{label} ({kind})",
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("graph nodes")
    ax.set_ylabel("seconds per fusion call (median)")
    ax.set_title(t.title + (" (BUSY)" if t.load is not None and t.load.busy else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def tables_json(top: str, tables: list[Table]) -> dict[str, Any]:
    """Every table and sample, JSON-able, under the run's header ``top``."""
    return {
        "header": top,
        "tables": [
            {
                "title": t.title,
                "condition": t.condition,
                "mode": t.mode,
                "repeats": t.repeats,
                "command": t.command,
                "load": None if t.load is None else asdict(t.load),
                "rows": [
                    {
                        "case": asdict(r.case),
                        "label": r.case.label,
                        "nodes": r.nodes,
                        "fusions": r.fusions,
                        "pairs": r.pairs,
                        "errors": r.errors,
                        "notes": r.notes,
                        "samples": {
                            k: [asdict(s) for s in v] for k, v in r.by_side.items()
                        },
                    }
                    for r in t.rows
                ],
            }
            for t in tables
        ],
    }
