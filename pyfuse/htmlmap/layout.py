"""The fusion map's layout: blocks by module scope, nodes placed in them.

1. Blocks. Nodes are cut into blocks by module scope: each node's key is the
   shortest prefix of its scope holding at most ``_BLOCK_MAX`` nodes, a block is a
   run of consecutive nodes with one key, and runs a fusion or near miss spans are
   merged, so each fusion and near miss is one SVG group in one block. O(n * depth).
2. Layout inside a block: the rank (row) of a node is the longest path to it from
   the block's entry (sources moved down next to their first user; a node moves
   down while its row is full), its lane the lane of its first input when free,
   else the first free lane. O(n + edges) with at most ``_MAX_LANES`` lanes.
3. Blocks stack vertically in forward order, each a header and a body. Graphs of
   more than 1,000 nodes (see :func:`~.render.render_html`) start with the bodies of blocks holding no
   near miss collapsed into a strip of coloured chips, one per fusion.
4. Edges between blocks are drawn in absolute coordinates; the script recomputes
   them (from the positions in the embedded JSON) when blocks open or close.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .model import MapFusion, MapMiss, MapNode

__all__ = ["Block", "Scene", "route"]

_BLOCK_MAX = 160  # nodes per module-scope block before it is split by sub-scope
_MERGE_SMALL = 40  # sibling-scope runs smaller than this are merged into one block
_MAX_LANES = 8  # nodes side by side in a row; more move one row down
NODE_W, NODE_H = 196, 20
LANE_W, ROW_H = 214, 30
HEAD_H, GAP, PAD = 22, 10, 14
CHIP, CHIPS_PER_ROW = 10, 64
BRACKET = 24  # how far a same-lane edge bows out to the right
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


@dataclass(slots=True)
class Block:
    """Nodes ``start`` to ``stop`` (exclusive): their header label, size and place."""

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
        return HEAD_H + (self.body_h if self.open else self.strip_h)


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
            pos[i] = (PAD + want * LANE_W, r * ROW_H)
    return pos


def route(sx: float, sy: float, tx: float, ty: float) -> str:
    """SVG path of an edge between the node boxes whose top-left corners are given.

    Adjacent rows: a curve from bottom to top. Further apart in one lane: a bracket
    along the right edges (not through the nodes between). To a lane on the left:
    down the source's lane into the target's right side. To the right: out of the
    source's right side and down the target's lane. The script has the same rules.
    """
    half_w, half_h = NODE_W / 2, NODE_H / 2
    if ty - sy <= ROW_H:
        x1, y1, x2, y2 = sx + half_w, sy + NODE_H, tx + half_w, ty
        dy = max((y2 - y1) / 2, 6)
        return f"M{x1:g} {y1:g}C{x1:g} {y1 + dy:g} {x2:g} {y2 - dy:g} {x2:g} {y2:g}"
    if sx == tx:
        x, y1, y2, b = sx + NODE_W, sy + half_h, ty + half_h, BRACKET
        return f"M{x:g} {y1:g}C{x + b:g} {y1:g} {x + b:g} {y2:g} {x:g} {y2:g}"
    if tx < sx:
        x1, y1, x2, y2 = sx + half_w, sy + NODE_H, tx + NODE_W, ty + half_h
        return f"M{x1:g} {y1:g}C{x1:g} {y2:g} {x1:g} {y2:g} {x2:g} {y2:g}"
    x1, y1, x2, y2 = sx + NODE_W, sy + half_h, tx + half_w, ty
    return f"M{x1:g} {y1:g}C{x2:g} {y1:g} {x2:g} {y1:g} {x2:g} {y2:g}"


class Scene:
    """The laid-out graph (drawn nodes only): blocks, node positions, which
    fusion and near miss each node and block holds, and each pattern's colour."""

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
        self.blocks: list[Block] = []
        self.cross = [
            (j, i)
            for i, node in enumerate(nodes)
            for j in node.inputs
            if self.block_of[j] != self.block_of[i]
        ]

    def place_blocks(self, collapse: bool) -> None:
        """Size the blocks and stack them (step 3)."""
        pos, y = self.pos, PAD
        for b in range(len(self.starts) - 1):
            lo, hi = self.starts[b], self.starts[b + 1]
            blk = Block(lo, hi, _block_label(self.keys, lo, hi, self.scope_types))
            blk.width = max(pos[i][0] for i in range(lo, hi)) + NODE_W + PAD
            blk.body_h = max(pos[i][1] for i in range(lo, hi)) + NODE_H + PAD
            chips = len(self.fusions_in.get(b, ())) + len(self.misses_in.get(b, ()))
            blk.strip_h = -(-chips // CHIPS_PER_ROW) * (CHIP + 4) + 4
            blk.open = not collapse or b in self.misses_in
            blk.y = y
            y += blk.height() + GAP
            self.blocks.append(blk)
        self.height = y + PAD
        self.width = max(
            [b.width for b in self.blocks] + [CHIPS_PER_ROW * (CHIP + 2) + 2 * PAD, 600]
        )

    def abs_pos(self, i: int) -> tuple[int, int]:
        """Node `i`'s top-left corner on the page (its block open)."""
        return self.pos[i][0], self.blocks[self.block_of[i]].y + HEAD_H + self.pos[i][1]
