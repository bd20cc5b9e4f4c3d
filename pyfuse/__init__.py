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

from ._version import __version__

__all__ = [
    "Explanation",
    "FuseReport",
    "FusionError",
    "GraphModuleRequired",
    "Skipped",
    "__version__",
    "explain",
    "fold_batch_norm",
    "fuse",
    "fuse_fx",
    "patch_torch",
    "patched",
    "recompile",
    "unpatch_torch",
]

# Where each public name lives (imported on first use).
_HOME = {
    "patch_torch": "adopt",
    "patched": "adopt",
    "unpatch_torch": "adopt",
    "FuseReport": "report",
    "Skipped": "report",
    "FusionError": "errors",
    "GraphModuleRequired": "errors",
    "fuse": "fx.pipeline",
    "fuse_fx": "fx.pipeline",
    "recompile": "codegen",
    "fold_batch_norm": "export.program",
}

# (light: it imports the pass on first call; imported here because the module
# and the function share a name)
from .explain import Explanation, explain

if TYPE_CHECKING:
    from .adopt import patch_torch, patched, unpatch_torch
    from .codegen import recompile
    from .errors import FusionError, GraphModuleRequired
    from .export.program import fold_batch_norm
    from .fx.pipeline import fuse, fuse_fx
    from .report import FuseReport, Skipped


def __getattr__(name: str) -> Any:
    if name in _HOME:
        import importlib

        home = importlib.import_module("." + _HOME[name], __name__)
        return getattr(home, name)
    raise AttributeError(f"module 'pyfuse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return list(__all__)
