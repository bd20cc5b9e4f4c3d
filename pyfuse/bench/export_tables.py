"""Tables of ``pyfuse bench --flow pt2e``: rows of samples per graph size, and
their Markdown (a table with a wrong result shows the errors instead of its
numbers) and JSON. What is measured, and how, is in
:mod:`~pyfuse.bench.export_flow`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .load import Load
from .samples import BySide, Sample
from .tables import fmt_s, fmt_x, markdown_table

__all__ = ["CONDITION", "ExportRow", "ExportTable", "format_export_table"]

CONDITION = (
    "one process, both sides (each warmed up on a small graph first; no extra "
    "copies of the model alive), a freshly built graph per call; no peak memory: "
    "in one process the resident-set probe misses what the allocator reuses from "
    "earlier calls"
)
FOLD_LEGEND = (
    "*torchao* = `_fuse_conv_bn_` + `_fuse_linear_bn_` of "
    "`torchao.quantization.pt2e.utils`; *pyfuse* = `pyfuse.pt2e.fuse_conv_bn_` + "
    "`fuse_linear_bn_`; *speedup* = torchao wall / pyfuse wall; *check* = no "
    "BatchNorm left, every "
    "pair folded, every folded weight and bias bit-identical to torch's "
    "`fuse_conv_bn_weights` of its pair, outputs close to the unfolded graph's, "
    "and (where torchao ran) "
    "code, state_dict bits and module tree equal to torchao's."
)
PREPARE_LEGEND = (
    "`prepare_pt2e(ExportedProgram.module(), X86InductorQuantizer())`; *patched* = "
    "inside `pyfuse.pt2e.patched_torchao()` (pyfuse's folds); *check* = the two "
    "prepared graphs have the same code, state_dict bits and module tree."
)


@dataclass
class ExportRow(BySide):
    """Every sample of one graph size, and what went wrong."""

    label: str
    nodes: int = 0
    folds: int | None = None
    by_side: dict[str, list[Sample]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ExportTable:
    """One measured table (``kind`` fold or prepare)."""

    title: str
    kind: str
    rows: list[ExportRow]
    load: Load | None
    repeats: int
    command: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(not r.errors for r in self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "kind": self.kind,
            "condition": CONDITION,
            "repeats": self.repeats,
            "command": self.command,
            "notes": self.notes,
            "load": None if self.load is None else asdict(self.load),
            "rows": [
                {
                    "label": r.label,
                    "nodes": r.nodes,
                    "folds": r.folds,
                    "errors": r.errors,
                    "notes": r.notes,
                    "identical_to_torchao": "torchao" in r.by_side and not r.errors,
                    "medians": {
                        side: {a: r.median(side, a) for a in ("wall", "cpu")}
                        for side in r.by_side
                    },
                    "samples": {
                        k: [asdict(s) for s in v] for k, v in r.by_side.items()
                    },
                }
                for r in self.rows
            ],
        }


def format_export_table(t: ExportTable) -> str:
    """The table as Markdown, with its heading, condition and load; a table with
    a wrong result shows the errors instead of its numbers."""
    busy = t.load is not None and t.load.busy
    head = [f"### {t.title}{' (BUSY)' if busy else ''}", ""]
    if t.command:
        head += [f"`{t.command}`", ""]
    head.append(
        f"Condition: {CONDITION}; median of {t.repeats} interleaved calls per side"
        + (" (fewer than 5: a smoke run, not a result)" if t.repeats < 5 else "")
        + "."
    )
    if t.load is not None:
        head.append(f"Load: {t.load.describe()}.")
    head.append("")
    head.append(FOLD_LEGEND if t.kind == "fold" else PREPARE_LEGEND)
    parts = ["\n".join(head)]
    if not t.ok:
        errors = [f"- {r.label}: {e}" for r in t.rows for e in r.errors]
        parts.append(
            "**WRONG RESULTS / FAILURES (no numbers reported):**\n" + "\n".join(errors)
        )
        return "\n\n".join(parts)
    if t.kind == "fold":
        headers = [
            "graph", "nodes", "folds", "torchao s", "torchao CPU s", "pyfuse s",
            "pyfuse CPU s", "speedup", "pyfuse us/node", "check",
        ]  # fmt: skip
    else:
        headers = [
            "graph", "nodes", "torchao s", "torchao CPU s", "patched s",
            "patched CPU s", "speedup", "check",
        ]  # fmt: skip
    rows = []
    for r in t.rows:
        ao, ours = r.median("torchao", "wall"), r.median("pyfuse", "wall")
        speedup = None if ao is None or not ours else ao / ours
        cells = [r.label, f"{r.nodes:,}"]
        if t.kind == "fold":
            cells.append("-" if r.folds is None else f"{r.folds:,}")
        cells += [
            fmt_s(ao) if ao is not None else "not run",
            fmt_s(r.median("torchao", "cpu")),
            fmt_s(ours),
            fmt_s(r.median("pyfuse", "cpu")),
            fmt_x(speedup),
        ]
        if t.kind == "fold":
            cells.append("-" if ours is None else f"{ours / r.nodes * 1e6:.2f}")
        cells.append("OK" if "torchao" in r.by_side else "OK (no torchao)")
        rows.append(cells)
    parts.append(markdown_table(headers, rows))
    notes = sorted({n for r in t.rows for n in r.notes} | set(t.notes))
    if notes:
        parts.append("Notes: " + "; ".join(notes))
    return "\n\n".join(parts)
