"""pyfuse for torchao's pt2e flow: drop-in BatchNorm folds and the one-line patch.

``fuse_conv_bn_(m)`` and ``fuse_linear_bn_(m)`` take a GraphModule from
``ExportedProgram.module()`` and fold in place, as
``torchao.quantization.pt2e.utils._fuse_conv_bn_`` / ``_fuse_linear_bn_`` do (the
first steps of ``prepare_pt2e``): same code, attribute names and tensors where
torchao is right; where folding would change the model's output (a producer
output read by another node, one weight under two different BatchNorms, a
BatchNorm without running statistics, ...) the BatchNorm stays and the returned
report says why. A training-mode BatchNorm folds with its running statistics, as
torchao's does: ``prepare_pt2e`` (post-training quantization) makes an inference
model, and a model exported without ``.eval()`` gets the BatchNorm it will run
with (``prepare_qat_pt2e`` never calls these folds). ``patch_torchao()`` makes ``prepare_pt2e`` use them. torchao is imported
only by the patch functions.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from torch.fx import GraphModule

from .errors import GraphModuleRequired
from .export.inplace import fold_module
from .export.ops import CONV_PRODUCERS, LINEAR_PRODUCERS
from .report import FuseReport

__all__ = [
    "fuse_conv_bn_",
    "fuse_linear_bn_",
    "patch_torchao",
    "patched_torchao",
    "unpatch_torchao",
]

log = logging.getLogger("pyfuse.pt2e")


def _check(m: Any, name: str) -> GraphModule:
    if not isinstance(m, GraphModule):
        raise GraphModuleRequired(
            f"{name} needs a torch.fx.GraphModule (ExportedProgram.module()), "
            f"got {type(m).__name__}"
        )
    return m


def _log(report: FuseReport) -> FuseReport:
    for s in report.skipped:
        log.info("not folded: %s at %s: %s", s.pattern, ", ".join(s.nodes), s.reason)
    return report


def fuse_conv_bn_(m: GraphModule) -> FuseReport:
    """Fold every safe conv / conv-transpose + BatchNorm of `m` in place.

    Returns the report of folds made and BatchNorms left, with reasons.
    """
    return _log(
        fold_module(_check(m, "fuse_conv_bn_"), CONV_PRODUCERS, check_rank=False)
    )


def fuse_linear_bn_(m: GraphModule) -> FuseReport:
    """Fold every safe linear + BatchNorm of `m` in place (2-D linear inputs only,
    where both act on the same dimension)."""
    return _log(
        fold_module(_check(m, "fuse_linear_bn_"), LINEAR_PRODUCERS, check_rank=True)
    )


# ---------------------------------------------------------------------------
# Adoption: torchao's prepare_pt2e calls the functions it imported from
# torchao.quantization.pt2e.utils; both bindings are replaced.


def _conv_hook(m: GraphModule) -> None:
    """torchao's ``_fuse_conv_bn_`` signature (returns None)."""
    fuse_conv_bn_(m)


def _linear_hook(m: GraphModule) -> None:
    """torchao's ``_fuse_linear_bn_`` signature (returns None)."""
    fuse_linear_bn_(m)


_PATCHED: tuple[tuple[str, str, Callable[[GraphModule], None]], ...] = (
    ("torchao.quantization.pt2e.utils", "_fuse_conv_bn_", _conv_hook),
    ("torchao.quantization.pt2e.utils", "_fuse_linear_bn_", _linear_hook),
    ("torchao.quantization.pt2e.quantize_pt2e", "_fuse_conv_bn_", _conv_hook),
    ("torchao.quantization.pt2e.quantize_pt2e", "_fuse_linear_bn_", _linear_hook),
)
_saved: dict[tuple[str, str], Callable[..., Any]] = {}
_lock = threading.Lock()


def patch_torchao() -> None:
    """Make torchao's pt2e flow (``prepare_pt2e``) fold with pyfuse. Idempotent."""
    import importlib

    with _lock:
        if _saved:
            return
        modules = {name: importlib.import_module(name) for name, _a, _f in _PATCHED}
        for name, attr, _fn in _PATCHED:
            _saved[(name, attr)] = getattr(modules[name], attr)
        for name, attr, fn in _PATCHED:
            setattr(modules[name], attr, fn)


def unpatch_torchao() -> None:
    """Restore torchao's own folds. Idempotent."""
    import sys

    with _lock:
        for (name, attr), orig in _saved.items():
            setattr(sys.modules[name], attr, orig)
        _saved.clear()


@contextlib.contextmanager
def patched_torchao() -> Iterator[None]:
    """``with patched_torchao(): prepare_pt2e(...)``; restores torchao's folds on
    exit unless they were already patched before."""
    already = bool(_saved)
    patch_torchao()
    try:
        yield
    finally:
        if not already:
            unpatch_torchao()
