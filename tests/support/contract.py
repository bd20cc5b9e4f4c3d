"""The exactness contract between the reference fusion pass and pyfuse.

``run_both`` fuses two independently traced copies of a model, one with the reference
``torch.ao.quantization.fx.fuse.fuse`` and one with ``pyfuse.fuse``;
``assert_same_fusion`` checks that the two resulting GraphModules are indistinguishable:
same generated code, same module tree, same state (bit for bit), same flags, same outputs.
``run_both`` also checks that each output holds its input's objects at the same places
(:func:`shared_with`): the reference shares what it leaves and copies what it folds.

The reference is pinned: torch's own ``fuse`` and ``fuse_fx`` function objects are
captured when this module is imported (before any test runs), so a
``pyfuse.patch_torch()`` left in place cannot turn the oracle into pyfuse against
itself; :func:`reference_fuse_fx`, whose torch code looks ``fuse`` up at call time,
fails if torch is patched.
"""

from __future__ import annotations

import copy
import importlib
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.fx
from torch.nn.utils.parametrize import is_parametrized, type_before_parametrizations
from torch.utils._pytree import tree_flatten

FORWARD_SEED = 20240607


class BothRaised(Exception):
    """Raised by :func:`run_both` when the reference and the implementation both raised
    the same exception type (which is the contract for inputs the reference rejects)."""

    def __init__(self, ref_exc: BaseException, exc: BaseException):
        super().__init__(
            f"both raised {type(ref_exc).__name__}: reference: {ref_exc!r}; impl: {exc!r}"
        )
        self.ref_exc = ref_exc
        self.exc = exc


def _torch_own(module_name: str, attr: str) -> Callable:
    """torch's function `attr` of `module_name`, checked to be torch's own."""
    fn = getattr(importlib.import_module(module_name), attr)
    if not getattr(fn, "__module__", "").startswith("torch."):
        raise RuntimeError(
            f"{module_name}.{attr} is {fn!r}, not torch's own (pyfuse.patch_torch() "
            "ran before the tests' reference was pinned)"
        )
    return fn


#: torch's own fusion pass and fuse_fx, pinned at import
REFERENCE_FUSE = _torch_own("torch.ao.quantization.fx.fuse", "fuse")
REFERENCE_FUSE_FX = _torch_own("torch.ao.quantization.quantize_fx", "fuse_fx")
#: the module whose global ``fuse`` torch's fuse_fx calls (a site patch_torch sets)
_FUSE_FX_SITE = "torch.ao.quantization.quantize_fx"


def reference_fuse(model, is_qat, fuse_custom_config=None, backend_config=None):
    """torch's own fusion pass (pinned)."""
    return REFERENCE_FUSE(model, is_qat, fuse_custom_config, backend_config)


def reference_fuse_fx(model, *args, **kwargs):
    """torch's own fuse_fx (pinned); refuses to run while torch is patched."""
    if sys.modules[_FUSE_FX_SITE].fuse is not REFERENCE_FUSE:
        raise AssertionError(
            f"{_FUSE_FX_SITE}.fuse is not torch's own (a pyfuse.patch_torch() left "
            "in place): the reference fuse_fx would run pyfuse"
        )
    return REFERENCE_FUSE_FX(model, *args, **kwargs)


def pyfuse_fuse(model, is_qat, fuse_custom_config=None, backend_config=None):
    import pyfuse

    return pyfuse.fuse(model, is_qat, fuse_custom_config, backend_config)


def _fresh(x):
    return copy.deepcopy(x)


def run_both(
    model_factory: Callable[[], torch.nn.Module],
    example_inputs: tuple | None = None,  # noqa: ARG001 (callers pass it; unused)
    is_qat: bool = False,
    backend_config: Any = None,
    *,
    fuse_custom_config: Any = None,
    impl: Callable | None = None,
    reference: Callable | None = None,
):
    """Trace two fresh models, fuse one with the reference and one with ``impl`` (pyfuse).

    ``model_factory()`` must return a fresh module in the intended mode. Configs are
    deep-copied per call so nothing is shared between the two runs. Returns
    ``(ref_gm, gm)``. If the reference raises, the implementation must raise the same
    exception type; then :class:`BothRaised` is raised (with both exceptions attached).
    ``example_inputs`` is accepted for symmetry with ``assert_same_fusion`` (unused here).
    """
    impl = impl or pyfuse_fuse
    reference = reference or reference_fuse
    with single_thread():
        return _run_both(
            model_factory, is_qat, backend_config, fuse_custom_config, impl, reference
        )


def _run_both(
    model_factory, is_qat, backend_config, fuse_custom_config, impl, reference
):
    ref_model = torch.fx.symbolic_trace(model_factory())
    model = torch.fx.symbolic_trace(model_factory())
    assert ref_model is not model
    ref_inputs, inputs = objects_of(ref_model), objects_of(model)

    ref_exc = None
    try:
        ref_out = reference(
            ref_model, is_qat, _fresh(fuse_custom_config), _fresh(backend_config)
        )
    except Exception as e:  # noqa: BLE001 - any exception type is part of the contract
        ref_exc = e

    if ref_exc is None:
        out = impl(model, is_qat, _fresh(fuse_custom_config), _fresh(backend_config))
        ref_shared, shared = shared_with(ref_out, ref_inputs), shared_with(out, inputs)
        assert shared == ref_shared, _diff_msg(
            "what the output shares with its input", sorted(ref_shared), sorted(shared)
        )
        return ref_out, out

    try:
        impl(model, is_qat, _fresh(fuse_custom_config), _fresh(backend_config))
    except Exception as e:
        if type(e) is not type(ref_exc):
            raise AssertionError(
                f"reference raised {type(ref_exc).__name__}({ref_exc}) but the implementation raised "
                f"{type(e).__name__}({e})"
            ) from e
        raise BothRaised(ref_exc, e) from e
    raise AssertionError(
        f"reference raised {type(ref_exc).__name__}({ref_exc}) but the implementation returned normally"
    )


#: values that are never copied, or copied to an equal value: sharing them is moot
_ATOMS = (
    int,
    float,
    complex,
    bool,
    str,
    bytes,
    type(None),
    type,
    torch.dtype,
    torch.device,
)


def _moot(value: Any) -> bool:
    return isinstance(value, _ATOMS) or (
        callable(value) and not isinstance(value, torch.nn.Module)
    )


def objects_of(model: torch.nn.Module) -> dict[int, Any]:
    """id -> object for `model`'s submodules and what their ``__dict__`` holds (into
    containers), taken before a pass runs: the reference installs its fused
    modules into its input, which must not count as the input's. The objects are
    held, so that no id is reused while the map lives."""
    held: dict[int, Any] = {}

    def collect(value: Any) -> None:
        if _moot(value) or isinstance(value, torch.nn.Module):
            return
        held[id(value)] = value
        if isinstance(value, (tuple, list)):
            for item in value:
                collect(item)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)

    for m in model.modules():
        held[id(m)] = m
        for value in vars(m).values():
            collect(value)
    return held


def shared_with(out: torch.nn.Module, inputs: dict[int, Any]) -> set[tuple]:
    """The places in `out`'s submodules (a module path, a ``__dict__`` key, keys
    into containers) that hold one of `inputs` (see :func:`objects_of`). The
    reference shares the modules it does not fuse and deep-copies what it folds; a
    drop-in shares exactly the same. (The root's own attributes are left out:
    pyfuse's output reuses the input's graph, as documented.)"""
    found: set[tuple] = set()

    def walk(value: Any, where: tuple) -> None:
        if _moot(value) or isinstance(value, torch.nn.Module):
            return  # (modules: by their own paths)
        if id(value) in inputs:
            found.add(where)
        if isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                walk(item, (*where, i))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*where, repr(key)))

    for path, m in out.named_modules(remove_duplicate=False):
        if id(m) in inputs:
            found.add((path,))
        for key in ("_parameters", "_buffers") if path == "" else tuple(vars(m)):
            walk(vars(m)[key], (path, key))
    return found


# --------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------


def _module_kind(name: str, m: torch.nn.Module):
    """What must be equal about a module at a given path."""
    if name == "":
        # every GraphModule has its own per-instance class
        return ("<root>", type(m).__name__, isinstance(m, torch.fx.GraphModule))
    if is_parametrized(m):
        # parametrize also makes a per-instance class
        return ("<parametrized>", type(m).__name__, type_before_parametrizations(m))
    return type(m)


def _module_table(gm: torch.nn.Module):
    return [(name, _module_kind(name, m)) for name, m in gm.named_modules()]


class single_thread:
    """Run torch ops on one intra-op thread (much faster for tiny tensors on a busy 2-core box)."""

    def __enter__(self):
        self._n = torch.get_num_threads()
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self._n)
        return False


def _run(gm: torch.nn.Module, example_inputs: tuple):
    """Forward on deep copies of the inputs, and of the module when it is in train mode
    (BN running stats must not leak between runs).

    Returns ``("ok", output, module_after)`` or ``("raised", exception, module_after)``.
    """
    if any(m.training for m in gm.modules()):
        gm = copy.deepcopy(
            gm
        )  # eval-mode forwards leave modules untouched: no copy needed
    inputs = copy.deepcopy(example_inputs)
    torch.manual_seed(FORWARD_SEED)
    try:
        with torch.no_grad(), single_thread():
            return "ok", gm(*inputs), gm
    except Exception as e:  # noqa: BLE001 - compared by type below
        return "raised", e, gm


def _assert_tensors_identical(what: str, a, b):
    assert isinstance(b, torch.Tensor) == isinstance(a, torch.Tensor), (
        f"{what}: tensor vs non-tensor"
    )
    if not isinstance(a, torch.Tensor):
        assert a == b, f"{what}: {a!r} != {b!r}"
        return
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    assert torch.equal(a, b), (
        f"{what}: values differ (max abs diff {(a.double() - b.double()).abs().max().item()})"
    )


def assert_same_fusion(
    ref_out: torch.fx.GraphModule, out: torch.fx.GraphModule, example_inputs: tuple
):
    """Assert ``out`` (pyfuse) is indistinguishable from ``ref_out`` (reference).

    The forward pass runs each module as given (train or eval), on deep copies of the
    modules and of the inputs, under the same fixed seed.
    """
    # 0. a GraphModule
    assert isinstance(out, torch.fx.GraphModule), (
        f"expected a GraphModule, got {type(out)}"
    )
    assert type(out).__name__ == type(ref_out).__name__, (
        type(out).__name__,
        type(ref_out).__name__,
    )

    # 0b. root attributes (names only: e.g. preserved attributes, no stray extras) and meta keys
    ref_attrs = sorted(k for k in vars(ref_out) if not k.startswith("__"))
    attrs = sorted(k for k in vars(out) if not k.startswith("__"))
    assert attrs == ref_attrs, _diff_msg("root instance attributes", ref_attrs, attrs)
    assert sorted(out.meta.keys()) == sorted(ref_out.meta.keys()), (
        ref_out.meta.keys(),
        out.meta.keys(),
    )

    # 1. generated code
    assert out.code == ref_out.code, (
        "generated code differs\n--- reference ---\n"
        + ref_out.code
        + "\n--- pyfuse ---\n"
        + out.code
    )

    # 1b. node names, ops, targets, args and the set of meta keys
    def nodes(gm):
        return [
            (
                n.name,
                n.op,
                str(n.target),
                str(n.args),
                str(n.kwargs),
                sorted(n.meta.keys()),
            )
            for n in gm.graph.nodes
        ]

    assert nodes(out) == nodes(ref_out), "graph nodes differ"

    # 2. module tree (paths and classes), including aliases
    ref_mods, mods = _module_table(ref_out), _module_table(out)
    assert mods == ref_mods, _diff_msg("named_modules", ref_mods, mods)
    ref_all = [n for n, _ in ref_out.named_modules(remove_duplicate=False)]
    all_ = [n for n, _ in out.named_modules(remove_duplicate=False)]
    assert all_ == ref_all, _diff_msg(
        "named_modules(remove_duplicate=False)", ref_all, all_
    )

    # 2b. module hyper-parameters (kernel sizes, eps, momentum, inplace, ...)
    ref_rep = [(n, m.extra_repr()) for n, m in ref_out.named_modules()]
    rep = [(n, m.extra_repr()) for n, m in out.named_modules()]
    assert rep == ref_rep, _diff_msg("module extra_repr", ref_rep, rep)

    # 3. training flag per module
    ref_tr = [(n, m.training) for n, m in ref_out.named_modules()]
    tr = [(n, m.training) for n, m in out.named_modules()]
    assert tr == ref_tr, _diff_msg("training flags", ref_tr, tr)

    # 4. state_dict: keys (in order), dtypes and values
    ref_sd, sd = ref_out.state_dict(), out.state_dict()
    assert list(sd.keys()) == list(ref_sd.keys()), _diff_msg(
        "state_dict keys", list(ref_sd), list(sd)
    )
    for k in ref_sd:
        _assert_tensors_identical(f"state_dict[{k!r}]", ref_sd[k], sd[k])

    # 5. parameters: names and requires_grad; buffers: names
    ref_rg = [(n, p.requires_grad, type(p)) for n, p in ref_out.named_parameters()]
    rg = [(n, p.requires_grad, type(p)) for n, p in out.named_parameters()]
    assert rg == ref_rg, _diff_msg("parameters / requires_grad", ref_rg, rg)
    ref_buf = [n for n, _ in ref_out.named_buffers()]
    buf = [n for n, _ in out.named_buffers()]
    assert buf == ref_buf, _diff_msg("buffers", ref_buf, buf)

    # 6. forward outputs
    ref_status, ref_y, ref_after = _run(ref_out, example_inputs)
    status, y, after = _run(out, example_inputs)
    if ref_status == "raised":
        # the reference's module can be broken (e.g. get_attr of a fused module's weight in QAT);
        # a drop-in fails the same way
        why = (
            f"reference forward raised {type(ref_y).__name__}({ref_y}); pyfuse forward gave "
            + (f"{type(y).__name__}({y})" if status == "raised" else "a result")
        )
        assert status == "raised", why
        assert type(y) is type(ref_y), why
        return
    assert status == "ok", (
        f"pyfuse forward raised {type(y).__name__}({y}); the reference's did not"
    )
    ref_leaves, ref_spec = tree_flatten(ref_y)
    leaves, spec = tree_flatten(y)
    assert spec == ref_spec, f"output structure differs: {ref_spec} vs {spec}"
    for i, (a, b) in enumerate(zip(ref_leaves, leaves, strict=True)):
        _assert_tensors_identical(f"output leaf {i}", a, b)

    # 7. side effects of the forward (BN running stats in train mode)
    ref_sd, sd = ref_after.state_dict(), after.state_dict()
    assert list(sd.keys()) == list(ref_sd.keys())
    for k in ref_sd:
        _assert_tensors_identical(f"state_dict[{k!r}] after forward", ref_sd[k], sd[k])


def _diff_msg(what, ref, got):
    ref_s, got_s = set(map(repr, ref)), set(map(repr, got))
    only_ref = [r for r in map(repr, ref) if r not in got_s][:10]
    only_got = [g for g in map(repr, got) if g not in ref_s][:10]
    return (
        f"{what} differ (reference {len(ref)} entries, pyfuse {len(got)})\n"
        f"  only in reference: {only_ref}\n  only in pyfuse: {only_got}"
        + (
            "\n  (same entries, different order)"
            if not only_ref and not only_got
            else ""
        )
    )


def node_count(gm: torch.fx.GraphModule) -> int:
    return len(gm.graph.nodes)


def sorted_fusion_handlers(backend_config: Any) -> dict[Any, Any]:
    """The reference's priority-ordered {pattern: fuse handler class} dict (its
    keys, in order, are the pattern list ``pyfuse.engine.matching.find_matches``
    takes)."""
    from torch.ao.quantization.fx.fuse_handler import (
        _get_fusion_pattern_to_fuse_handler_cls,
    )
    from torch.ao.quantization.fx.pattern_utils import _sorted_patterns_dict

    return _sorted_patterns_dict(
        _get_fusion_pattern_to_fuse_handler_cls(backend_config)
    )


def same_matches(ref: dict[str, Any], mine: dict[str, Any]) -> bool:
    """Whether ``find_matches``'s result agrees with the reference's
    ``_find_matches``: same node names, and for each the same start node, pattern
    and node pattern."""
    if ref.keys() != mine.keys():
        return False
    for k, r in ref.items():
        m = mine[k]
        if r[0] is not m[0] or r[1] != m[1] or r[2] != m[2]:
            return False
    return True
