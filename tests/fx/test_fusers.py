"""pyfuse's fast module construction equals torch's own, attribute for attribute.

The corpus compares fused models through their public surface (code, module tree,
state_dict, flags, outputs); these tests compare the objects themselves: every
``__dict__`` entry, container types, and that nothing mutable is shared.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.ao.nn import intrinsic as nni

import pyfuse
from pyfuse import _core
from pyfuse.fx import fusers
from tests.support.contract import assert_same_fusion, run_both
from tests.support.corpus import MODELS_BY_NAME


def _assert_same_state(
    made: nn.Module, want: nn.Module, shared: tuple[str, ...] = ()
) -> None:
    """Same class, same __dict__ keys in the same order, equal values of the same
    types; containers fresh (not the same object as in `want`) except `shared`."""
    assert type(made) is type(want)
    a, b = made.__dict__, want.__dict__
    assert list(a) == list(b)
    for k in a:
        assert type(a[k]) is type(b[k]), k
        if k in ("_modules", "_parameters"):
            continue
        assert a[k] == b[k], k
        if isinstance(a[k], (dict, list, set)) and k not in shared:
            assert a[k] is not b[k], k


def test_new_relu_is_a_constructed_relu():
    for training in (True, False):
        want = nn.ReLU()
        want.training = training
        made = fusers.new_relu(training)
        _assert_same_state(made, want)
        assert made.training is training
        other = fusers.new_relu(training)
        for k, v in made.__dict__.items():
            if isinstance(v, (dict, set)):
                assert v is not other.__dict__[k], f"{k} shared between two ReLUs"


@pytest.mark.parametrize(
    ("cls", "conv"),
    [
        (nni.ConvReLU1d, nn.Conv1d),
        (nni.ConvReLU2d, nn.Conv2d),
        (nni.ConvReLU3d, nn.Conv3d),
    ],
)
def test_fused_pair_is_the_constructor(cls, conv):
    first, relu = conv(2, 3, 1), nn.ReLU()
    made = fusers._sequential(cls, first, relu)
    want = cls(first, relu)
    _assert_same_state(made, want)
    assert list(made._modules.items()) == list(want._modules.items())
    assert made[0] is first
    assert made[1] is relu


def test_fused_pair_keeps_the_constructor_checks():
    with pytest.raises(AssertionError):
        fusers._sequential(nni.ConvReLU2d, nn.Conv2d(1, 1, 1), nn.Sigmoid())


@pytest.mark.parametrize("bias", [True, False])
def test_shell_copy_is_deepcopy_without_parameters(bias):
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=bias).eval()
    conv.register_forward_hook(lambda *_: None)
    made = fusers._shell_copy(conv)
    want = copy.deepcopy(conv)
    assert made is not None
    _assert_same_state(made, want)
    _assert_same_state(made, conv)  # and every container is a copy of the original's
    assert made._forward_hooks.keys() == conv._forward_hooks.keys()
    made._forward_hooks.clear()
    assert len(conv._forward_hooks) == 1


class _Bare:
    """A class whose instances start with an empty ``__dict__``."""


@pytest.mark.parametrize("kind", sorted(fusers._CONTAINERS, key=repr), ids=repr)
def test_every_container_type_the_checks_pass_is_copied_by_the_shell(kind):
    # `_shell_copy` and `_Template` let these types through because the native
    # shell copies them: a type added to `_CONTAINERS` alone would be shared.
    value = kind()
    made = _core.shell(_Bare, {"value": value})
    assert type(made.value) is kind
    assert made.value is not value


def test_shell_copy_declines_what_it_cannot_copy_exactly():
    conv = nn.Conv2d(1, 1, 1)
    conv.register_buffer("extra", torch.zeros(1))
    assert fusers._shell_copy(conv) is None
    conv = nn.Conv2d(1, 1, 1)
    conv.note = [object()]  # a container of a mutable object: deepcopy would copy it
    assert fusers._shell_copy(conv) is None
    conv = nn.Conv2d(1, 1, 1)
    conv.cache = torch.zeros(1)  # a tensor attribute
    assert fusers._shell_copy(conv) is None


def test_shell_copy_shares_a_tuple_only_where_deepcopy_does():
    conv = nn.Conv2d(1, 1, 1)
    conv.note = (1, ("a", None))  # atoms all the way down: deepcopy returns it
    made = fusers._shell_copy(conv)
    assert made is not None
    assert made.note is copy.deepcopy(conv).note is conv.note
    for held in (([1],), (1, (2, {})), {"k": ([1],)}, [(1, [2])]):
        conv.note = held  # a list or dict inside a tuple: deepcopy copies it
        assert fusers._shell_copy(conv) is None, held


@pytest.mark.parametrize("fuse", ["pyfuse", "reference"])
def test_eval_fold_does_not_share_a_tuple_held_list_with_the_input(fuse):
    from torch.ao.quantization.fx.fuse import fuse as reference_fuse

    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)).eval()
    held = [1]
    model[0].note = (held,)
    gm = torch.fx.symbolic_trace(model)
    out = (pyfuse.fuse if fuse == "pyfuse" else reference_fuse)(gm, False)
    fused = out.get_submodule("0")
    assert type(fused) is nn.Conv2d
    assert fused.note == ([1],)
    assert fused.note[0] is not held  # the input's list stays the input's


def test_conv_bn_eval_is_torchs_fold_bit_for_bit():
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 5, 3).eval(), nn.BatchNorm2d(5).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    made = fusers._conv_bn_eval(conv, bn)
    want = fuse_conv_bn_eval(conv, bn)
    _assert_same_state(made, want)
    assert list(made._parameters) == list(want._parameters)
    for k in want._parameters:
        assert torch.equal(made._parameters[k], want._parameters[k])
        assert type(made._parameters[k]) is nn.Parameter
        assert made._parameters[k].requires_grad == want._parameters[k].requires_grad
    assert made.weight is not conv.weight


def test_registration_hooks_still_run():
    """With a global registration hook installed, modules are built through
    torch's constructors and setattr, so the hook sees every registration."""
    from torch.nn.modules.module import (
        register_module_module_registration_hook,
        register_module_parameter_registration_hook,
    )

    seen: list[str] = []
    h1 = register_module_module_registration_hook(
        lambda _m, name, _sub: seen.append(f"module {name}")
    )
    h2 = register_module_parameter_registration_hook(
        lambda _m, name, _p: seen.append(f"param {name}")
    )
    try:
        conv, bn = nn.Conv2d(2, 2, 1).eval(), nn.BatchNorm2d(2).eval()
        seen.clear()
        fused = fusers._sequential(
            nni.ConvReLU2d, fusers._conv_bn_eval(conv, bn), nn.ReLU()
        )
        fusers.new_relu(False)
    finally:
        h1.remove()
        h2.remove()
    assert "param weight" in seen
    assert "param bias" in seen
    assert "module 0" in seen
    assert "module 1" in seen
    assert type(fused) is nni.ConvReLU2d


@pytest.mark.parametrize(
    ("cls", "make"),
    [
        (nni.ConvBnReLU2d, lambda: (nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.ReLU())),
        (nni.ConvBn1d, lambda: (nn.Conv1d(2, 3, 1), nn.BatchNorm1d(3))),
        (nni.LinearReLU, lambda: (nn.Linear(2, 3), nn.ReLU())),
        (nni.BNReLU2d, lambda: (nn.BatchNorm2d(3), nn.ReLU())),
    ],
)
def test_sequential_template_is_the_constructor(cls, make):
    fusers._sequential(cls, *make())  # the first call makes the template
    mods = make()
    made = fusers._sequential(cls, *mods)
    want = cls(*mods)
    _assert_same_state(made, want)
    assert list(made._modules.items()) == list(want._modules.items())


def test_sequential_template_never_serves_other_module_classes():
    """A template made for torch's Conv2d is not used for a parametrized Conv2d
    (a class of its own): that one is built by the constructor, never cached."""
    from torch.nn.utils import parametrize

    class Double(nn.Module):
        def forward(self, w):
            return w * 2

    fusers._sequential(nni.ConvReLU2d, nn.Conv2d(1, 1, 1), nn.ReLU())
    for _ in range(2):
        conv, relu = nn.Conv2d(1, 1, 1), nn.ReLU()
        parametrize.register_parametrization(conv, "weight", Double())
        made = fusers._sequential(nni.ConvReLU2d, conv, relu)
        _assert_same_state(made, nni.ConvReLU2d(conv, relu))
        assert list(made._modules.items()) == [("0", conv), ("1", relu)]
        assert (nni.ConvReLU2d, type(conv), nn.ReLU) not in fusers._sequence_templates


def test_sequential_template_only_for_plain_sequences():
    """ConvAdd2d keeps its `add` function as an attribute: never templated."""
    import operator

    first = fusers._sequential(nni.ConvAdd2d, nn.Conv2d(1, 1, 1), operator.add)
    second = fusers._sequential(nni.ConvAdd2d, nn.Conv2d(1, 1, 1), torch.add)
    assert first.add is operator.add
    assert second.add is torch.add


def test_fast_linear_bn_is_torchs_bit_for_bit():
    from torch.ao.quantization.fuser_method_mappings import fuse_linear_bn

    torch.manual_seed(1)
    linear, bn = nn.Linear(3, 4).eval(), nn.BatchNorm1d(4).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    made = fusers._fast_linear_bn(False, bn, linear)
    want = fuse_linear_bn(False, linear, bn)
    _assert_same_state(made, want)
    for k in want._parameters:
        assert torch.equal(made._parameters[k], want._parameters[k])
    assert made.weight is not linear.weight


@pytest.mark.parametrize(
    "make_bn",
    [
        lambda: nn.BatchNorm2d(5),  # num_features != out_channels
        lambda: nn.BatchNorm2d(4, affine=False),
        lambda: nn.BatchNorm2d(4, track_running_stats=False),
        lambda: nn.BatchNorm2d(4).eval(),  # modes differ
    ],
)
def test_qat_fast_paths_raise_as_torch_does(make_bn):
    from torch.ao.quantization.fuser_method_mappings import (
        fuse_conv_bn,
        fuse_conv_bn_relu,
    )

    conv, bn, relu = nn.Conv2d(3, 4, 1), make_bn(), nn.ReLU()
    with pytest.raises(AssertionError) as want:
        fuse_conv_bn(True, conv, bn)
    with pytest.raises(AssertionError) as got:
        fusers._fast_conv_bn_qat(True, bn, conv)
    assert str(got.value) == str(want.value)
    with pytest.raises(AssertionError) as want:
        fuse_conv_bn_relu(True, conv, bn, relu)
    with pytest.raises(AssertionError) as got:
        fusers._fast_conv_bn_relu_qat(True, relu, (bn, conv))
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("mode", ["eval", "qat"])
def test_whole_pass_with_registration_hooks_installed(mode):
    """Global registration hooks switch every direct construction off: the output
    is still the reference's, and the hooks see pyfuse's registrations."""
    from torch.nn.modules.module import register_module_module_registration_hook

    cm = MODELS_BY_NAME["resnet18"]
    qat = mode == "qat"

    def make():
        return cm.factory().train(qat)

    seen: list[tuple[str, str]] = []

    def hooked_pyfuse(*args):
        # installed for pyfuse's pass only: what it sees is pyfuse's registrations
        handle = register_module_module_registration_hook(
            lambda m, name, _sub: seen.append((type(m).__name__, name))
        )
        try:
            return pyfuse.fuse(*args)
        finally:
            handle.remove()

    ref_out, out = run_both(make, cm.example_inputs_factory(), qat, impl=hooked_pyfuse)
    assert_same_fusion(ref_out, out, cm.example_inputs_factory())
    # the fused modules' children, registered by their constructors
    fused = ("ConvBnReLU2d", "2") if qat else ("ConvReLU2d", "1")
    assert fused in seen, seen
