"""The fusion map: every fusion and near miss drawn, self-contained, forward order,
usable at thousands of nodes; and opened in a headless browser when one is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from pyfuse.htmlmap import (
    MapFusion,
    MapMiss,
    MapNode,
    exported_folded,
    fx_map_nodes,
    render_html,
)
from tests.support.htmldom import by_class, check_map, parse, translate

# ---------------------------------------------------------------------------
# Graphs as plain data


def resnet_like(
    blocks: int, *, miss_every: int = 0
) -> tuple[list[MapNode], list[MapFusion], list[MapMiss]]:
    """x, a conv-bn-relu stem, `blocks` residual blocks of 7 nodes (conv-bn-relu,
    conv-bn, add, relu) over 4 stages, fc, output. Every `miss_every`-th block's second
    conv-bn is a near miss (its conv has two users) instead of a fusion."""
    nodes: list[MapNode] = [MapNode("x", "placeholder", "placeholder")]
    fusions: list[MapFusion] = []
    misses: list[MapMiss] = []

    def add(
        name: str, op: str, target: str, inputs: tuple[int, ...], scope: str = ""
    ) -> int:
        nodes.append(MapNode(name, op, target, inputs, scope))
        return len(nodes) - 1

    c = add("conv1", "call_module", "Conv2d", (0,))
    b = add("bn1", "call_module", "BatchNorm2d", (c,))
    prev = add("relu", "call_module", "ReLU", (b,))
    fusions.append(
        MapFusion("Conv2d -> BatchNorm2d -> ReLU", (c, b, prev), "ConvReLU2d")
    )
    per_stage = -(-blocks // 4)
    for k in range(blocks):
        s = f"layer{k // per_stage + 1}.{k % per_stage}"
        c1 = add(f"{s}.conv1", "call_module", "Conv2d", (prev,), s)
        b1 = add(f"{s}.bn1", "call_module", "BatchNorm2d", (c1,), s)
        r1 = add(f"{s}.relu", "call_module", "ReLU", (b1,), s)
        c2 = add(f"{s}.conv2", "call_module", "Conv2d", (r1,), s)
        b2 = add(f"{s}.bn2", "call_module", "BatchNorm2d", (c2,), s)
        a = add(f"add_{k}", "call_function", "add", (prev, b2), s)
        prev = add(f"{s}.relu_out", "call_module", "ReLU", (a,), s)
        fusions.append(
            MapFusion("Conv2d -> BatchNorm2d -> ReLU", (c1, b1, r1), "ConvReLU2d")
        )
        if miss_every and k % miss_every == miss_every - 1:
            misses.append(
                MapMiss(
                    "Conv2d -> BatchNorm2d",
                    (c2, b2),
                    f"{s}.conv2 has 2 users <a & 'b'>",
                )
            )
        else:
            fusions.append(MapFusion("Conv2d -> BatchNorm2d", (c2, b2), "Conv2d"))
    fc = add("fc", "call_module", "Linear", (prev,))
    add("output", "output", "output", (fc,))
    return nodes, fusions, misses


# ---------------------------------------------------------------------------


def test_every_fusion_and_every_near_miss_reason_is_in_the_map():
    nodes, fusions, misses = resnet_like(12, miss_every=4)
    assert len(misses) == 3
    page = render_html(nodes, fusions, misses, title="resnet-like <test>")
    root = check_map(page, nodes, fusions, misses)
    assert next(e for e in root.walk() if e.tag == "title").text == "resnet-like <test>"
    legend = " ".join(
        li.all_text()
        for li in root.walk()
        if li.tag == "li" and li.parent is not None and "legend" in li.parent.classes
    )
    assert "Conv2d -> BatchNorm2d -> ReLU" in legend
    assert "ConvReLU2d" in legend


def test_a_near_miss_twin_without_misses_says_none():
    nodes, fusions, _ = resnet_like(3)
    root = check_map(render_html(nodes, fusions, []), nodes, fusions, [])
    assert not by_class(root, "nm")
    assert "0 near misses" in root.all_text()


def test_the_map_is_self_contained():
    nodes, fusions, misses = resnet_like(20, miss_every=3)
    page = render_html(nodes, fusions, misses)
    root = parse(page)
    tags = {e.tag for e in root.walk()}
    assert not tags & {
        "link",
        "img",
        "iframe",
        "object",
        "embed",
        "base",
        "audio",
        "video",
        "source",
        "form",
    }
    for e in root.walk():
        assert "src" not in e.attrs, e.tag
        for attr in ("href", "xlink:href", "action", "poster", "srcset"):
            assert attr not in e.attrs or e.attrs[attr].startswith("#"), (
                e.tag,
                e.attrs,
            )
    scripts = [e for e in root.walk() if e.tag == "script"]
    assert len(scripts) == 2
    data = next(s for s in scripts if s.attrs.get("type") == "application/json")
    json.loads(data.text)
    code = next(s for s in scripts if "type" not in s.attrs).text
    for word in (
        "fetch(",
        "XMLHttpRequest",
        "import(",
        "WebSocket",
        "EventSource",
        "sendBeacon",
        "importScripts",
        "eval(",
    ):
        assert word not in code
    lowered = page.lower()
    for word in ("http:", "https:", "ftp:", "@import", "//cdn", "src="):
        assert word not in lowered
    assert re.findall(r"url\(([^)]*)\)", page) == ["#arr"]  # the arrowhead marker only
    assert re.search(r"<svg[^>]*\sxmlns=", page) is None  # inline SVG needs none


def test_nodes_are_drawn_in_forward_order():
    nodes, fusions, misses = resnet_like(40, miss_every=7)
    root = parse(render_html(nodes, fusions, misses, collapse=False))
    blocks = by_class(root, "blk")
    assert len(blocks) > 1
    ys = [translate(b)[1] for b in blocks]
    assert ys == sorted(ys)
    assert len(set(ys)) == len(ys)
    in_block = [{int(e.attrs["id"][1:]) for e in by_class(b, "n")} for b in blocks]
    # blocks hold consecutive runs of the forward order
    assert [i for s in in_block for i in sorted(s)] == list(range(len(nodes)))
    # inside a block, every edge goes down: a node sits below all its inputs there
    y_of = {}
    for b, members in zip(blocks, in_block, strict=True):
        for e in by_class(b, "n"):
            y_of[int(e.attrs["id"][1:])] = translate(b)[1] + translate(e)[1]
        for i in members:
            assert all(y_of[j] < y_of[i] for j in nodes[i].inputs if j in members)
    for path in by_class(root, "x"):  # edges between blocks run forward
        assert int(path.attrs["data-s"]) < int(path.attrs["data-d"])


def test_thousands_of_nodes_start_collapsed_except_where_a_near_miss_is():
    nodes, fusions, misses = resnet_like(700, miss_every=150)
    assert len(nodes) > 4000
    page = render_html(nodes, fusions, misses)
    root = check_map(page, nodes, fusions, misses)
    blocks = by_class(root, "blk")
    data = json.loads(
        next(e for e in root.walk() if e.attrs.get("id") == "map-data").text
    )
    assert len(data["blocks"]) == len(blocks)
    assert 10 <= len(blocks) <= 200
    with_miss = {int(b.attrs["data-block"]) for b in blocks if by_class(b, "nm")}
    assert len(with_miss) == len(misses)
    for b in blocks:
        k = int(b.attrs["data-block"])
        assert ("shut" in b.classes) == (k not in with_miss)
        assert data["blocks"][k][4] == int(k in with_miss)
        # a collapsed block shows one chip per fusion it holds
        chips = [c for c in by_class(b, "chip") if "miss" not in c.classes]
        assert len(chips) == len(by_class(b, "fusion"))
    # the page is one block per row while collapsed: far shorter than the open map
    height = int(next(e for e in root.walk() if e.tag == "svg").attrs["height"])
    open_height = int(
        next(
            e
            for e in parse(render_html(nodes, fusions, misses, collapse=False)).walk()
            if e.tag == "svg"
        ).attrs["height"]
    )
    assert height < open_height / 5


def test_small_graphs_start_open_and_collapse_can_be_forced():
    nodes, fusions, misses = resnet_like(8)
    assert not any(
        "shut" in b.classes
        for b in by_class(parse(render_html(nodes, fusions, [])), "blk")
    )
    shut = by_class(parse(render_html(nodes, fusions, misses, collapse=True)), "blk")
    assert all("shut" in b.classes for b in shut)


def test_one_fusion_across_module_scopes_is_one_group():
    nodes = [
        MapNode("x", "placeholder", "placeholder"),
        MapNode("a.conv", "call_module", "Conv2d", (0,), "a"),
        MapNode("b.inner.0", "call_module", "BatchNorm2d", (1,), "b.inner"),
        MapNode("c.act", "call_module", "ReLU", (2,), "c"),
        MapNode("output", "output", "output", (3,)),
    ]
    fusions = [MapFusion("Conv2d -> BatchNorm2d -> ReLU", (1, 2, 3), "ConvReLU2d")]
    root = check_map(render_html(nodes, fusions, []), nodes, fusions, [])
    (group,) = by_class(root, "fusion")
    assert len({id(b) for b in by_class(root, "blk") if group in list(b.walk())}) == 1


def test_folded_parameter_inputs_are_named_by_their_users():
    nodes = [
        MapNode("p_conv_weight", "placeholder", "placeholder", folded=True),
        MapNode("x", "placeholder", "placeholder"),
        MapNode("conv2d", "call_function", "conv2d.default", (0, 1), "conv"),
        MapNode("batch_norm", "call_function", "batch_norm.default", (2,), "bn"),
        MapNode("output", "output", "output", (3,)),
    ]
    fusions = [MapFusion("conv2d -> batch_norm", (0, 2, 3), "folded")]
    page = render_html(nodes, fusions, [])
    root = check_map(
        page, nodes, [MapFusion("conv2d -> batch_norm", (2, 3), "folded")], []
    )
    conv = next(e for e in by_class(root, "n") if e.attrs["id"] == "n2")
    assert "reads p_conv_weight" in conv.title()
    assert 'data-name="p_conv_weight"' not in page


@pytest.mark.parametrize(
    ("fusions", "misses", "nodes", "message"),
    [
        (
            [MapFusion("Conv2d -> BatchNorm2d", (1, 9), "Conv2d")],
            [],
            None,
            r"fusion 'Conv2d -> BatchNorm2d' refers to nodes \[9\] outside the 3 nodes",
        ),
        (
            [],
            [MapMiss("Linear -> ReLU", (), "why")],
            None,
            r"near miss 'Linear -> ReLU' refers to nodes \(\)",
        ),
        (
            [],
            [],
            [
                MapNode("x", "placeholder", "placeholder", (1,)),
                MapNode("y", "call_function", "relu", (0,)),
            ],
            r"node 0 \(x\) reads nodes \[1\]: inputs must be earlier nodes",
        ),
    ],
    ids=["fusion-out-of-range", "empty-near-miss", "input-not-earlier"],
)
def test_bad_input_is_a_clear_error(fusions, misses, nodes, message):
    nodes = nodes or [
        MapNode("x", "placeholder", "placeholder"),
        MapNode("c", "call_module", "Conv2d", (0,)),
        MapNode("b", "call_module", "BatchNorm2d", (1,)),
    ]
    with pytest.raises(ValueError, match=message):
        render_html(nodes, fusions, misses)


def test_fx_graphs_become_map_nodes_named_as_the_user_wrote_them():
    from tests.support.corpus import MODELS_BY_NAME

    gm = torch.fx.symbolic_trace(MODELS_BY_NAME["resnet18"].factory().eval())
    nodes, scope_types = fx_map_nodes(gm.graph, gm)
    fx_nodes = list(gm.graph.nodes)
    assert len(nodes) == len(fx_nodes)
    index = {n: i for i, n in enumerate(fx_nodes)}
    for n, m in zip(fx_nodes, nodes, strict=True):
        assert m.name == (n.target if n.op == "call_module" else n.name)
        assert m.op == n.op
        assert m.inputs == tuple(sorted(index[a] for a in n.all_input_nodes))
        assert all(j < index[n] for j in m.inputs)
    by_name = {m.name: m for m in nodes}
    assert by_name["layer1.0.conv1"].target == "Conv2d"
    assert by_name["layer1.0.conv1"].scope == "layer1.0"
    adds = [m for m in nodes if m.op == "call_function" and m.target == "add"]
    assert adds
    assert adds[0].scope == "layer1.0"
    assert scope_types["layer1.0"] == "BasicBlock"
    assert scope_types["layer1"] == "Sequential"


def test_exported_programs_draw_with_their_weights_folded():
    from tests.support.corpus import MODELS_BY_NAME

    case = MODELS_BY_NAME["resnet18"]
    program = torch.export.export(case.factory().eval(), case.example_inputs_factory())
    folded = exported_folded(program)
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    assert len(folded) == len(placeholders) - 1  # all but the image input x
    nodes, scope_types = fx_map_nodes(program.graph, program.graph_module, folded)
    assert [n.name for n in nodes if n.folded] == [
        n.name for n in placeholders if n.name in folded
    ]
    convs = [i for i, n in enumerate(nodes) if n.target == "conv2d.default"]
    assert scope_types["layer1.0"] == "BasicBlock"
    page = render_html(nodes, [], [])
    root = check_map(page, nodes, [], [])
    first = next(e for e in by_class(root, "n") if e.attrs["id"] == f"n{convs[0]}")
    assert "reads p_conv1_weight" in first.title()


# ---------------------------------------------------------------------------
# A real browser (Debian's chromium). CI sets PYFUSE_REQUIRE_BROWSER=1 and installs it.

_INSTALL = "apt-get install -y --no-install-recommends chromium"


_SANITIZER_ENV = {"LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC"}


def _chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        if os.environ.get("PYFUSE_REQUIRE_BROWSER") == "1":
            pytest.fail(
                f"PYFUSE_REQUIRE_BROWSER=1 but chromium is not installed ({_INSTALL})"
            )
        pytest.skip(
            f"chromium is not installed ({_INSTALL}); "
            "PYFUSE_REQUIRE_BROWSER=1 makes this a failure"
        )
    return exe


def _browser(
    exe: str, tmp: Path, url: str, *extra: str
) -> subprocess.CompletedProcess[bytes]:
    profile = tmp / f"profile-{time.monotonic_ns()}"
    # the browser is a tool here, not under test: without the sanitizer runtimes
    # ./dev sanitize preloads into every process the suite starts
    env = {k: v for k, v in os.environ.items() if k not in _SANITIZER_ENV}
    return subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *extra,
            url,
        ],
        capture_output=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def test_browser_screenshot_of_a_1000_node_map_shows_the_graph(tmp_path):
    from PIL import Image

    exe = _chromium()
    nodes, fusions, misses = resnet_like(142, miss_every=20)
    assert len(nodes) == 1000
    page = tmp_path / "map.html"
    page.write_text(
        render_html(nodes, fusions, misses, collapse=False), encoding="utf-8"
    )
    png = tmp_path / "map.png"
    t0 = time.perf_counter()
    r = _browser(
        exe,
        tmp_path,
        page.as_uri(),
        f"--screenshot={png}",
        "--window-size=1280,900",
        "--hide-scrollbars",
    )
    # The time is reported, not asserted: a timed assertion would fail on a busy
    # machine without anything being wrong with the page.
    print(
        f"\n[htmlmap] headless screenshot of 1,000 nodes: {time.perf_counter() - t0:.2f} s"
    )
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 900)
    graph = image.crop((360, 0, 1280, 900))  # right of the side panel
    pixels = list(graph.getdata())
    inked = sum(1 for p in pixels if p != (255, 255, 255))
    assert inked > 0.1 * len(pixels), "the graph area is nearly blank"
    assert len(set(pixels)) > 50
    # fusion groups are tinted with their pattern's colour (blue #1f77b4, green #2ca02c)
    blue = sum(1 for r, g, b in pixels if b > r + 40 and b > g + 10)
    green = sum(1 for r, g, b in pixels if g > r + 30 and g > b + 30)
    assert blue > 2000, (blue, green)
    assert green > 500, (blue, green)


def test_browser_runs_the_script_jump_to_a_node_opens_its_block(tmp_path):
    exe = _chromium()
    nodes, fusions, misses = resnet_like(300, miss_every=100)
    page = tmp_path / "map.html"
    page.write_text(render_html(nodes, fusions, misses), encoding="utf-8")
    target = "layer3.20.bn2"
    before = {
        int(b.attrs["data-block"]): b for b in by_class(parse(page.read_text()), "blk")
    }
    shut_block = next(
        k
        for k, b in before.items()
        if "shut" in b.classes
        and any(e.attrs["data-name"] == target for e in by_class(b, "n"))
    )
    r = _browser(exe, tmp_path, page.as_uri() + "#" + target, "--dump-dom")
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    dom = parse(r.stdout.decode())
    body = next(e for e in dom.walk() if e.tag == "body")
    assert body.attrs.get("data-ready") == "1", (
        "the map's script did not run to its end"
    )
    after = {int(b.attrs["data-block"]): b for b in by_class(dom, "blk")}
    assert "shut" not in after[shut_block].classes
    assert all(
        ("shut" in after[k].classes) == ("shut" in b.classes)
        for k, b in before.items()
        if k != shut_block
    )
    # the blocks below moved down to make room for the opened one
    moved = [k for k in after if translate(after[k])[1] != translate(before[k])[1]]
    assert moved == [k for k in after if k > shut_block]
