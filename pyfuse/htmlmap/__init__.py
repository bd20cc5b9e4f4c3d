"""The fusion map: one self-contained HTML file drawing a graph and its fusions.

The main entry point is :func:`render_html`. It takes plain data (nodes in forward
order with their inputs, the fusions, the near misses), so any flow producing those
can draw its map: :func:`fx_map_nodes` turns a ``torch.fx.Graph`` (module-level or
aten; an ``ExportedProgram``'s weights folded with :func:`exported_folded`) into that
data.

The page needs no network: the SVG is drawn in Python, and a short inline script
only makes it interactive (collapse, search, jump to a near miss). Opened with
scripts disabled it still shows every node, fusion and reason.

Stages, each importing only the ones before it: :mod:`.model` (the data, an FX
graph turned into it), :mod:`.layout` (blocks by module scope, node positions),
:mod:`.template` (the page's static style sheet and script), :mod:`.render` (the
SVG, sidebar and page).
"""

from __future__ import annotations

from .model import MapFusion, MapMiss, MapNode, exported_folded, fx_map_nodes
from .render import render_html

__all__ = [
    "MapFusion",
    "MapMiss",
    "MapNode",
    "exported_folded",
    "fx_map_nodes",
    "render_html",
]
