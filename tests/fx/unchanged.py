"""Helpers of the failure tests: small models, exceptions as the user sees them, and
snapshots ("unchanged" means the same objects holding the same values)."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx

from tests.support.corpus import MODELS_BY_NAME, TinyConvBnReLU


def raised(fn) -> BaseException | None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - any type: compared by the caller
        return e
    return None


def message(exc: BaseException) -> str:
    """An exception's text as a user sees it: message and notes."""
    return "\n".join([str(exc), *getattr(exc, "__notes__", [])])


def tiny_gm() -> torch.fx.GraphModule:
    torch.manual_seed(0)
    return torch.fx.symbolic_trace(TinyConvBnReLU().eval())


def traced(name: str, mode: str = "eval") -> torch.fx.GraphModule:
    model = MODELS_BY_NAME[name].factory()
    return torch.fx.symbolic_trace(model.train() if mode == "qat" else model.eval())


# --------------------------------------------------------------------------------------
# Snapshots: "unchanged" means the same objects holding the same values
# --------------------------------------------------------------------------------------


def snapshot(gm: torch.nn.Module) -> dict[str, Any]:
    """Everything a fusion pass could touch, by identity where identity matters."""
    snap: dict[str, Any] = {
        "type": type(gm),
        "modules": [(n, m) for n, m in gm.named_modules(remove_duplicate=False)],
        "module_types": [
            (n, type(m)) for n, m in gm.named_modules(remove_duplicate=False)
        ],
        "children": [(n, dict(m._modules)) for n, m in gm.named_modules()],
        "training": [
            (n, m.training) for n, m in gm.named_modules(remove_duplicate=False)
        ],
        "params": [(n, p) for n, p in gm.named_parameters(remove_duplicate=False)],
        "buffers": [(n, b) for n, b in gm.named_buffers(remove_duplicate=False)],
        "state": {k: v.detach().clone() for k, v in gm.state_dict().items()},
    }
    if isinstance(gm, torch.fx.GraphModule):
        graph = gm.graph
        snap["graph"] = graph
        snap["codegen"] = (
            getattr(graph, "_codegen", None),
            getattr(graph, "_tracer_cls", None),
        )
        snap["code"] = gm.code
        snap["nodes"] = [
            (n, n.name, n.op, n.target, n.args, n.kwargs, tuple(n.users), tuple(n.meta))
            for n in graph.nodes
        ]
    return snap


def assert_unchanged(before: dict[str, Any], gm: torch.nn.Module) -> None:
    after = snapshot(gm)
    assert after["type"] is before["type"]
    if "graph" in before:
        assert after["graph"] is before["graph"], "the GraphModule's graph was replaced"
        assert after["codegen"] == before["codegen"], (
            "graph codegen / tracer class changed"
        )
        assert after["code"] == before["code"], "generated code changed"
        assert len(after["nodes"]) == len(before["nodes"]), "node count changed"
        for a, b in zip(after["nodes"], before["nodes"], strict=True):
            assert a[0] is b[0], f"node {b[1]!r} replaced by {a[1]!r}"
            # args hold Nodes, which compare by identity
            assert a[1:] == b[1:], f"node {b[1]!r} changed: {b[1:]} -> {a[1:]}"
    assert [n for n, _ in after["modules"]] == [n for n, _ in before["modules"]], (
        "module paths changed"
    )
    for (name, m_after), (_, m_before) in zip(
        after["modules"], before["modules"], strict=True
    ):
        assert m_after is m_before, f"module {name!r} replaced"
    assert after["module_types"] == before["module_types"], "a module's class changed"
    assert after["children"] == before["children"], "a module's children changed"
    assert after["training"] == before["training"], "training flags changed"
    assert [n for n, _ in after["params"]] == [n for n, _ in before["params"]]
    for (name, pa), (_, pb) in zip(after["params"], before["params"], strict=True):
        assert pa is pb, f"parameter {name!r} replaced"
    assert [n for n, _ in after["buffers"]] == [n for n, _ in before["buffers"]]
    for (name, ba), (_, bb) in zip(after["buffers"], before["buffers"], strict=True):
        assert ba is bb, f"buffer {name!r} replaced"
    assert list(after["state"]) == list(before["state"]), "state_dict keys changed"
    for k, v in before["state"].items():
        w = after["state"][k]
        assert w.dtype == v.dtype, f"state_dict[{k!r}] dtype"
        assert w.shape == v.shape, f"state_dict[{k!r}] shape"
        assert torch.equal(w, v), f"state_dict[{k!r}] values changed"


def changed_module_paths(before: dict[str, Any], gm: torch.nn.Module) -> list[str]:
    now = dict(gm.named_modules(remove_duplicate=False))
    return [n for n, m in before["modules"] if now.get(n) is not m]


def assert_reference_type(
    exc: BaseException | None,
    ref: BaseException | None,
    documented: dict[type, type] | None = None,
) -> None:
    """pyfuse raised the reference's exact type, or the documented pyfuse subclass
    ``documented`` names for that type (``{reference type: pyfuse type}``)."""
    assert ref is not None, "the reference rejects this input too"
    assert exc is not None, "pyfuse rejects this input"
    want = (documented or {}).get(type(ref), type(ref))
    assert type(exc) is want, (
        f"reference {type(ref).__name__}, pyfuse {type(exc).__name__}; accepted: "
        f"{want.__name__}"
    )
    assert isinstance(exc, type(ref)), (type(ref), type(exc))
