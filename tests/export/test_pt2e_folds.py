"""pyfuse.pt2e's folds on hand-picked exported models: where torchao is right
(identical), where it is wrong (pyfuse skips with a reason, the output stays the
unfolded model's), nothing half-changed on failure, and the torchao patch."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule

from pyfuse import pt2e
from pyfuse.errors import GraphModuleRequired
from pyfuse.export import inplace
from tests.export.fuzzmodels import to_native
from tests.export.helpers import (
    assert_same_fold,
    max_rel_diff,
    outputs,
    quiet,
    torchao_folds,
)

aten = torch.ops.aten


def _stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Strongly non-identity BatchNorm statistics, so a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.running_mean is not None:
                    m.running_mean.copy_(
                        torch.rand(m.running_mean.shape, generator=g) * 2 - 1
                    )
                    m.running_var.copy_(
                        torch.rand(m.running_var.shape, generator=g) * 2 + 0.3
                    )
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 1.5 + 0.5)
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 2 - 1)
    return model.eval()


def _prepare(model: nn.Module, *inputs: torch.Tensor) -> Callable[[], GraphModule]:
    ep = torch.export.export(_stats(model), inputs)
    return ep.module


def _norms(gm: GraphModule) -> int:
    return sum(
        n.target
        in (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default)
        for n in gm.graph.nodes
    )


_BN_TARGETS = (
    torch.ops.aten.batch_norm.default,
    torch.ops.aten._native_batch_norm_legit_no_training.default,
)


def _fold_both(
    make: Callable[[], GraphModule],
) -> tuple[GraphModule, GraphModule, list[str]]:
    conv_ao, linear_ao = torchao_folds()
    ref, ours = make(), make()
    with quiet():
        conv_ao(ref)
        linear_ao(ref)
    reports = [pt2e.fuse_conv_bn_(ours), pt2e.fuse_linear_bn_(ours)]
    return ref, ours, [s.reason for r in reports for s in r.skipped]


class ConvBnAdd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


class SharedConvTwoBns(nn.Module):
    def __init__(self, bias: bool, same_bn: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(3)
        self.bn2 = self.bn1 if same_bn else nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv(torch.relu(self.bn1(self.conv(x)))))


class LinearBnTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.fc(x)
        return self.bn(y), y * 2


@pytest.mark.quick
def test_conv_output_read_elsewhere_is_kept() -> None:
    x = torch.randn(2, 3, 6, 6)
    model = ConvBnAdd()
    ref, ours, reasons = _fold_both(_prepare(model, x))
    assert reasons == ["conv output also read by add"]
    assert _norms(ours) == 1
    unfolded = outputs(model, (x,))
    assert max_rel_diff(outputs(ours, (x,)), unfolded) < 1e-6
    assert max_rel_diff(outputs(ref, (x,)), unfolded) > 1e-2  # torchao folds it anyway


@pytest.mark.quick
def test_conv_called_twice_with_two_bns_is_kept() -> None:
    x = torch.randn(2, 3, 6, 6)
    model = SharedConvTwoBns(bias=True, same_bn=False)
    ref, ours, reasons = _fold_both(_prepare(model, x))
    assert reasons == ["conv weight shared by 2 convs with different BNs"] * 2
    assert _norms(ours) == 2
    unfolded = outputs(model, (x,))
    assert max_rel_diff(outputs(ours, (x,)), unfolded) < 1e-6
    assert (
        max_rel_diff(outputs(ref, (x,)), unfolded) > 1e-2
    )  # torchao drops the second BN


def test_conv_called_twice_with_the_same_bn_folds_as_torchao() -> None:
    x = torch.randn(2, 3, 6, 6)
    ref, ours, reasons = _fold_both(
        _prepare(SharedConvTwoBns(bias=True, same_bn=True), x)
    )
    assert reasons == []
    assert _norms(ours) == 0
    assert_same_fold(ref, ours, (x,))


def test_biasless_conv_called_twice_with_the_same_bn_folds_once() -> None:
    x = torch.randn(2, 3, 6, 6)
    model = SharedConvTwoBns(bias=False, same_bn=True)
    ref, ours, reasons = _fold_both(_prepare(model, x))
    assert reasons == []
    assert _norms(ours) == 0
    assert [n for n, _ in ours.named_parameters()].count("conv.weight_bias") == 1
    unfolded = outputs(model, (x,))
    assert max_rel_diff(outputs(ours, (x,)), unfolded) < 1e-6
    # torchao's second fold overwrites the folded bias with zeros
    assert max_rel_diff(outputs(ref, (x,)), unfolded) > 1e-2


def test_linear_output_read_elsewhere_is_kept() -> None:
    x = torch.randn(5, 4)
    model = LinearBnTwice()
    ref, ours, reasons = _fold_both(_prepare(model, x))
    assert reasons == ["linear output also read by mul"]
    unfolded = outputs(model, (x,))
    assert max_rel_diff(outputs(ours, (x,)), unfolded) < 1e-6
    assert max_rel_diff(outputs(ref, (x,)), unfolded) > 1e-2


@pytest.mark.quick
def test_training_bn_folds_with_running_statistics_as_torchao() -> None:
    """prepare_pt2e makes an inference model: torchao folds a training-mode
    BatchNorm with its running statistics, and so does the drop-in."""
    x = torch.randn(4, 3, 6, 6)
    model = _stats(nn.Sequential(nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3)))
    model[1].train()
    make = torch.export.export(model, (x,)).module
    ref, ours, reasons = _fold_both(make)
    assert reasons == []
    assert not [n for n in ours.graph.nodes if n.target in _BN_TARGETS]
    assert_same_fold(ref, ours, (x,))
    report = pt2e.fuse_conv_bn_(make())
    assert [f.fused_type for f in report.fused] == [
        "folded, training-mode BatchNorm: running statistics"
    ]
    in_eval = outputs(model.eval(), (x,))
    assert max_rel_diff(outputs(ours, (x,)), in_eval) < 1e-6
    assert max_rel_diff(outputs(make(), (x,)), in_eval) > 1e-2  # batch statistics


class ConvBnTwiceInTraining(nn.Module):
    """One training-mode BatchNorm called after two convs: the first call
    updates the running statistics the second reads."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c2(self.bn(self.c1(x))))


def test_training_bn_called_twice_is_kept() -> None:
    x = torch.randn(4, 3, 6, 6)
    model = _stats(ConvBnTwiceInTraining()).train()
    make = torch.export.export(model, (x,)).module
    ours = make()
    report = pt2e.fuse_conv_bn_(ours)
    assert not report.fused
    assert sorted(s.reason for s in report.skipped) == [
        "training-mode BatchNorm's running statistics also read by batch_norm",
        "training-mode BatchNorm's running statistics also read by batch_norm_1",
    ]
    assert ours.code == make().code


def test_bn_without_running_stats_is_kept() -> None:
    x = torch.randn(4, 3, 6, 6)
    model = nn.Sequential(
        nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3, track_running_stats=False)
    )
    make = _prepare(model, x)
    ours = make()
    report = pt2e.fuse_conv_bn_(ours)
    assert [s.reason for s in report.skipped] == [
        "BatchNorm has no running_mean (track_running_stats=False)"
    ]
    assert max_rel_diff(outputs(ours, (x,)), outputs(model, (x,))) < 1e-6
    conv_ao, _ = torchao_folds()
    with pytest.raises(TypeError), quiet():
        conv_ao(make())  # torchao adds eps to None


@pytest.mark.quick
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_grouped_conv_transpose_folds_correctly(dim: int) -> None:
    conv = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[dim - 1]
    bn = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[dim - 1]
    model = nn.Sequential(conv(4, 6, 3, padding=1, groups=2), bn(6))
    x = torch.randn((2, 4) + (5,) * dim)
    make = _prepare(model, x)
    ours = make()
    report = pt2e.fuse_conv_bn_(ours)
    assert len(report.fused) == 1
    assert _norms(ours) == 0
    assert max_rel_diff(outputs(ours, (x,)), outputs(model, (x,))) < 1e-6
    conv_ao, _ = torchao_folds()
    with pytest.raises(RuntimeError), quiet():
        conv_ao(make())  # torchao scales the weight as if groups were 1


def test_linear_on_3d_input_is_kept_as_torchao_does() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, 5)
            self.bn = nn.BatchNorm1d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.fc(x))

    x = torch.randn(2, 3, 5)
    ref, ours, reasons = _fold_both(_prepare(M(), x))
    assert reasons == [
        (
            "linear input is 3-D: BatchNorm normalizes dim 1, linear "
            "transforms the last dim"
        )
    ]
    assert_same_fold(ref, ours, (x,))


def test_native_batch_norm_form_folds_as_torchao() -> None:
    x = torch.randn(2, 3, 6, 6)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 1),
        nn.BatchNorm2d(4),
    )
    make = _prepare(model, x)
    ref, ours, reasons = _fold_both(lambda: to_native(make()))
    assert reasons == []
    assert _norms(ours) == 0
    assert_same_fold(ref, ours, (x,))


def test_no_batch_norm_leaves_the_module_alone() -> None:
    x = torch.randn(2, 3, 6, 6)
    gm = _prepare(nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU()), x)()
    dead = gm.graph.get_attr("0.weight")  # dead code a whole-graph pass would remove
    code = gm.code
    assert pt2e.fuse_conv_bn_(gm).fused == []
    assert gm.code == code
    assert dead in gm.graph.nodes


def test_rejects_a_non_graph_module() -> None:
    with pytest.raises(GraphModuleRequired, match="GraphModule"):
        pt2e.fuse_conv_bn_(nn.Conv2d(1, 1, 1))  # type: ignore[arg-type]


class Deep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(3, 3, 3, padding=1, bias=i % 2 == 0) for i in range(4)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(3) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c, b in zip(self.convs, self.bns, strict=True):
            x = torch.relu(b(c(x)))
        return x


def _state(
    gm: GraphModule,
) -> tuple[str, list[tuple[str, int]], list[tuple[object, ...]]]:
    return (
        gm.code,
        [(k, id(v)) for k, v in gm.state_dict(keep_vars=True).items()],
        [(n.name, n.args, tuple(n.users)) for n in gm.graph.nodes],
    )


@pytest.mark.quick
def test_fold_raising_mid_pass_leaves_the_module_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = torch.randn(2, 3, 6, 6)
    gm = _prepare(Deep(), x)()
    before = _state(gm)
    calls = 0
    real = inplace.fold_weights

    def flaky(*args: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("fold failed")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(inplace, "fold_weights", flaky)
    with pytest.raises(RuntimeError, match="fold failed"):
        pt2e.fuse_conv_bn_(gm)
    assert _state(gm) == before


@pytest.mark.quick
def test_edit_raising_mid_pass_is_rolled_back(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(2, 3, 6, 6)
    gm = _prepare(Deep(), x)()
    before = _state(gm)
    expected = outputs(gm, (x,))
    calls = 0
    real = nn.Module.register_parameter

    def flaky(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:  # the third group: two folds already made
            raise RuntimeError("setter failed")
        real(self, name, param)

    monkeypatch.setattr(nn.Module, "register_parameter", flaky)
    with pytest.raises(RuntimeError, match="setter failed"):
        pt2e.fuse_conv_bn_(gm)
    monkeypatch.undo()
    assert _state(gm) == before
    gm.recompile()
    assert torch.equal(outputs(gm, (x,))[0], expected[0])


def test_getter_raising_leaves_the_module_unchanged() -> None:
    x = torch.randn(2, 3, 6, 6)
    gm = _prepare(Deep(), x)()
    before = _state(gm)
    del gm.bns.get_submodule("2")._buffers[
        "running_var"
    ]  # the third BN loses its stats
    with pytest.raises(RuntimeError, match="running_var"):
        pt2e.fuse_conv_bn_(gm)
    assert _state(gm)[0] == before[0]
    assert _state(gm)[2] == before[2]


@pytest.mark.quick
def test_patch_torchao_routes_prepare_pt2e_through_pyfuse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with quiet():
        from torchao.quantization.pt2e import quantize_pt2e, utils
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )
    originals = (
        utils._fuse_conv_bn_,
        utils._fuse_linear_bn_,
        quantize_pt2e._fuse_conv_bn_,
        quantize_pt2e._fuse_linear_bn_,
    )
    calls: list[str] = []
    real_conv, real_linear = pt2e.fuse_conv_bn_, pt2e.fuse_linear_bn_

    def conv(m: GraphModule) -> object:
        calls.append("conv")
        return real_conv(m)

    def linear(m: GraphModule) -> object:
        calls.append("linear")
        return real_linear(m)

    monkeypatch.setattr(pt2e, "fuse_conv_bn_", conv)
    monkeypatch.setattr(pt2e, "fuse_linear_bn_", linear)
    x = torch.randn(2, 3, 6, 6)
    model = _stats(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()))
    quantizer = X86InductorQuantizer().set_global(
        get_default_x86_inductor_quantization_config()
    )
    with pt2e.patched_torchao():
        assert utils._fuse_conv_bn_ is not originals[0]
        with quiet():
            prepared = quantize_pt2e.prepare_pt2e(
                torch.export.export(model, (x,)).module(), quantizer
            )
    assert calls == ["conv", "linear"]
    assert _norms(prepared) == 0
    assert (
        utils._fuse_conv_bn_,
        utils._fuse_linear_bn_,
        quantize_pt2e._fuse_conv_bn_,
        quantize_pt2e._fuse_linear_bn_,
    ) == originals
    pt2e.patch_torchao()
    pt2e.patch_torchao()  # idempotent
    pt2e.unpatch_torchao()
    assert utils._fuse_conv_bn_ is originals[0]
    assert quantize_pt2e._fuse_linear_bn_ is originals[3]


def test_functional_conv_with_a_shared_weight_read_elsewhere() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 3, 3, 3))
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(F.conv2d(x, self.w, padding=1)) + self.w.sum()

    x = torch.randn(2, 3, 6, 6)
    model = M()
    ref, ours, reasons = _fold_both(_prepare(model, x))
    assert reasons == ["conv weight also read by sum_1"]
    assert max_rel_diff(outputs(ours, (x,)), outputs(model, (x,))) < 1e-6
    assert max_rel_diff(outputs(ref, (x,)), outputs(model, (x,))) > 1e-2
