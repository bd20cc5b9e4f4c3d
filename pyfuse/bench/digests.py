"""Correctness of every measured output.

In-process, pyfuse's ``.code`` and ``state_dict`` (keys, dtypes, shapes, bits)
and module tree must equal the reference's; across processes a :func:`digest`
of the same is compared. Synthetic workloads also check the fusion and node
counts (:func:`count_errors`). A wrong result is an error of its row, which the
harness turns into a non-zero exit status.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch.fx import GraphModule

from .cases import Built

__all__ = ["compare_digests", "count_errors", "digest"]


def _tree(gm: GraphModule) -> str:
    """Module paths and type names (by name: FX makes a class per GraphModule)."""
    return "\n".join(
        f"{name}:{type(m).__module__}.{type(m).__qualname__}"
        for name, m in gm.named_modules()
    )


def digest(gm: GraphModule) -> dict[str, Any]:
    """What must be identical between the reference's and pyfuse's outputs:
    hashes of the code, of the state_dict (keys, dtypes, shapes and bits, in
    order) and of the module tree (paths and types), and the node count."""
    sd = hashlib.sha256()
    for k, v in gm.state_dict().items():
        t = v.detach().contiguous().reshape(-1)
        sd.update(f"{k}|{t.dtype}|{tuple(v.shape)}|".encode())
        sd.update(t.view(torch.uint8).numpy().data)
    return {
        "code": hashlib.sha256(gm.code.encode()).hexdigest(),
        "state_dict": sd.hexdigest(),
        "modules": hashlib.sha256(_tree(gm).encode()).hexdigest(),
        "nodes": len(gm.graph.nodes),
    }


def count_errors(what: str, built: Built, n: int, nodes: int) -> list[str]:
    """Errors if the fusion or node count is not the expected one."""
    errors = []
    if built.expected_fusions is not None and n != built.expected_fusions:
        errors.append(f"{what}: {n} fusions, expected {built.expected_fusions}")
    if built.expected_nodes_after is not None and nodes != built.expected_nodes_after:
        errors.append(
            f"{what}: {nodes} nodes after fusion, expected {built.expected_nodes_after}"
        )
    return errors


def compare_digests(what: str, ref: dict[str, Any], mine: dict[str, Any]) -> list[str]:
    """Errors for every part of ``mine`` that differs from the reference's."""
    return [
        f"{what}: {part} differs from the reference's"
        for part in ("code", "state_dict", "modules", "nodes")
        if ref.get(part) != mine.get(part)
    ]
