"""A small DOM built with html.parser, to check generated HTML pages (the fusion
map) by their elements, classes, attributes and titles."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

_VOID = {
    "meta",
    "br",
    "input",
    "img",
    "link",
    "hr",
    "source",
    "wbr",
    "area",
    "base",
    "col",
    "embed",
    "param",
    "track",
}


@dataclass
class El:
    tag: str
    attrs: dict[str, str]
    parent: El | None
    children: list[El] = field(default_factory=list)
    text: str = ""

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()

    def title(self) -> str:
        return next((c.text for c in self.children if c.tag == "title"), "")

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() for c in self.children)


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = El("#root", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        el = El(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(el)
        if tag not in _VOID:
            self.cur = el

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(El(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag):
        el = self.cur
        while el is not None and el.tag != tag:
            el = el.parent
        assert el is not None, f"unbalanced </{tag}>"
        assert el.parent is not None, f"unbalanced </{tag}>"
        self.cur = el.parent

    def handle_data(self, data):
        self.cur.text += data


def parse(page: str) -> El:
    dom = _Dom()
    dom.feed(page)
    dom.close()
    assert dom.cur is dom.root, f"unclosed <{dom.cur.tag}>"
    return dom.root


def by_class(root: El, cls: str) -> list[El]:
    return [e for e in root.walk() if cls in e.classes]


def translate(el: El) -> tuple[float, float]:
    m = re.fullmatch(r"translate\(([-\d.]+),([-\d.]+)\)", el.attrs.get("transform", ""))
    assert m, el.attrs
    return float(m[1]), float(m[2])


def check_map(page: str, nodes, fusions, misses) -> El:
    """Check a fusion map page against the data it was drawn from (pyfuse.htmlmap's
    MapNode / MapFusion / MapMiss lists): every node once, every fusion a group of
    exactly its nodes, every near miss a group carrying its reason (attribute, hover
    title, members' titles, side list). Returns the parsed page."""
    root = parse(page)
    node_els = by_class(root, "n")
    assert sorted(int(e.attrs["id"][1:]) for e in node_els) == [
        i for i, n in enumerate(nodes) if not n.folded
    ]
    names = {e.attrs["id"]: e.attrs["data-name"] for e in node_els}
    assert all(names[f"n{i}"] == n.name for i, n in enumerate(nodes) if not n.folded)

    groups = by_class(root, "fusion")
    assert sorted(int(g.attrs["data-fusion"]) for g in groups) == list(
        range(len(fusions))
    )
    for g in groups:
        f = fusions[int(g.attrs["data-fusion"])]
        assert g.tag == "g"
        assert g.attrs["data-pattern"] == f.pattern
        assert g.attrs["data-fused"] == f.fused_type
        members = sorted(int(e.attrs["id"][1:]) for e in by_class(g, "n"))
        assert members == sorted(f.nodes)
        assert f.pattern in g.title()
        assert all("fused" in e.classes for e in by_class(g, "n"))

    miss_els = by_class(root, "miss")
    miss_groups = [e for e in miss_els if e.tag == "g"]
    assert sorted(int(g.attrs["data-miss"]) for g in miss_groups) == list(
        range(len(misses))
    )
    by_id = {e.attrs["id"]: e for e in node_els}
    side = {
        int(li.attrs["data-miss"]): li
        for li in root.walk()
        if li.tag == "li" and "data-miss" in li.attrs
    }
    for g in miss_groups:
        m = misses[int(g.attrs["data-miss"])]
        assert g.attrs["data-reason"] == m.reason
        assert g.attrs["data-pattern"] == m.pattern
        assert m.reason in g.title()
        for i in m.nodes:
            member = by_id[f"n{i}"]
            assert "nm" in member.classes
            assert m.reason in member.title()
        assert m.reason in side[int(g.attrs["data-miss"])].all_text()
    return root
