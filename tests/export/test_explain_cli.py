"""The export flow's explain (folds and near misses, nothing changed) and the
``pyfuse fold`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pyfuse.__main__ import main
from pyfuse.export.explain import explain_exported, is_exported


class Mixed(nn.Module):
    """One foldable pair, one conv read by an add, one conv called twice under
    two BatchNorms."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(4)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.bn_b = nn.BatchNorm2d(4)
        self.c = nn.Conv2d(4, 4, 1)
        self.bn_c1 = nn.BatchNorm2d(4)
        self.bn_c2 = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn_a(self.a(x)))
        y = self.b(x)
        x = self.bn_b(y) + y
        return self.bn_c2(self.c(self.bn_c1(self.c(x))))


def small_model() -> nn.Module:
    """The factory the CLI test loads by name."""
    torch.manual_seed(0)
    return Mixed()


EXPECTED_MISSES = {
    ("conv2d_1", "batch_norm_1"): "conv output also read by add",
    ("conv2d_2", "batch_norm_2"): "conv weight shared by 2 convs with different BNs",
    ("conv2d_3", "batch_norm_3"): "conv weight shared by 2 convs with different BNs",
}


@pytest.fixture(scope="module")
def program() -> torch.export.ExportedProgram:
    return torch.export.export(small_model().eval(), (torch.randn(1, 3, 8, 8),))


def test_explain_exported_program_and_module(
    program: torch.export.ExportedProgram,
) -> None:
    gm = program.module()
    code = gm.code
    graph = str(program.graph)
    for obj in (program, gm):
        fused, misses = explain_exported(obj)
        assert [(f.nodes, f.modules) for f in fused] == [
            (("conv2d", "batch_norm"), ("a.weight", "a.bias"))
        ]
        assert {m.nodes: m.reason for m in misses} == EXPECTED_MISSES
    assert gm.code == code
    assert str(program.graph) == graph


def test_the_fusion_map_draws_the_exported_graph(
    program: torch.export.ExportedProgram,
) -> None:
    import pyfuse
    from tests.support.htmldom import check_map

    for obj in (program, program.module()):
        ex = pyfuse.explain(obj)
        g = ex.graph
        assert g is not None
        check_map(ex.to_html("exported"), g.nodes, g.fusions, g.near_misses)
        names = [n.name for n in g.nodes]
        assert [[names[i] for i in f.nodes] for f in g.fusions] == [
            ["conv2d", "batch_norm"]
        ]
        assert {
            tuple(names[i] for i in m.nodes): m.reason for m in g.near_misses
        } == EXPECTED_MISSES
        weights = [n for n in g.nodes if n.folded]
        assert (len(weights) > 0) is (obj is program)  # a program's weights fold


def test_is_exported(program: torch.export.ExportedProgram) -> None:
    assert is_exported(program)
    assert is_exported(program.module())
    assert not is_exported(torch.fx.symbolic_trace(small_model()))
    assert not is_exported(small_model())


def test_fold_command_saves_a_folded_program(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.pt2"
    assert (
        main(
            [
                "fold",
                "tests.export.test_explain_cli:small_model",
                "--input-shape",
                "2,3,8,8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert text.startswith("folded 1 BatchNorm(s)")
    assert (
        "not folded: conv2d -> batch_norm at conv2d_1, batch_norm_1: conv output also "
        "read by add" in text
    )
    loaded = torch.export.load(out)
    x = torch.randn(2, 3, 8, 8)
    model = small_model().eval()
    with torch.no_grad():
        assert torch.allclose(loaded.module()(x), model(x), atol=1e-5)
    assert "bn_a.running_mean" not in loaded.state_dict
    assert "bn_b.running_mean" in loaded.state_dict


def test_fold_command_json_and_decompose(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "fold",
                "tests.export.test_explain_cli:small_model",
                "--input-shape",
                "1,3,8,8",
                "--decompose",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert [f["pattern"] for f in result["folded"]] == [
        "convolution -> _native_batch_norm_legit_no_training"
    ]
    assert len(result["not_folded"]) == 3
    assert result["max_abs_difference"] < 1e-5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("nomodule", "--input-shape", "1"), "MODULE:FACTORY"),
        (
            ("tests.export.test_explain_cli:missing", "--input-shape", "1"),
            "cannot load",
        ),
        (
            ("tests.export.test_explain_cli:small_model", "--input-shape", "1,x"),
            "integers",
        ),
    ],
)
def test_fold_command_bad_input(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fold", *argv]) == 2
    assert message in capsys.readouterr().err
