"""The fusion map: one self-contained HTML file drawing a graph and its fusions.

The main entry point is :func:`render_html`. It takes plain data (nodes in forward
order with their inputs, the fusions, the near misses), so any flow producing those
can draw its map: :func:`fx_map_nodes` turns a ``torch.fx.Graph`` (module-level or
aten; an ``ExportedProgram``'s weights folded with :func:`exported_folded`) into that
data.

The page needs no network: the SVG is drawn here, in Python, and a short inline
script only makes it interactive (collapse, search, jump to a near miss). Opened
with scripts disabled it still shows every node, fusion and reason.

## Internals

1. Blocks. Nodes are cut into blocks by module scope: each node's key is the
   shortest prefix of its scope holding at most ``_BLOCK_MAX`` nodes, a block is a
   run of consecutive nodes with one key, and runs a fusion or near miss spans are
   merged, so each fusion and near miss is one SVG group in one block. O(n * depth).
2. Layout inside a block: the rank (row) of a node is the longest path to it from
   the block's entry (sources moved down next to their first user; a node moves
   down while its row is full), its lane the lane of its first input when free,
   else the first free lane. O(n + edges) with at most ``_MAX_LANES`` lanes.
3. Blocks stack vertically in forward order, each a header and a body. Graphs of
   more than ``_COLLAPSE_OVER`` nodes start with the bodies of blocks holding no
   near miss collapsed into a strip of coloured chips, one per fusion.
4. Edges between blocks are drawn in absolute coordinates; the script recomputes
   them (from the positions in the embedded JSON) when blocks open or close.
"""

from __future__ import annotations

import html
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .report import node_label

__all__ = [
    "MapFusion",
    "MapMiss",
    "MapNode",
    "exported_folded",
    "fx_map_nodes",
    "render_html",
]

_BLOCK_MAX = 160  # nodes per module-scope block before it is split by sub-scope
_MERGE_SMALL = 40  # sibling-scope runs smaller than this are merged into one block
_MAX_LANES = 8  # nodes side by side in a row; more move one row down
_COLLAPSE_OVER = 1000  # graphs larger than this start with quiet blocks collapsed
_NODE_W, _NODE_H = 196, 20
_CHAR_W = 6.3  # mean advance of an 11px sans-serif character, to fit labels in a box
_LANE_W, _ROW_H = 214, 30
_HEAD_H, _STRIP_H, _GAP, _PAD = 22, 16, 10, 14
_CHIP, _CHIPS_PER_ROW = 10, 64
_BRACKET = 24  # how far a same-lane edge bows out to the right
_MISS = "#d62728"
_PALETTE = (
    "#1f77b4",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#7f7f7f",
    "#393b79",
    "#637939",
    "#8c6d31",
)


@dataclass(frozen=True, slots=True)
class MapNode:
    """One graph node, as the map shows it.

    Attributes:
        name: the label (a module path for call_module nodes, the node name otherwise).
        op: the node's opcode (``placeholder``, ``call_module``, ``call_function``, ...).
        target: a readable target: the module type, function or attribute name.
        inputs: indices (into the node list) of the earlier nodes this node reads.
        scope: the dotted path of the module whose code made the node ("" at top level).
        folded: a parameter or constant input (an exported program's weights):
            named in its users' tooltips instead of drawn as a box.
    """

    name: str
    op: str
    target: str
    inputs: tuple[int, ...] = ()
    scope: str = ""
    folded: bool = False


@dataclass(frozen=True, slots=True)
class MapFusion:
    """A fusion: its pattern (forward order), node indices, and the fused module's type."""

    pattern: str
    nodes: tuple[int, ...]
    fused_type: str


@dataclass(frozen=True, slots=True)
class MapMiss:
    """A near miss: its pattern (forward order), node indices, and why it does not fuse."""

    pattern: str
    nodes: tuple[int, ...]
    reason: str


def _target_text(node: Any, owner: Any) -> str:
    if node.op == "call_module" and owner is not None:
        try:
            return type(owner.get_submodule(str(node.target))).__name__
        except AttributeError:
            return str(node.target)
    if node.op in ("call_function", "call_method"):
        return getattr(node.target, "__name__", None) or str(node.target)
    return str(node.target) if node.op == "get_attr" else node.op


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).rpartition(".")[2]


def fx_map_nodes(
    graph: Any, owner: Any = None, folded: Collection[str] = ()
) -> tuple[list[MapNode], dict[str, str]]:
    """The map's view of a ``torch.fx.Graph``: nodes in graph (forward) order, and
    the type name of each module scope (and enclosing scope) seen.

    A node's scope is its module's parent for a call_module node, else the innermost
    module of its ``nn_module_stack`` (recorded by symbolic_trace and torch.export).

    Args:
        graph: the graph to draw.
        owner: the module owning the graph's submodules (names call_module targets'
            types), or None.
        folded: names of the nodes to fold into their users (an exported program's
            parameter, buffer and constant inputs: see :func:`exported_folded`).
    """
    index: dict[Any, int] = {}
    out: list[MapNode] = []
    scope_types: dict[str, str] = {}
    for node in graph.nodes:
        inputs = sorted({index[n] for n in node.all_input_nodes if n in index})
        stack = node.meta.get("nn_module_stack") or {}
        for path, kind in stack.values():
            if path:
                scope_types.setdefault(str(path), _type_name(kind))
        if node.op == "call_module":
            scope = str(node.target).rpartition(".")[0]
        else:
            scope = str(list(stack.values())[-1][0]) if stack else ""
        index[node] = len(out)
        out.append(
            MapNode(
                node_label(node),
                node.op,
                _target_text(node, owner),
                tuple(inputs),
                scope,
                node.name in folded,
            )
        )
    if owner is not None:
        prefixes = {
            ".".join(p[:d])
            for n in out
            if n.scope
            for p in [n.scope.split(".")]
            for d in range(1, len(p) + 1)
        }
        for scope in sorted(prefixes - scope_types.keys()):
            try:
                scope_types[scope] = type(owner.get_submodule(scope)).__name__
            except AttributeError:
                continue
    return out, scope_types


def exported_folded(program: Any) -> set[str]:
    """Names of an ``ExportedProgram``'s placeholders that are not user inputs (its
    parameters, buffers, constants): the map names them in their users' tooltips."""
    return {
        spec.arg.name
        for spec in program.graph_signature.input_specs
        if spec.kind.name != "USER_INPUT" and hasattr(spec.arg, "name")
    }


# ---------------------------------------------------------------------------
# Layout


@dataclass(slots=True)
class _Block:
    start: int
    stop: int
    label: str
    width: int = 0
    body_h: int = 0
    strip_h: int = 0
    y: int = 0
    open: bool = True

    def height(self) -> int:
        """Height on the page: the header, then the body or the strip."""
        return _HEAD_H + (self.body_h if self.open else self.strip_h)


def _scope_keys(nodes: Sequence[MapNode]) -> list[str]:
    """Each node's block key: the shortest prefix of its scope holding at most
    ``_BLOCK_MAX`` nodes. A node of the top-level scope (the glue a forward writes
    between submodule calls, a shared top-level activation) takes the key of its
    latest input, so it stays with the nodes it follows."""
    counts: dict[str, int] = {}
    parts = [n.scope.split(".") if n.scope else [] for n in nodes]
    for p in parts:
        for d in range(1, len(p) + 1):
            key = ".".join(p[:d])
            counts[key] = counts.get(key, 0) + 1
    keys: list[str] = []
    for node, p in zip(nodes, parts, strict=True):
        key = ".".join(p)
        for d in range(1, len(p) + 1):
            prefix = ".".join(p[:d])
            if counts[prefix] <= _BLOCK_MAX:
                key = prefix
                break
        if not p and node.inputs:
            key = keys[max(node.inputs)]
        keys.append(key)
    return keys


def _block_bounds(keys: Sequence[str], spans: Iterable[tuple[int, int]]) -> list[int]:
    """Start indices of the blocks (step 1 of the module docstring), plus the count.

    Runs of one key are blocks; runs a fusion or near miss spans are merged; then
    consecutive small runs of sibling scopes (``layers.0``, ``layers.1``, ...) are
    merged up to ``_BLOCK_MAX`` nodes, so a long stack is a few blocks, not hundreds.
    """
    count = len(keys)
    if not count:
        return [0]
    cover = [0] * (count + 2)
    for lo, hi in spans:
        cover[lo + 1] += 1
        cover[hi + 1] -= 1
    starts, inside = [0], 0
    for i in range(1, count):
        inside += cover[i]
        if keys[i] != keys[i - 1] and not inside:
            starts.append(i)
    starts.append(count)
    merged = [0]
    for k in range(1, len(starts) - 1):
        lo, mid, hi = merged[-1], starts[k], starts[k + 1]
        siblings = bool(keys[lo]) and (
            keys[lo].rpartition(".")[0] == keys[mid].rpartition(".")[0]
        )
        small = mid - starts[k - 1] < _MERGE_SMALL and hi - mid < _MERGE_SMALL
        if not (siblings and small and hi - lo <= _BLOCK_MAX):
            merged.append(mid)
    return [*merged, count]


def _block_label(
    keys: Sequence[str], start: int, stop: int, scope_types: Mapping[str, str]
) -> str:
    runs = list(dict.fromkeys(keys[start:stop]))
    common = runs[0].split(".") if runs[0] else []
    for key in runs[1:]:
        p = key.split(".") if key else []
        k = 0
        while k < min(len(common), len(p)) and common[k] == p[k]:
            k += 1
        common = common[:k]
    head = ".".join(common)
    if (
        len(runs) > 1
        and all(runs)
        and all(len(r.split(".")) == len(common) + 1 for r in runs)
    ):
        return f"{runs[0]} … {runs[-1]}"  # merged siblings
    if not head:
        names = [r or "(top level)" for r in runs]
        return " · ".join(names[:3]) + (" · …" if len(names) > 3 else "")
    kind = scope_types.get(head)
    return f"{head} ({kind})" if kind else head


def _layout(
    nodes: Sequence[MapNode], block_of: list[int], starts: list[int]
) -> list[tuple[int, int]]:
    """(x, y) of every node inside its block's body (step 2)."""
    n = len(nodes)
    rank = [0] * n
    first_user = [-1] * n
    for i, node in enumerate(nodes):
        b = block_of[i]
        r = 0
        for j in node.inputs:
            if block_of[j] == b:
                r = max(r, rank[j] + 1)
                if first_user[j] < 0:
                    first_user[j] = i
        rank[i] = r
    for i, node in enumerate(nodes):  # sources sit just above their first user
        if first_user[i] >= 0 and not any(
            block_of[j] == block_of[i] for j in node.inputs
        ):
            rank[i] = max(0, rank[first_user[i]] - 1)
    lane = [0] * n
    pos: list[tuple[int, int]] = [(0, 0)] * n
    for b in range(len(starts) - 1):
        taken: dict[int, set[int]] = {}
        for i in range(starts[b], starts[b + 1]):
            inside = [j for j in nodes[i].inputs if block_of[j] == b]
            r = max([rank[i], *(rank[j] + 1 for j in inside)])
            while len(taken.get(r, ())) >= _MAX_LANES:  # a full row: go one down
                r += 1
            rank[i] = r
            row = taken.setdefault(r, set())
            want = lane[inside[0]] if inside else 0
            if want in row:
                want = min(set(range(_MAX_LANES)) - row)
            row.add(want)
            lane[i] = want
            pos[i] = (_PAD + want * _LANE_W, r * _ROW_H)
    return pos


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _short(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…" if limit > 1 else ""


def _route(sx: float, sy: float, tx: float, ty: float) -> str:
    """SVG path of an edge between the node boxes whose top-left corners are given.

    Adjacent rows: a curve from bottom to top. Further apart in one lane: a bracket
    along the right edges (not through the nodes between). To a lane on the left:
    down the source's lane into the target's right side. To the right: out of the
    source's right side and down the target's lane. The script has the same rules.
    """
    half_w, half_h = _NODE_W / 2, _NODE_H / 2
    if ty - sy <= _ROW_H:
        x1, y1, x2, y2 = sx + half_w, sy + _NODE_H, tx + half_w, ty
        dy = max((y2 - y1) / 2, 6)
        return f"M{x1:g} {y1:g}C{x1:g} {y1 + dy:g} {x2:g} {y2 - dy:g} {x2:g} {y2:g}"
    if sx == tx:
        x, y1, y2, b = sx + _NODE_W, sy + half_h, ty + half_h, _BRACKET
        return f"M{x:g} {y1:g}C{x + b:g} {y1:g} {x + b:g} {y2:g} {x:g} {y2:g}"
    if tx < sx:
        x1, y1, x2, y2 = sx + half_w, sy + _NODE_H, tx + _NODE_W, ty + half_h
        return f"M{x1:g} {y1:g}C{x1:g} {y2:g} {x1:g} {y2:g} {x2:g} {y2:g}"
    x1, y1, x2, y2 = sx + _NODE_W, sy + half_h, tx + half_w, ty
    return f"M{x1:g} {y1:g}C{x2:g} {y1:g} {x2:g} {y1:g} {x2:g} {y2:g}"


# ---------------------------------------------------------------------------
# Rendering


def render_html(
    nodes: Sequence[MapNode],
    fusions: Sequence[MapFusion],
    near_misses: Sequence[MapMiss],
    *,
    title: str = "pyfuse fusion map",
    scope_types: Mapping[str, str] | None = None,
    collapse: bool | None = None,
) -> str:
    """The fusion map of a graph as one self-contained HTML page.

    Args:
        nodes: the graph's nodes in forward order (inputs point to earlier nodes).
        fusions: the fusions, node indices into `nodes`.
        near_misses: chains that match a pattern but do not fuse, with the reason.
        title: the page title.
        scope_types: module scope path -> type name, shown in block headers.
        collapse: start with blocks without a near miss collapsed; None: only for
            graphs of more than 1,000 nodes.

    Returns:
        The HTML text (no external resources; inline SVG, CSS and script).

    Raises:
        ValueError: a fusion or near miss names a node out of range, or a node
            reads a later node.
    """
    _check(nodes, fusions, near_misses)
    scene = _Scene(*_fold(nodes, fusions, near_misses), scope_types or {})
    if collapse is None:
        collapse = len(nodes) > _COLLAPSE_OVER
    scene.place_blocks(collapse)
    return _page(title, scene.svg(), scene.payload(), scene.sidebar())


def _check(
    nodes: Sequence[MapNode],
    fusions: Sequence[MapFusion],
    near_misses: Sequence[MapMiss],
) -> None:
    count = len(nodes)
    for what, groups in (("fusion", fusions), ("near miss", near_misses)):
        for g in groups:
            bad = [i for i in g.nodes if not 0 <= i < count]
            if bad or not g.nodes:
                raise ValueError(
                    f"{what} {g.pattern!r} refers to nodes {bad or '()'} "
                    f"outside the {count} nodes given"
                )
            if all(nodes[i].folded for i in g.nodes):
                raise ValueError(
                    f"{what} {g.pattern!r} has only folded nodes: nothing to draw"
                )
    for i, node in enumerate(nodes):
        late = [j for j in node.inputs if not 0 <= j < i]
        if late:
            raise ValueError(
                f"node {i} ({node.name}) reads nodes {late}: inputs must be "
                "earlier nodes (forward order)"
            )


def _fold(
    nodes: Sequence[MapNode],
    fusions: Sequence[MapFusion],
    near_misses: Sequence[MapMiss],
) -> tuple[
    list[int], list[MapNode], list[MapFusion], list[MapMiss], dict[int, list[str]]
]:
    """Drop the folded nodes: (original index of each node drawn, the nodes drawn with
    inputs renumbered, fusions and near misses renumbered, drawn node -> folded inputs'
    names)."""
    if not any(n.folded for n in nodes):
        return (
            list(range(len(nodes))),
            list(nodes),
            list(fusions),
            list(near_misses),
            {},
        )
    new: dict[int, int] = {}
    ids: list[int] = []
    view: list[MapNode] = []
    reads: dict[int, list[str]] = {}
    for i, node in enumerate(nodes):
        if node.folded:
            continue
        new[i] = len(view)
        folded = [nodes[j].name for j in node.inputs if j not in new]
        if folded:
            reads[len(view)] = folded
        ids.append(i)
        view.append(
            MapNode(
                node.name,
                node.op,
                node.target,
                tuple(new[j] for j in node.inputs if j in new),
                node.scope,
            )
        )

    def renumber(members: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(new[i] for i in members if i in new)

    return (
        ids,
        view,
        [MapFusion(f.pattern, renumber(f.nodes), f.fused_type) for f in fusions],
        [MapMiss(m.pattern, renumber(m.nodes), m.reason) for m in near_misses],
        reads,
    )


def _plural(count: int, word: str, many: str = "s") -> str:
    return f"{count} {word}{many if count != 1 else ''}"


class _Scene:
    """The laid-out graph (drawn nodes only) and its SVG / sidebar / script data."""

    def __init__(
        self,
        ids: list[int],
        nodes: list[MapNode],
        fusions: list[MapFusion],
        near_misses: list[MapMiss],
        reads: dict[int, list[str]],
        scope_types: Mapping[str, str],
    ) -> None:
        self.ids, self.nodes, self.reads = ids, nodes, reads
        self.fusions, self.near_misses = fusions, near_misses
        spans = [(min(f.nodes), max(f.nodes)) for f in fusions]
        spans += [(min(m.nodes), max(m.nodes)) for m in near_misses]
        self.keys = _scope_keys(nodes)
        self.starts = _block_bounds(self.keys, spans)
        self.block_of = [0] * len(nodes)
        for b in range(len(self.starts) - 1):
            for i in range(self.starts[b], self.starts[b + 1]):
                self.block_of[i] = b
        self.pos = _layout(nodes, self.block_of, self.starts)
        self.scope_types = scope_types
        self.colour: dict[str, str] = {}
        for f in fusions:
            self.colour.setdefault(
                f.pattern, _PALETTE[len(self.colour) % len(_PALETTE)]
            )
        self.fusion_of: dict[int, int] = {}
        self.fusions_in: dict[int, list[int]] = {}
        for k, f in enumerate(fusions):
            for i in f.nodes:
                self.fusion_of.setdefault(i, k)
            self.fusions_in.setdefault(self.block_of[f.nodes[0]], []).append(k)
        self.misses_of: dict[int, list[int]] = {}
        self.misses_in: dict[int, list[int]] = {}
        for k, m in enumerate(near_misses):
            for i in m.nodes:
                self.misses_of.setdefault(i, []).append(k)
            self.misses_in.setdefault(self.block_of[m.nodes[0]], []).append(k)
        self.blocks: list[_Block] = []
        self.cross = [
            (j, i)
            for i, node in enumerate(nodes)
            for j in node.inputs
            if self.block_of[j] != self.block_of[i]
        ]

    def place_blocks(self, collapse: bool) -> None:
        """Size the blocks and stack them (step 3)."""
        pos, y = self.pos, _PAD
        for b in range(len(self.starts) - 1):
            lo, hi = self.starts[b], self.starts[b + 1]
            blk = _Block(lo, hi, _block_label(self.keys, lo, hi, self.scope_types))
            blk.width = max(pos[i][0] for i in range(lo, hi)) + _NODE_W + _PAD
            blk.body_h = max(pos[i][1] for i in range(lo, hi)) + _NODE_H + _PAD
            chips = len(self.fusions_in.get(b, ())) + len(self.misses_in.get(b, ()))
            blk.strip_h = -(-chips // _CHIPS_PER_ROW) * (_CHIP + 4) + 4
            blk.open = not collapse or b in self.misses_in
            blk.y = y
            y += blk.height() + _GAP
            self.blocks.append(blk)
        self.height = y + _PAD
        self.width = max(
            [b.width for b in self.blocks]
            + [_CHIPS_PER_ROW * (_CHIP + 2) + 2 * _PAD, 600]
        )

    def svg(self) -> str:
        out: list[str] = []
        w = out.append
        w(
            f'<svg id="map" width="{self.width}" height="{self.height}" '
            f'viewBox="0 0 {self.width} {self.height}" font-family="sans-serif" font-size="11">'
        )
        w(
            '<defs><marker id="arr" viewBox="0 0 6 6" refX="5" refY="3" markerWidth="6" '
            'markerHeight="6" orient="auto"><path d="M0 0L6 3L0 6z" fill="#8a8f98"/>'
            "</marker></defs>"
        )
        w('<g id="xedges">')
        out += [self._cross_edge(j, i) for j, i in self.cross]
        w("</g>")
        out += [self._block(b) for b in range(len(self.blocks))]
        w("</svg>")
        return "".join(out)

    def payload(self) -> str:
        """The script's data: block geometry and the ends of edges between blocks."""
        data = {
            "blocks": [
                [b.y, _HEAD_H, b.body_h, b.strip_h, int(b.open)] for b in self.blocks
            ],
            "pos": {
                i: [self.block_of[i], *self.pos[i]] for pair in self.cross for i in pair
            },
            "gap": _GAP,
            "pad": _PAD,
            "nodeW": _NODE_W,
            "nodeH": _NODE_H,
            "rowH": _ROW_H,
            "bracket": _BRACKET,
        }
        return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")

    def _abs(self, i: int) -> tuple[int, int]:
        return self.pos[i][0], self.blocks[self.block_of[i]].y + _HEAD_H + self.pos[i][
            1
        ]

    def _cross_edge(self, j: int, i: int) -> str:
        bs, bd = self.blocks[self.block_of[j]], self.blocks[self.block_of[i]]
        sx, sy = self._abs(j) if bs.open else (_PAD, bs.y + _HEAD_H - _NODE_H)
        tx, ty = self._abs(i) if bd.open else (_PAD, bd.y)
        hide = "" if bs.open or bd.open else ' style="display:none"'  # both collapsed
        return (
            f'<path class="e x" data-s="{j}" data-d="{i}"{hide} '
            f'd="{_route(sx, sy, tx, ty)}"/>'
        )

    def _block(self, b: int) -> str:
        blk, nodes, pos = self.blocks[b], self.nodes, self.pos
        fusion_ids, miss_ids = self.fusions_in.get(b, []), self.misses_in.get(b, [])
        out: list[str] = []
        w = out.append
        w(
            f'<g class="blk{"" if blk.open else " shut"}" id="b{b}" data-block="{b}" '
            f'transform="translate(0,{blk.y})">'
        )
        summary = (
            f"{_plural(blk.stop - blk.start, 'node')} · "
            f"{_plural(len(fusion_ids), 'fusion')}"
        )
        if miss_ids:
            summary += f" · {_plural(len(miss_ids), 'near miss', 'es')}"
        w(
            f'<g class="hdr" data-block="{b}"><rect width="{max(blk.width, 420)}" '
            f'height="{_HEAD_H - 4}" rx="3"/><text x="8" y="13"><tspan class="tw">'
            f"{'▾' if blk.open else '▸'}</tspan> {_esc(_short(blk.label, 90))} — {summary}"
            "</text></g>"
        )

        # the strip shown while the block is collapsed: a chip per fusion / near miss
        w(f'<g class="strip" transform="translate({_PAD},{_HEAD_H})">')
        chips = [("f", k) for k in fusion_ids] + [("m", k) for k in miss_ids]
        for c, (kind, k) in enumerate(chips):
            xy = (
                f'x="{(c % _CHIPS_PER_ROW) * (_CHIP + 2)}" '
                f'y="{(c // _CHIPS_PER_ROW) * (_CHIP + 4)}" width="{_CHIP}" height="{_CHIP}"'
            )
            if kind == "f":
                f = self.fusions[k]
                w(
                    f'<rect class="chip" {xy} fill="{self.colour[f.pattern]}">'
                    f"<title>{_esc(self._fusion_tip(f))}</title></rect>"
                )
            else:
                w(
                    f'<rect class="chip miss" {xy}>'
                    f"<title>{_esc(self._miss_tip(self.near_misses[k]))}</title></rect>"
                )
        w("</g>")

        w(f'<g class="body" transform="translate(0,{_HEAD_H})"><g class="edges">')
        for i in range(blk.start, blk.stop):
            for j in nodes[i].inputs:
                if self.block_of[j] == b:
                    w(f'<path class="e" d="{_route(*pos[j], *pos[i])}"/>')
        w("</g>")
        for k in miss_ids:
            m = self.near_misses[k]
            w(
                f'<g class="miss" id="m{k}" data-miss="{k}" data-pattern="{_esc(m.pattern)}" '
                f'data-reason="{_esc(m.reason)}"><title>{_esc(self._miss_tip(m))}</title>'
                f"{_hull('misshull', m.nodes, pos, 7)}</g>"
            )
        done: set[int] = set()
        for i in range(blk.start, blk.stop):
            owner = self.fusion_of.get(i)
            if owner is None:
                w(self._node(i, None))
            elif owner not in done:
                done.add(owner)
                f = self.fusions[owner]
                w(
                    f'<g class="fusion" id="f{owner}" data-fusion="{owner}" '
                    f'data-pattern="{_esc(f.pattern)}" data-fused="{_esc(f.fused_type)}" '
                    f'style="--c:{self.colour[f.pattern]}"><title>{_esc(self._fusion_tip(f))}'
                    f"</title>{_hull('hull', f.nodes, pos, 4)}"
                )
                out += [
                    self._node(j, f)
                    for j in sorted(f.nodes)
                    if self.fusion_of[j] == owner
                ]
                w("</g>")
        w("</g></g>")
        return "".join(out)

    def _names(self, members: Iterable[int]) -> str:
        return ", ".join(self.nodes[i].name for i in sorted(members))

    def _fusion_tip(self, f: MapFusion) -> str:
        return f"fusion {f.pattern} => {f.fused_type}\n{self._names(f.nodes)}"

    def _miss_tip(self, m: MapMiss) -> str:
        return f"near miss {m.pattern} at {self._names(m.nodes)}\nwhy: {m.reason}"

    def _node(self, i: int, fusion: MapFusion | None) -> str:
        node, (x, y) = self.nodes[i], self.pos[i]
        misses = [self.near_misses[k] for k in self.misses_of.get(i, ())]
        tip = [f"{node.name}\n{node.op}: {node.target}"]
        if i in self.reads:
            tip.append("reads " + ", ".join(self.reads[i]))
        if fusion is not None:
            tip.append(self._fusion_tip(fusion))
        tip += [self._miss_tip(m) for m in misses]
        cls = "n" + " fused" * (fusion is not None) + " nm" * bool(misses)
        if node.op in ("placeholder", "output", "get_attr"):
            cls += " io"
        # the end of a long path tells most; squeeze what would overflow the box
        label = node.name if len(node.name) <= 30 else "…" + node.name[-29:]
        target = _short(node.target, max(0, 38 - len(label)))
        room = _NODE_W - 12
        fit = (
            ""
            if (len(label) + len(target) + 1) * _CHAR_W <= room
            else (f' textLength="{room}" lengthAdjust="spacingAndGlyphs"')
        )
        out = (
            f'<g class="{cls}" id="n{self.ids[i]}" data-name="{_esc(node.name)}" '
            f'transform="translate({x},{y})"><title>{_esc(chr(10).join(tip))}</title>'
            f'<rect width="{_NODE_W}" height="{_NODE_H}" rx="4"/><text x="6" y="14"{fit}>'
            f'{_esc(label)} <tspan class="t">{_esc(target)}</tspan></text>'
        )
        if misses:
            out += (
                f'<circle class="badge" cx="{_NODE_W}" cy="0" r="7"/>'
                f'<text class="bang" x="{_NODE_W}" y="4">!</text>'
            )
        return out + "</g>"

    def sidebar(self) -> str:
        out: list[str] = []
        w = out.append
        w(
            f'<p class="stats">{_plural(len(self.nodes), "node")} · '
            f"{_plural(len(self.fusions), 'fusion')} · "
            f"{_plural(len(self.near_misses), 'near miss', 'es')} · "
            f"{_plural(len(self.blocks), 'block')}</p>"
        )
        w(
            '<div class="ctl"><button id="open-all">expand all</button> '
            '<button id="shut-all">collapse all</button></div>'
            '<input id="find" type="search" placeholder="find a node (Enter)">'
        )
        w('<h2>Fusions</h2><ul class="legend">')
        by_pattern: dict[str, dict[str, int]] = {}
        for f in self.fusions:
            kinds = by_pattern.setdefault(f.pattern, {})
            kinds[f.fused_type] = kinds.get(f.fused_type, 0) + 1
        for pattern, kinds in by_pattern.items():
            w(
                f'<li><span class="sw" style="background:{self.colour[pattern]}"></span>'
                f"{_esc(pattern)} ⇒ {_esc(', '.join(kinds))} <b>&times;{sum(kinds.values())}</b></li>"
            )
        w("</ul>" if self.fusions else "<li>none</li></ul>")
        w('<h2>Near misses</h2><ol class="misses">')
        for k, m in enumerate(self.near_misses):
            w(
                f'<li data-miss="{k}" data-block="{self.block_of[m.nodes[0]]}">'
                f"<b>{_esc(m.pattern)}</b> at {_esc(self._names(m.nodes))}<br>"
                f'<span class="why">{_esc(m.reason)}</span></li>'
            )
        w("</ol>" if self.near_misses else "</ol><p>none</p>")
        w(
            '<p class="help">Nodes run top to bottom in forward order, grouped in blocks by '
            "module scope. Hover a node for its op, fusion and near-miss reason; click a block "
            "header to open or close it. Open the file with <code>#NAME</code> after its path "
            "to jump to a node.</p>"
        )
        return "".join(out)


def _hull(
    cls: str, members: Iterable[int], pos: list[tuple[int, int]], pad: int
) -> str:
    """A rounded rectangle around the members' boxes."""
    xs = [pos[i][0] for i in members]
    ys = [pos[i][1] for i in members]
    x0, y0 = min(xs) - pad, min(ys) - pad
    return (
        f'<rect class="{cls}" x="{x0}" y="{y0}" width="{max(xs) + _NODE_W + pad - x0}" '
        f'height="{max(ys) + _NODE_H + pad - y0}" rx="6"/>'
    )


_CSS = """
html,body{margin:0;height:100%;font:13px sans-serif;color:#222}
body{display:flex}
#side{width:340px;flex:none;overflow:auto;padding:10px 14px;border-right:1px solid #ccc;
 background:#fafafa;box-sizing:border-box}
#main{flex:1;overflow:auto}
h1{font-size:16px;margin:4px 0}h2{font-size:14px;margin:14px 0 4px}
ul.legend{list-style:none;padding:0;margin:0}ul.legend li{margin:3px 0}
.sw{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:-1px}
ol.misses{padding-left:20px;margin:0}ol.misses li{margin:4px 0;cursor:pointer}
.why{color:#d62728}.stats,.help{color:#555}
#find{width:100%;margin-top:6px;box-sizing:border-box}
.e{fill:none;stroke:#8a8f98;stroke-width:1;marker-end:url(#arr)}
.hdr{cursor:pointer}.hdr rect{fill:#e8ebf0}.hdr text{font-weight:bold;fill:#333}
.n rect{fill:#fff;stroke:#9aa0a8}.n .t{fill:#777}
.n.io rect{fill:#eef0f3}
.fusion .hull{fill:var(--c);fill-opacity:.16;stroke:var(--c);stroke-width:1.5}
.n.fused rect{fill:var(--c);fill-opacity:.28;stroke:var(--c)}
.n.nm rect{stroke:#d62728;stroke-width:2;stroke-dasharray:4 2}
.misshull{fill:#d62728;fill-opacity:.07;stroke:#d62728;stroke-dasharray:5 3}
.badge{fill:#d62728}.bang{fill:#fff;font-weight:bold;text-anchor:middle}
.chip.miss{fill:#d62728}
.blk .strip{display:none}.blk.shut .strip{display:inline}.blk.shut .body{display:none}
.n.hit rect{stroke:#000;stroke-width:3}
"""

_JS = """
(function(){
var D=JSON.parse(document.getElementById('map-data').textContent);
var svg=document.getElementById('map');
var blocks=[].slice.call(document.querySelectorAll('#map .blk'));
function relayout(){
  var y=D.pad;
  blocks.forEach(function(g,b){
    var B=D.blocks[b];B[0]=y;
    g.setAttribute('transform','translate(0,'+y+')');
    y+=B[1]+(B[4]?B[2]:B[3])+D.gap;
  });
  svg.setAttribute('height',y+D.pad);
  svg.setAttribute('viewBox','0 0 '+svg.getAttribute('width')+' '+(y+D.pad));
  var paths=document.querySelectorAll('#xedges path');
  for(var k=0;k<paths.length;k++){
    var p=paths[k],s=D.pos[p.getAttribute('data-s')],d=D.pos[p.getAttribute('data-d')];
    var bs=D.blocks[s[0]],bd=D.blocks[d[0]];
    var sx=bs[4]?s[1]:D.pad,sy=bs[4]?bs[0]+bs[1]+s[2]:bs[0]+bs[1]-D.nodeH;
    var tx=bd[4]?d[1]:D.pad,ty=bd[4]?bd[0]+bd[1]+d[2]:bd[0];
    p.setAttribute('d',route(sx,sy,tx,ty));
    p.style.display=(bs[4]||bd[4])?'':'none';
  }
}
function route(sx,sy,tx,ty){
  var W=D.nodeW,H=D.nodeH,hw=W/2,hh=H/2,P=function(a){return a.join(' ');};
  if(ty-sy<=D.rowH){var x1=sx+hw,y1=sy+H,x2=tx+hw,y2=ty,dy=Math.max((y2-y1)/2,6);
    return 'M'+P([x1,y1])+'C'+P([x1,y1+dy,x2,y2-dy,x2,y2]);}
  if(sx===tx){var x=sx+W,b=D.bracket;
    return 'M'+P([x,sy+hh])+'C'+P([x+b,sy+hh,x+b,ty+hh,x,ty+hh]);}
  if(tx<sx){var a=sx+hw,c=ty+hh;
    return 'M'+P([a,sy+H])+'C'+P([a,c,a,c,tx+W,c]);}
  var e=tx+hw,f=sy+hh;
  return 'M'+P([sx+W,f])+'C'+P([e,f,e,f,e,ty]);
}
function setOpen(b,open){
  D.blocks[b][4]=open?1:0;
  blocks[b].classList.toggle('shut',!open);
  blocks[b].querySelector('.tw').textContent=open?'\\u25be':'\\u25b8';
}
function show(el,b){
  setOpen(b,true);relayout();
  el.scrollIntoView({block:'center',inline:'center'});
  var n=el.classList.contains('n')?[el]:[].slice.call(el.querySelectorAll('.n'));
  n.forEach(function(x){x.classList.add('hit');});
  setTimeout(function(){n.forEach(function(x){x.classList.remove('hit');});},1500);
}
svg.addEventListener('click',function(ev){
  var h=ev.target.closest('.hdr');if(!h)return;
  var b=+h.getAttribute('data-block');setOpen(b,!D.blocks[b][4]);relayout();
});
document.getElementById('open-all').onclick=function(){blocks.forEach(function(g,b){setOpen(b,true);});relayout();};
document.getElementById('shut-all').onclick=function(){blocks.forEach(function(g,b){setOpen(b,false);});relayout();};
[].forEach.call(document.querySelectorAll('ol.misses li'),function(li){
  li.onclick=function(){show(document.getElementById('m'+li.getAttribute('data-miss')),+li.getAttribute('data-block'));};
});
var last=-1;
document.getElementById('find').addEventListener('keydown',function(ev){
  if(ev.key!=='Enter')return;
  var q=this.value.trim();if(!q)return;
  var all=document.querySelectorAll('#map .n');
  for(var k=1;k<=all.length;k++){
    var el=all[(last+k)%all.length];
    if(el.getAttribute('data-name').indexOf(q)>=0){
      last=(last+k)%all.length;show(el,+el.closest('.blk').getAttribute('data-block'));return;
    }
  }
});
function fromHash(){
  var q=decodeURIComponent(location.hash.slice(1));if(!q)return;
  var el=[].filter.call(document.querySelectorAll('#map .n'),function(n){
    return n.getAttribute('data-name')===q;})[0];
  if(el)show(el,+el.closest('.blk').getAttribute('data-block'));
}
window.addEventListener('hashchange',fromHash);
fromHash();
document.body.setAttribute('data-ready','1');
})();
"""


def _page(title: str, svg: str, payload: str, side: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f'<div id="side"><h1>{_esc(title)}</h1>{side}</div>'
        f'<div id="main">{svg}</div>'
        f'<script type="application/json" id="map-data">{payload}</script>'
        f"<script>{_JS}</script></body></html>\n"
    )
