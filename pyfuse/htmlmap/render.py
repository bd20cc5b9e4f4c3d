"""The fusion map drawn: SVG, sidebar and script data, in one HTML page.

The SVG is drawn here, in Python, so the page shows every node, fusion and reason
with scripts disabled; the inline script (:mod:`.template`) only makes it
interactive: collapse, search, jump to a near miss.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence

from .layout import (
    BRACKET,
    CHIP,
    CHIPS_PER_ROW,
    GAP,
    HEAD_H,
    NODE_H,
    NODE_W,
    PAD,
    ROW_H,
    Scene,
    route,
)
from .model import MapFusion, MapMiss, MapNode, check, drop_folded
from .template import CSS, JS

__all__ = ["render_html"]

_COLLAPSE_OVER = 1000  # graphs larger than this start with quiet blocks collapsed
_CHAR_W = 6.3  # mean advance of an 11px sans-serif character, to fit labels in a box


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
    check(nodes, fusions, near_misses)
    scene = Scene(*drop_folded(nodes, fusions, near_misses), scope_types or {})
    if collapse is None:
        collapse = len(nodes) > _COLLAPSE_OVER
    scene.place_blocks(collapse)
    return _page(title, _svg(scene), _payload(scene), _sidebar(scene))


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _short(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…" if limit > 1 else ""


def _plural(count: int, word: str, many: str = "s") -> str:
    return f"{count} {word}{many if count != 1 else ''}"


def _svg(scene: Scene) -> str:
    """The drawing: the edges between blocks, then each block."""
    out: list[str] = []
    w = out.append
    w(
        f'<svg id="map" width="{scene.width}" height="{scene.height}" '
        f'viewBox="0 0 {scene.width} {scene.height}" font-family="sans-serif" font-size="11">'
    )
    w(
        '<defs><marker id="arr" viewBox="0 0 6 6" refX="5" refY="3" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0 0L6 3L0 6z" fill="#8a8f98"/>'
        "</marker></defs>"
    )
    w('<g id="xedges">')
    out += [_cross_edge(scene, j, i) for j, i in scene.cross]
    w("</g>")
    out += [_block(scene, b) for b in range(len(scene.blocks))]
    w("</svg>")
    return "".join(out)


def _payload(scene: Scene) -> str:
    """The script's data: block geometry and the ends of edges between blocks."""
    data = {
        "blocks": [
            [b.y, HEAD_H, b.body_h, b.strip_h, int(b.open)] for b in scene.blocks
        ],
        "pos": {
            i: [scene.block_of[i], *scene.pos[i]] for pair in scene.cross for i in pair
        },
        "gap": GAP,
        "pad": PAD,
        "nodeW": NODE_W,
        "nodeH": NODE_H,
        "rowH": ROW_H,
        "bracket": BRACKET,
    }
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


def _cross_edge(scene: Scene, j: int, i: int) -> str:
    bs, bd = scene.blocks[scene.block_of[j]], scene.blocks[scene.block_of[i]]
    sx, sy = scene.abs_pos(j) if bs.open else (PAD, bs.y + HEAD_H - NODE_H)
    tx, ty = scene.abs_pos(i) if bd.open else (PAD, bd.y)
    hide = "" if bs.open or bd.open else ' style="display:none"'  # both collapsed
    return (
        f'<path class="e x" data-s="{j}" data-d="{i}"{hide} '
        f'd="{route(sx, sy, tx, ty)}"/>'
    )


def _block(scene: Scene, b: int) -> str:
    blk, nodes, pos = scene.blocks[b], scene.nodes, scene.pos
    fusion_ids, miss_ids = scene.fusions_in.get(b, []), scene.misses_in.get(b, [])
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
        f'height="{HEAD_H - 4}" rx="3"/><text x="8" y="13"><tspan class="tw">'
        f"{'▾' if blk.open else '▸'}</tspan> {_esc(_short(blk.label, 90))} — {summary}"
        "</text></g>"
    )

    # the strip shown while the block is collapsed: a chip per fusion / near miss
    w(f'<g class="strip" transform="translate({PAD},{HEAD_H})">')
    chips = [("f", k) for k in fusion_ids] + [("m", k) for k in miss_ids]
    for c, (kind, k) in enumerate(chips):
        xy = (
            f'x="{(c % CHIPS_PER_ROW) * (CHIP + 2)}" '
            f'y="{(c // CHIPS_PER_ROW) * (CHIP + 4)}" width="{CHIP}" height="{CHIP}"'
        )
        if kind == "f":
            f = scene.fusions[k]
            w(
                f'<rect class="chip" {xy} fill="{scene.colour[f.pattern]}">'
                f"<title>{_esc(_fusion_tip(scene, f))}</title></rect>"
            )
        else:
            w(
                f'<rect class="chip miss" {xy}>'
                f"<title>{_esc(_miss_tip(scene, scene.near_misses[k]))}</title></rect>"
            )
    w("</g>")

    w(f'<g class="body" transform="translate(0,{HEAD_H})"><g class="edges">')
    for i in range(blk.start, blk.stop):
        for j in nodes[i].inputs:
            if scene.block_of[j] == b:
                w(f'<path class="e" d="{route(*pos[j], *pos[i])}"/>')
    w("</g>")
    for k in miss_ids:
        m = scene.near_misses[k]
        w(
            f'<g class="miss" id="m{k}" data-miss="{k}" data-pattern="{_esc(m.pattern)}" '
            f'data-reason="{_esc(m.reason)}"><title>{_esc(_miss_tip(scene, m))}</title>'
            f"{_hull('misshull', m.nodes, pos, 7)}</g>"
        )
    done: set[int] = set()
    for i in range(blk.start, blk.stop):
        owner = scene.fusion_of.get(i)
        if owner is None:
            w(_node(scene, i, None))
        elif owner not in done:
            done.add(owner)
            f = scene.fusions[owner]
            w(
                f'<g class="fusion" id="f{owner}" data-fusion="{owner}" '
                f'data-pattern="{_esc(f.pattern)}" data-fused="{_esc(f.fused_type)}" '
                f'style="--c:{scene.colour[f.pattern]}"><title>{_esc(_fusion_tip(scene, f))}'
                f"</title>{_hull('hull', f.nodes, pos, 4)}"
            )
            out += [
                _node(scene, j, f)
                for j in sorted(f.nodes)
                if scene.fusion_of[j] == owner
            ]
            w("</g>")
    w("</g></g>")
    return "".join(out)


def _names(scene: Scene, members: Iterable[int]) -> str:
    return ", ".join(scene.nodes[i].name for i in sorted(members))


def _fusion_tip(scene: Scene, f: MapFusion) -> str:
    return f"fusion {f.pattern} => {f.fused_type}\n{_names(scene, f.nodes)}"


def _miss_tip(scene: Scene, m: MapMiss) -> str:
    return f"near miss {m.pattern} at {_names(scene, m.nodes)}\nwhy: {m.reason}"


def _node(scene: Scene, i: int, fusion: MapFusion | None) -> str:
    node, (x, y) = scene.nodes[i], scene.pos[i]
    misses = [scene.near_misses[k] for k in scene.misses_of.get(i, ())]
    tip = [f"{node.name}\n{node.op}: {node.target}"]
    if i in scene.reads:
        tip.append("reads " + ", ".join(scene.reads[i]))
    if fusion is not None:
        tip.append(_fusion_tip(scene, fusion))
    tip += [_miss_tip(scene, m) for m in misses]
    cls = "n" + " fused" * (fusion is not None) + " nm" * bool(misses)
    if node.op in ("placeholder", "output", "get_attr"):
        cls += " io"
    # the end of a long path tells most; squeeze what would overflow the box
    label = node.name if len(node.name) <= 30 else "…" + node.name[-29:]
    target = _short(node.target, max(0, 38 - len(label)))
    room = NODE_W - 12
    fit = (
        ""
        if (len(label) + len(target) + 1) * _CHAR_W <= room
        else (f' textLength="{room}" lengthAdjust="spacingAndGlyphs"')
    )
    out = (
        f'<g class="{cls}" id="n{scene.ids[i]}" data-name="{_esc(node.name)}" '
        f'transform="translate({x},{y})"><title>{_esc(chr(10).join(tip))}</title>'
        f'<rect width="{NODE_W}" height="{NODE_H}" rx="4"/><text x="6" y="14"{fit}>'
        f'{_esc(label)} <tspan class="t">{_esc(target)}</tspan></text>'
    )
    if misses:
        out += (
            f'<circle class="badge" cx="{NODE_W}" cy="0" r="7"/>'
            f'<text class="bang" x="{NODE_W}" y="4">!</text>'
        )
    return out + "</g>"


def _sidebar(scene: Scene) -> str:
    """Counts, controls, the fusion legend and the list of near misses."""
    out: list[str] = []
    w = out.append
    w(
        f'<p class="stats">{_plural(len(scene.nodes), "node")} · '
        f"{_plural(len(scene.fusions), 'fusion')} · "
        f"{_plural(len(scene.near_misses), 'near miss', 'es')} · "
        f"{_plural(len(scene.blocks), 'block')}</p>"
    )
    w(
        '<div class="ctl"><button id="open-all">expand all</button> '
        '<button id="shut-all">collapse all</button></div>'
        '<input id="find" type="search" placeholder="find a node (Enter)">'
    )
    w('<h2>Fusions</h2><ul class="legend">')
    by_pattern: dict[str, dict[str, int]] = {}
    for f in scene.fusions:
        kinds = by_pattern.setdefault(f.pattern, {})
        kinds[f.fused_type] = kinds.get(f.fused_type, 0) + 1
    for pattern, kinds in by_pattern.items():
        w(
            f'<li><span class="sw" style="background:{scene.colour[pattern]}"></span>'
            f"{_esc(pattern)} ⇒ {_esc(', '.join(kinds))} <b>&times;{sum(kinds.values())}</b></li>"
        )
    w("</ul>" if scene.fusions else "<li>none</li></ul>")
    w('<h2>Near misses</h2><ol class="misses">')
    for k, m in enumerate(scene.near_misses):
        w(
            f'<li data-miss="{k}" data-block="{scene.block_of[m.nodes[0]]}">'
            f"<b>{_esc(m.pattern)}</b> at {_esc(_names(scene, m.nodes))}<br>"
            f'<span class="why">{_esc(m.reason)}</span></li>'
        )
    w("</ol>" if scene.near_misses else "</ol><p>none</p>")
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
        f'<rect class="{cls}" x="{x0}" y="{y0}" width="{max(xs) + NODE_W + pad - x0}" '
        f'height="{max(ys) + NODE_H + pad - y0}" rx="6"/>'
    )


def _page(title: str, svg: str, payload: str, side: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>"
        f'<div id="side"><h1>{_esc(title)}</h1>{side}</div>'
        f'<div id="main">{svg}</div>'
        f'<script type="application/json" id="map-data">{payload}</script>'
        f"<script>{JS}</script></body></html>\n"
    )
