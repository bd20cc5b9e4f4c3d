"""Tables and plots of ``pyfuse bench`` results: one :class:`Row` per workload."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Row", "format_tables", "median", "write_png"]


@dataclass
class Row:
    """Medians (seconds) for one workload; ``None`` = not measured."""

    workload: str
    kind: str
    nodes: int
    fusions: int | None = None
    build_s: float | None = None
    ref_s: float | None = None
    pyfuse_s: float | None = None
    lazy_s: float | None = None
    codegen_s: float | None = None
    match_ref_s: float | None = None
    match_pyfuse_s: float | None = None
    ref_note: str = ""
    errors: list[str] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        return _ratio(self.ref_s, self.pyfuse_s)

    @property
    def lazy_speedup(self) -> float | None:
        return _ratio(self.ref_s, self.lazy_s)

    @property
    def floor_ratio(self) -> float | None:
        return _ratio(self.pyfuse_s, self.codegen_s)

    @property
    def match_speedup(self) -> float | None:
        return _ratio(self.match_ref_s, self.match_pyfuse_s)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    if x >= 0.01:
        return f"{x:.3f}"
    return f"{x:.2e}"


def _fmt_x(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}x"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
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
            "-" * (w + 1) + ":" if i else ":" + "-" * (w + 1)
            for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def format_tables(rows: Sequence[Row]) -> str:
    """The fusion table and the T1 (flatten + match) table, as Markdown."""
    main_rows = []
    for r in rows:
        ref = _fmt_s(r.ref_s) if r.ref_s is not None else (r.ref_note or "-")
        main_rows.append(
            [
                r.workload,
                f"{r.nodes:,}",
                "-" if r.fusions is None else f"{r.fusions:,}",
                ref,
                _fmt_s(r.pyfuse_s),
                _fmt_x(r.speedup),
                _fmt_s(r.lazy_s),
                _fmt_x(r.lazy_speedup),
                _fmt_s(r.codegen_s),
                "-" if r.floor_ratio is None else f"{r.floor_ratio:.2f}",
                "OK" if not r.errors else "FAIL",
            ]
        )
    t1 = _table(
        [
            "workload",
            "nodes",
            "fusions",
            "reference s",
            "pyfuse s",
            "speedup",
            "pyfuse lazy s",
            "lazy speedup",
            "codegen floor s",
            "pyfuse/floor",
            "check",
        ],
        main_rows,
    )
    match_rows = [
        [
            r.workload,
            f"{r.nodes:,}",
            _fmt_s(r.match_ref_s),
            _fmt_s(r.match_pyfuse_s),
            _fmt_x(r.match_speedup),
        ]
        for r in rows
        if r.match_ref_s is not None or r.match_pyfuse_s is not None
    ]
    parts = [t1]
    if match_rows:
        parts.append(
            "T1, flatten + match only:\n"
            + _table(
                ["workload", "nodes", "_find_matches s", "find_matches s", "speedup"],
                match_rows,
            )
        )
    builds = ", ".join(
        f"{r.workload} {_fmt_s(r.build_s)} s" for r in rows if r.build_s is not None
    )
    parts.append(f"input build time (not measured, once per run): {builds}")
    errors = [f"  {r.workload}: {e}" for r in rows for e in r.errors]
    if errors:
        parts.append("PROBLEMS:\n" + "\n".join(errors))
    return "\n\n".join(parts)


def write_png(rows: Sequence[Row], path: str, title: str) -> None:
    """Log-log plot of time vs nodes: reference, pyfuse eager, pyfuse lazy, floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    series = [
        ("reference", "ref_s", "tab:red", "-"),
        ("pyfuse", "pyfuse_s", "tab:blue", "-"),
        ("pyfuse lazy", "lazy_s", "tab:green", "-"),
        ("codegen floor", "codegen_s", "gray", ":"),
    ]
    markers = {"resnet": "o", "mixed": "s", "onednn": "^", "huge": "D"}
    kinds = [k for k in markers if any(r.kind == k for r in rows)]
    for label, attr, color, style in series:
        for kind in kinds:
            pts = sorted(
                (r.nodes, getattr(r, attr))
                for r in rows
                if r.kind == kind and getattr(r, attr) is not None
            )
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ys = [p[1] for p in pts]
            ax.plot(
                xs,
                ys,
                linestyle=style,
                marker=markers[kind],
                color=color,
                label=f"{label} ({kind})",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("graph nodes")
    ax.set_ylabel("seconds per fusion call (median)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
