"""pyfuse: an exact, fast drop-in replacement for PyTorch's FX fusion pass.

``pyfuse.fuse`` and ``pyfuse.fuse_fx`` take the arguments of
``torch.ao.quantization.fx.fuse.fuse`` and ``torch.ao.quantization.quantize_fx.fuse_fx``
and return the same GraphModule: same code, module tree and weights. Matching
runs in a native pattern automaton (``pyfuse._core``); the graph is edited in
place, in proportion to the fusions found.

Importing pyfuse has no side effects and loads the pass on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Explanation",
    "FuseReport",
    "FusionError",
    "GraphModuleRequired",
    "Skipped",
    "__version__",
    "explain",
    "fuse",
    "fuse_fx",
    "patch_torch",
    "patched",
    "recompile",
    "unpatch_torch",
]

_HOME = {
    "Explanation": "_explain",
    "explain": "_explain",
    "patch_torch": "_adopt",
    "patched": "_adopt",
    "recompile": "codegen",
    "unpatch_torch": "_adopt",
}

if TYPE_CHECKING:
    from ._adopt import patch_torch, patched, unpatch_torch
    from ._explain import Explanation, explain
    from ._fuse import (
        FuseReport,
        FusionError,
        GraphModuleRequired,
        Skipped,
        fuse,
        fuse_fx,
    )
    from .codegen import recompile


def __getattr__(name: str) -> Any:
    if name in __all__ and name != "__version__":
        import importlib

        home = importlib.import_module("." + _HOME.get(name, "_fuse"), __name__)
        return getattr(home, name)
    raise AttributeError(f"module 'pyfuse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return list(__all__)
