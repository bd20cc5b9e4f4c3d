"""The installed ``pyfuse`` command on a user's model file, and one way of naming
a fusion in every output (explain, fuse, JSON, the fusion map)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

import pyfuse
from pyfuse.report import fusion_lines
from tests.support.htmldom import by_class, check_map, parse

# A user's model file, as a new user writes it next to where they run pyfuse.
MODEL_FILE = """\
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(Block(8), Block(8))
        self.head = nn.Conv2d(8, 8, 1)
        self.head_bn = nn.BatchNorm2d(8)

    def forward(self, x):
        x = self.layer1(torch.relu(self.bn(self.stem(x))))
        h = self.head(x)
        return self.head_bn(h) + h  # two users of head: a near miss


def net():
    return Net()


instance = Net()
"""

EXPECTED_FUSED = [
    ("Conv2d -> BatchNorm2d", ["stem", "bn"], "Conv2d"),
    (
        "Conv2d -> BatchNorm2d -> ReLU",
        ["layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu"],
        "ConvReLU2d",
    ),
    ("Conv2d -> BatchNorm2d", ["layer1.0.conv2", "layer1.0.bn2"], "Conv2d"),
    (
        "Conv2d -> BatchNorm2d -> ReLU",
        ["layer1.1.conv1", "layer1.1.bn1", "layer1.1.relu"],
        "ConvReLU2d",
    ),
    ("Conv2d -> BatchNorm2d", ["layer1.1.conv2", "layer1.1.bn2"], "Conv2d"),
]


def _console_script() -> Path:
    """The installed ``pyfuse`` entry point of this environment (not ``python -m``)."""
    script = Path(sysconfig.get_path("scripts")) / "pyfuse"
    assert script.is_file(), (
        f"pyfuse is not installed as a console script in {script.parent}"
    )
    return script


def _run(cwd: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        list(cmd),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _pyfuse(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(cwd, str(_console_script()), *args)


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    d = tmp_path / "project"
    d.mkdir()
    (d / "models.py").write_text(MODEL_FILE)
    return d


def test_console_script_imports_the_model_file_in_the_current_directory(user_dir):
    r = _pyfuse(user_dir, "explain", "models:net", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert [
        (f["pattern"], f["nodes"], f["fused_type"]) for f in got["fused"]
    ] == EXPECTED_FUSED
    assert [(s["pattern"], s["nodes"], s["reason"]) for s in got["near_misses"]] == [
        ("Conv2d -> BatchNorm2d", ["head", "head_bn"], "head has 2 users")
    ]
    # an nn.Module instance works as well as a factory
    r = _pyfuse(user_dir, "explain", "models:instance", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["fused"]) == len(EXPECTED_FUSED)


def test_app_dir_points_elsewhere_and_the_error_says_where_it_looked(
    user_dir, tmp_path
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = _pyfuse(elsewhere, "fuse", "models:net")
    assert r.returncode == 2
    assert r.stdout == ""
    (line,) = r.stderr.strip().splitlines()
    assert "cannot load 'models:net'" in line
    assert "no module 'models'" in line
    assert str(elsewhere) in line
    assert "current directory" in line
    assert "--app-dir" in line

    r = _pyfuse(elsewhere, "fuse", "models:net", "--app-dir", str(user_dir))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"fused {len(EXPECTED_FUSED)} chains")

    r = _pyfuse(
        elsewhere, "explain", "models:net", "--app-dir", str(tmp_path / "missing")
    )
    assert r.returncode == 2
    assert "is not a directory" in r.stderr
    # a file path names its directory's module
    r = _pyfuse(elsewhere, "explain", f"{user_dir / 'models.py'}:net", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["fused"]) == len(EXPECTED_FUSED)


def test_errors_in_the_users_module_are_one_clear_line(user_dir):
    r = _pyfuse(user_dir, "explain", "models:resnet50")
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "has no attribute 'resnet50'" in line
    assert str(user_dir / "models.py") in line

    (user_dir / "broken.py").write_text("import torchvision_not_installed\n")
    r = _pyfuse(user_dir, "explain", "broken:net")
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "importing 'broken' failed" in line
    assert "torchvision_not_installed" in line

    (user_dir / "raises.py").write_text("raise RuntimeError('no GPU here')\n")
    r = _pyfuse(user_dir, "explain", "raises:net")
    assert r.returncode == 2
    assert "RuntimeError: no GPU here" in r.stderr

    (user_dir / "notmodel.py").write_text("def net():\n    return 42\n")
    r = _pyfuse(user_dir, "explain", "notmodel:net")
    assert r.returncode == 2
    assert "returned int, not an nn.Module" in r.stderr


def test_explain_and_fuse_name_every_fusion_the_same_way(user_dir):
    ex = _pyfuse(user_dir, "explain", "models:net", "--json")
    fu = _pyfuse(user_dir, "fuse", "models:net", "--json")
    assert ex.returncode == 0, ex.stderr
    assert fu.returncode == 0, fu.stderr
    assert json.loads(ex.stdout)["fused"] == json.loads(fu.stdout)["fused"]

    ex = _pyfuse(user_dir, "explain", "models:net")
    fu = _pyfuse(user_dir, "fuse", "models:net")
    table = fusion_lines(
        [pyfuse.report.Fused(p, tuple(n), tuple(n), t) for p, n, t in EXPECTED_FUSED]
    )
    for out in (ex.stdout, fu.stdout):
        lines = out.splitlines()
        start = lines.index(table[0])
        assert lines[start : start + len(table)] == table


def test_reports_list_nodes_in_forward_order_with_module_paths():
    from tests.support.corpus import MODELS_BY_NAME

    model = MODELS_BY_NAME["resnet18"].factory().eval()
    gm = torch.fx.symbolic_trace(model)
    position = {}
    for i, n in enumerate(gm.graph.nodes):
        position.setdefault(n.target if n.op == "call_module" else n.name, i)
    ex = pyfuse.explain(gm)
    _, report = pyfuse.fuse(torch.fx.symbolic_trace(model), False, return_report=True)
    assert ex.fused == report.fused
    for f in report.fused:
        assert all(isinstance(gm.get_submodule(p), torch.nn.Module) for p in f.modules)
        assert [position[n] for n in f.nodes] == sorted(position[n] for n in f.nodes)
        assert f.modules == tuple(n for n in f.nodes if n in dict(gm.named_modules()))
    assert report.fused[1].nodes == ("layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu")


def test_skipped_and_near_misses_use_the_same_names():
    from tests.support.corpus import MODELS_BY_NAME

    ex = pyfuse.explain(MODELS_BY_NAME["multi_user"].factory().eval())
    assert [(s.pattern, s.nodes, s.reason) for s in ex.near_misses] == [
        ("Conv2d -> BatchNorm2d", ("conv1", "bn1"), "conv1 has 2 users"),
        # partly fused by a shorter pattern: the longer chain is still a near miss
        ("Conv2d -> BatchNorm2d -> ReLU", ("conv2", "bn2", "relu"), "bn2 has 2 users"),
        (
            "Conv2d -> BatchNorm2d -> relu",
            ("conv5", "bn5", "relu_1"),
            "conv5 has 2 users",
        ),
    ]
    # a module called at two sites: both call sites fuse, named by the module path
    assert [f.nodes for f in ex.fused if "shared_bn" in f.nodes] == [
        ("conv3", "shared_bn"),
        ("conv4", "shared_bn"),
    ]


def test_explain_html_writes_the_fusion_map(user_dir):
    r = _pyfuse(user_dir, "explain", "models:net", "--html", "map.html")
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith("fusion map: map.html")
    page = (user_dir / "map.html").read_text(encoding="utf-8")
    root = parse(page)
    groups = by_class(root, "fusion")
    assert [(g.attrs["data-pattern"], g.attrs["data-fused"]) for g in groups] == [
        (p, t) for p, _, t in EXPECTED_FUSED
    ]
    for g, (_, names, _) in zip(groups, EXPECTED_FUSED, strict=True):
        assert [e.attrs["data-name"] for e in by_class(g, "n")] == names
    (miss,) = [e for e in by_class(root, "miss") if e.tag == "g"]
    assert miss.attrs["data-reason"] == "head has 2 users"
    assert "models:net" in next(e for e in root.walk() if e.tag == "title").text

    r = _pyfuse(
        user_dir, "explain", "models:net", "--html", str(user_dir / "no" / "map.html")
    )
    assert r.returncode == 2
    assert "cannot write" in r.stderr


def test_to_html_draws_what_explain_reports():
    from tests.support.corpus import MODELS_BY_NAME

    model = MODELS_BY_NAME["multi_user"].factory().eval()
    ex = pyfuse.explain(model)
    page = ex.to_html()
    assert ex.graph is not None
    nodes = ex.graph.nodes
    check_map(page, nodes, ex.graph.fusions, ex.graph.near_misses)
    for f, drawn in zip(ex.fused, ex.graph.fusions, strict=True):
        assert tuple(nodes[i].name for i in drawn.nodes) == f.nodes
        assert (drawn.pattern, drawn.fused_type) == (f.pattern, f.fused_type)
    for s, drawn in zip(ex.near_misses, ex.graph.near_misses, strict=True):
        assert tuple(nodes[i].name for i in drawn.nodes) == s.nodes
        assert drawn.reason == s.reason
    with pytest.raises(ValueError, match="no graph to draw"):
        pyfuse.Explanation().to_html()


def test_to_html_includes_the_matches_the_pass_skips():
    from tests.support.corpus import GetAttrOfFused

    ex = pyfuse.explain(GetAttrOfFused().eval())  # the pass skips its conv-bn match
    skipped = [s for s in ex.near_misses if "get_attr" in s.reason]
    assert skipped, ex.near_misses
    root = parse(ex.to_html())
    reasons = [e.attrs["data-reason"] for e in by_class(root, "miss") if e.tag == "g"]
    assert reasons == [s.reason for s in ex.near_misses]
    assert skipped[0].nodes == ("conv", "bn")


def test_python_m_and_the_console_script_agree(user_dir):
    via_m = _run(
        user_dir, sys.executable, "-m", "pyfuse", "explain", "models:net", "--json"
    )
    via_script = _pyfuse(user_dir, "explain", "models:net", "--json")
    assert via_m.returncode == via_script.returncode == 0, (
        via_m.stderr + via_script.stderr
    )
    assert via_m.stdout == via_script.stdout
