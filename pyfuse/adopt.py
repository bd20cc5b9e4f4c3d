"""Make torch's own FX quantization flows use pyfuse, without editing them."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["patch_torch", "patched", "unpatch_torch"]

# (module name, attribute) pairs that hold torch's fuse function.
_SITES = (
    ("torch.ao.quantization.quantize_fx", "fuse"),  # fuse_fx, prepare_fx, prepare_qat_fx
    ("torch.ao.quantization.fx", "fuse"),
    ("torch.ao.quantization.fx.fuse", "fuse"),
)
_saved: dict[tuple[str, str], Callable[..., Any]] = {}


def _torch_compatible_fuse(*args: Any, **kwargs: Any) -> Any:
    from .fx.pipeline import fuse

    return fuse(*args, **kwargs)


def patch_torch() -> None:
    """Route ``fuse_fx``, ``prepare_fx`` and ``prepare_qat_fx`` (and
    ``torch.ao.quantization.fx.fuse``) through pyfuse. Idempotent."""
    import importlib

    for mod_name, attr in _SITES:
        importlib.import_module(mod_name)
        mod = sys.modules[mod_name]
        current = getattr(mod, attr)
        if current is _torch_compatible_fuse:
            continue
        _saved[(mod_name, attr)] = current
        setattr(mod, attr, _torch_compatible_fuse)


def unpatch_torch() -> None:
    """Undo :func:`patch_torch`."""
    for (mod_name, attr), original in list(_saved.items()):
        setattr(sys.modules[mod_name], attr, original)
        del _saved[(mod_name, attr)]


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """``with pyfuse.patched(): prepare_fx(...)`` uses pyfuse inside the block."""
    already = bool(_saved)
    patch_torch()
    try:
        yield
    finally:
        if not already:
            unpatch_torch()
