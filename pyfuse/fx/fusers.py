"""Faster, bit-identical replacements for torch's default fuser methods, and
fixes where torch's are wrong.

torch's ``fuse_conv_bn_eval`` (and ``fuse_linear_bn_eval``) deep-copies the conv
(cloning its weight) and then overwrites weight and bias with the folded ones.
pyfuse copies the module shell instead (fresh ``__dict__`` containers, nothing
shared with the original that could be mutated) and folds with torch's own
``fuse_conv_bn_weights`` on the original tensors, or with the same elementwise
operations batched over same-shape float32/float64 pairs (:mod:`pyfuse.fx.folding`): the same operations on
the same values, so the same bits. Modules with buffers, submodules (e.g.
parametrizations) or attributes of unknown types take torch's path.

Fused modules (``ConvReLU2d``, ``ConvBnReLU2d`` for QAT, ``LinearReLU``, ...) are
Sequentials of their arguments: the first of each argument-type combination is
built by its constructor (whose checks raise as torch's do), later ones by copying
that instance's ``__dict__`` layout with fresh containers (:func:`_sequential`).
With global module/parameter/buffer registration hooks installed, everything is
built through torch's constructors and ``setattr`` so the hooks run.

torch's ``fuse_convtranspose_bn`` folds BatchNorm into a grouped ConvTranspose
with the wrong weight layout (it raises a size mismatch), and
``fuse_linear_bn`` fails on ``BatchNorm1d(affine=False)`` (TypeError). In eval
mode these inputs are valid, so pyfuse folds them correctly. Everywhere else the
backend's fuser method is called exactly as given.
"""

from __future__ import annotations

import collections
import functools
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import torch
import torch.ao.nn.intrinsic as nni
from torch.ao.quantization.fuser_method_mappings import (
    fuse_conv_bn,
    fuse_conv_bn_relu,
    fuse_convtranspose_bn,
    fuse_linear_bn,
)
from torch.nn.modules import module as _torch_module
from torch.nn.utils.fusion import (
    fuse_conv_bn_eval,
    fuse_conv_bn_weights,
    fuse_linear_bn_weights,
)

from .. import _core
from .folding import PLAIN_CONVS, Folds, grouped_convtranspose_bn, linear_bn_no_affine

__all__ = [
    "FuserCall",
    "conv_bn_pairs",
    "fast_conv_bn",
    "fast_conv_bn_relu",
    "fast_fuser",
    "new_module",
    "new_relu",
    "registration_hooks",
    "sequence_class",
]


#: What copy.deepcopy returns as is (functions included), or copies to an equal
#: value; a tuple is atomic when what it holds is (``_core.copies_as_deepcopy``).
_ATOMS: frozenset[type] = frozenset(
    {
        int,
        float,
        bool,
        str,
        bytes,
        type(None),
        torch.dtype,
        torch.device,
        types.FunctionType,
        types.BuiltinFunctionType,
    }
)
#: The containers ``_core.shell`` copies (shallow).
_CONTAINERS = frozenset({dict, list, set, collections.OrderedDict})


def registration_hooks() -> bool:
    """Whether global module/parameter/buffer registration hooks are installed
    (they run on every registration, so direct ``__dict__`` builds must not skip them)."""
    return bool(
        _torch_module._global_module_registration_hooks
        or _torch_module._global_parameter_registration_hooks
        or _torch_module._global_buffer_registration_hooks
    )


def _shell_copy(module: torch.nn.Module) -> torch.nn.Module | None:
    """What ``copy.deepcopy(module)`` gives, except that the parameters are shared
    (the caller replaces them); None where that is not simple to guarantee."""
    d = module.__dict__
    if (
        d.get("_buffers")
        or d.get("_modules")
        or not _core.copies_as_deepcopy(d, _ATOMS, "_parameters")
    ):
        return None
    # (copies of the containers, everything else shared)
    clone: torch.nn.Module = _core.shell(module.__class__, d)
    return clone


class _Template:
    """Builds instances of a module class as its constructor would, by copying the
    ``__dict__`` of one constructed instance with fresh (empty) containers."""

    def __init__(self, instance: torch.nn.Module) -> None:
        self.cls = type(instance)
        # (empty containers, copied afresh by `new`: hold none of the instance's)
        self.state: dict[str, Any] = {}
        for k, v in instance.__dict__.items():
            container = type(v) in _CONTAINERS
            if container and v and k != "_modules":
                raise AssertionError(
                    f"{self.cls.__name__}() holds state; not a template"
                )
            self.state[k] = type(v)() if container else v

    def new(self, attrs: dict[str, Any] | None = None) -> Any:
        """A new instance; `attrs` replace (or follow) the template's entries."""
        return _core.shell(self.cls, self.state, attrs)


@functools.cache
def _module_template() -> _Template:
    return _Template(torch.nn.Module())


def new_module() -> torch.nn.Module:
    """``torch.nn.Module()``, when no registration hooks are installed."""
    m: torch.nn.Module = _module_template().new()
    return m


@functools.cache
def _relu_template() -> _Template:
    return _Template(torch.nn.ReLU())


def new_relu(training: bool) -> torch.nn.ReLU:
    """``torch.nn.ReLU()`` with its training flag set."""
    if registration_hooks():
        m = torch.nn.ReLU()
        m.training = training
        return m
    relu: torch.nn.ReLU = _relu_template().new({"training": training})
    return relu


# (fused class, argument types) -> template, or None where the class's instances
# are not a plain Sequential of its arguments.
_sequence_templates: dict[tuple[type, ...], _Template | None] = {}
_FUSED_MODULES = "torch.ao.nn.intrinsic.modules.fused"
_INDEX = tuple(map(str, range(16)))  # Sequential's child names, "0", "1", ...


def _sequential(cls: type, *mods: torch.nn.Module) -> Any:
    """``cls(*mods)`` for a torch.ao.nn.intrinsic fused module (a Sequential of its
    arguments, after type checks).

    The first call for given argument types runs the constructor (so its checks
    raise as torch's do); if the instance is exactly a Sequential of the
    arguments, it becomes the template for later calls with the same types.
    """
    key = (cls, *map(type, mods))
    template = _sequence_templates.get(key)
    if template is not None and not registration_hooks():
        return template.new({"_modules": dict(zip(_INDEX, mods, strict=False))})
    if not all(t.__module__.startswith("torch.nn.modules.") for t in key[1:]):
        # (only torch's own module classes are cached: a parametrized module has a
        # class of its own, which a cache would keep alive)
        return cls(*mods)
    made = cls(*mods)
    if key not in _sequence_templates and not registration_hooks():
        plain = (
            cls.__module__ == _FUSED_MODULES
            and list(made.__dict__) == list(_module_template().state)
            and list(made._modules) == list(_INDEX[: len(mods)])
            and len(mods) <= len(_INDEX)
            and all(a is b for a, b in zip(made._modules.values(), mods, strict=True))
        )
        _sequence_templates[key] = _Template(made) if plain else None
    return made


def _conv_bn_eval(
    conv: Any, bn: Any, transpose: bool = False, folds: Folds | None = None
) -> torch.nn.Module:
    """torch.nn.utils.fusion.fuse_conv_bn_eval, without the deep copy (and with
    the pair's batched fold from `folds`, if it has one)."""
    fused = _shell_copy(conv) if type(conv) in _CONV_TYPES else None
    if fused is None or conv.training or bn.training:
        return fuse_conv_bn_eval(conv, bn, transpose)  # type: ignore[no-any-return]
    folded = (
        folds.pop((id(conv), id(bn)), None)
        if folds is not None and not transpose
        else None
    )
    if folded is None:  # (a batched pair had its running statistics)
        if bn.running_mean is None:
            return fuse_conv_bn_eval(conv, bn, transpose)  # type: ignore[no-any-return]
        folded = fuse_conv_bn_weights(
            conv.weight,
            conv.bias,
            bn.running_mean,
            bn.running_var,
            bn.eps,
            bn.weight,
            bn.bias,
            transpose,
        )
    _set_weight_bias(fused, folded)
    return fused


def _set_weight_bias(
    module: Any, weight_bias: tuple[torch.nn.Parameter, torch.nn.Parameter]
) -> None:
    """``module.weight, module.bias = weight_bias`` for a module of ours."""
    params = module.__dict__["_parameters"]
    if registration_hooks() or "weight" not in params or "bias" not in params:
        module.weight, module.bias = weight_bias
    else:  # what Module.__setattr__ does for registered names, without the checks
        params["weight"], params["bias"] = weight_bias


_CONV_TYPES = (
    *PLAIN_CONVS,
    torch.nn.ConvTranspose1d,
    torch.nn.ConvTranspose2d,
    torch.nn.ConvTranspose3d,
)


_CONV_RELU = {
    torch.nn.Conv1d: nni.ConvReLU1d,
    torch.nn.Conv2d: nni.ConvReLU2d,
    torch.nn.Conv3d: nni.ConvReLU3d,
}
_CONV_BN_QAT = {
    torch.nn.Conv1d: nni.ConvBn1d,
    torch.nn.Conv2d: nni.ConvBn2d,
    torch.nn.Conv3d: nni.ConvBn3d,
}
_CONV_BN_RELU_QAT = {
    torch.nn.Conv1d: nni.ConvBnReLU1d,
    torch.nn.Conv2d: nni.ConvBnReLU2d,
    torch.nn.Conv3d: nni.ConvBnReLU3d,
}


# Each takes the reversed nested-tuple arguments the reference passes (is_qat, last
# module first) and falls back to torch's fuser wherever torch would raise.


# The two conv + BN eval fusers take the pass's batched folds (keyword `folds`).


def fast_conv_bn(
    is_qat: bool, bn: Any, conv: Any, *, folds: Folds | None = None
) -> Any:
    """torch's ``fuse_conv_bn``, folding in eval without a deep copy."""
    if conv.training != bn.training:
        return fuse_conv_bn(is_qat, conv, bn)  # type: ignore[no-untyped-call]
    return _conv_bn_eval(conv, bn, folds=folds)


def fast_conv_bn_relu(
    is_qat: bool, relu: Any, bn_conv: Any, *, folds: Folds | None = None
) -> Any:
    """torch's ``fuse_conv_bn_relu``, folding in eval without a deep copy."""
    bn, conv = bn_conv
    cls = _CONV_RELU.get(type(conv))
    if cls is None or not (conv.training == bn.training == relu.training):
        return fuse_conv_bn_relu(is_qat, conv, bn, relu)  # type: ignore[no-untyped-call]
    return _sequential(cls, _conv_bn_eval(conv, bn, folds=folds), relu)


class FuserCall(Protocol):
    """A fuser method and the modules the reference passes it."""

    @property
    def fuser(self) -> Callable[..., Any]: ...
    @property
    def modules(self) -> Any: ...


def conv_bn_pairs(calls: Iterable[FuserCall]) -> Iterator[tuple[Any, Any]]:
    """The (conv, bn) pairs the folding fusers among `calls` fold, for
    :func:`pyfuse.fx.folding.batch_folds`."""
    for f in calls:
        if f.fuser is fast_conv_bn:
            bn, conv = f.modules
            yield conv, bn
        elif f.fuser is fast_conv_bn_relu:
            _, (bn, conv) = f.modules
            yield conv, bn


def _qat_ready(conv: Any, bn: Any) -> bool:
    """torch's QAT conv+BN fusers accept these (else they are called, and raise)."""
    return bool(
        bn.num_features == conv.out_channels and bn.affine and bn.track_running_stats
    )


def _fast_conv_bn_qat(is_qat: bool, bn: Any, conv: Any) -> Any:
    cls = _CONV_BN_QAT.get(type(conv))
    if cls is None or conv.training != bn.training or not _qat_ready(conv, bn):
        return fuse_conv_bn(is_qat, conv, bn)  # type: ignore[no-untyped-call]
    return _sequential(cls, conv, bn)


def _fast_conv_bn_relu_qat(is_qat: bool, relu: Any, bn_conv: Any) -> Any:
    bn, conv = bn_conv
    cls = _CONV_BN_RELU_QAT.get(type(conv))
    if (
        cls is None
        or not (conv.training == bn.training == relu.training)
        or not _qat_ready(conv, bn)
    ):
        return fuse_conv_bn_relu(is_qat, conv, bn, relu)  # type: ignore[no-untyped-call]
    return _sequential(cls, conv, bn, relu)


def _fast_convtranspose_bn(is_qat: bool, bn: Any, convt: Any) -> Any:
    if getattr(convt, "groups", 1) > 1:
        return grouped_convtranspose_bn(convt, bn)
    if convt.training != bn.training:
        return fuse_convtranspose_bn(is_qat, convt, bn)  # type: ignore[no-untyped-call]
    return _conv_bn_eval(convt, bn, transpose=True)


def _fast_linear_bn(is_qat: bool, bn: Any, linear: Any) -> Any:
    if not bn.affine:
        return linear_bn_no_affine(linear, bn)
    fused = _shell_copy(linear) if type(linear) is torch.nn.Linear else None
    if (
        fused is None
        or linear.training
        or bn.training
        or bn.running_mean is None
        or bn.running_var is None
        or bn.num_features not in (linear.out_features, 1)
    ):
        return fuse_linear_bn(is_qat, linear, bn)  # type: ignore[no-untyped-call]
    # torch's fuse_linear_bn_eval, on the original tensors instead of a deep copy's
    _set_weight_bias(
        fused,
        fuse_linear_bn_weights(
            linear.weight,
            linear.bias,
            bn.running_mean,
            bn.running_var,
            bn.eps,
            bn.weight,
            bn.bias,
        ),
    )
    return fused


@functools.cache  # (no argument: torch's one wrapper)
def _wrapper_code() -> Any:
    from torch.ao.quantization.fuser_method_mappings import _sequential_wrapper2

    return _sequential_wrapper2(None).__code__  # type: ignore[no-untyped-call]


def sequence_class(method: Any) -> Any:
    """What a fuser method made by torch's ``_sequential_wrapper2(cls)`` wraps
    (``cls``, which it calls with the matched modules), or None if `method` is
    not one of those closures."""
    if getattr(method, "__code__", None) is not _wrapper_code():
        return None
    return method.__closure__[0].cell_contents


def _sequence_fuser(method: Any) -> type | None:
    """The class a ``torch.ao.quantization.fuser_method_mappings._sequential_wrapper2``
    fuser method builds, or None if `method` is not one."""
    cls = sequence_class(method)
    return cls if isinstance(cls, type) and cls.__module__ == _FUSED_MODULES else None


def fast_fuser(config: Any, is_qat: bool) -> Callable[..., Any] | None:
    """pyfuse's equivalent of a backend fuser method, or None to call the backend's.

    Args:
        config: the BackendPatternConfig whose fuser method the reference would call
            (with its arguments reversed, as for the reversed nested-tuple pattern).
        is_qat: whether fusing for QAT.
    """
    if config is None or config._pattern_complex_format is not None:
        return None
    method = config.fuser_method
    cls = _sequence_fuser(method)
    if cls is not None and len(config.pattern) == 2:
        return lambda _is_qat, second, first: _sequential(cls, first, second)
    fast: dict[Any, Callable[..., Any]] = (
        {fuse_conv_bn: _fast_conv_bn_qat, fuse_conv_bn_relu: _fast_conv_bn_relu_qat}
        if is_qat
        else {
            fuse_conv_bn: fast_conv_bn,
            fuse_conv_bn_relu: fast_conv_bn_relu,
            fuse_convtranspose_bn: _fast_convtranspose_bn,
            fuse_linear_bn: _fast_linear_bn,
        }
    )
    return fast.get(method)
