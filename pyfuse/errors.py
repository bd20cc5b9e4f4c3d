"""The exceptions pyfuse raises.

Each one is also an instance of the exception type the reference raises in the
same situation, so code written against torch's pass keeps catching it.
"""

from __future__ import annotations

import sys

__all__ = [
    "ErasedInput",
    "FusionError",
    "GraphModuleRequired",
    "MalformedGetattr",
    "ModuleRequired",
    "NotAModule",
    "PatternError",
    "add_note",
]


class GraphModuleRequired(TypeError, AttributeError):
    """`fuse` was given something that is not a torch.fx.GraphModule.

    An AttributeError too, as the reference fails with one on such input.
    """


class FusionError(RuntimeError):
    """A fusion could not be prepared; the model was left unchanged."""


class NotAModule(FusionError, TypeError):
    """A fuser method returned something that is not an nn.Module (a TypeError too,
    as the reference fails with one when it installs the result)."""


class ErasedInput(FusionError, KeyError):
    """The fused node would use a node the fusion erases (a KeyError too, as the
    reference fails with one looking that node up)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ModuleRequired(TypeError, AssertionError):
    """`fuse_fx` was given something that is not an nn.Module (an AssertionError
    too, as the reference's symbolic_trace rejects it with one)."""


class PatternError(ValueError):
    """A fusion pattern pyfuse cannot compile."""


class MalformedGetattr(PatternError, AssertionError):
    """A getattr pattern without exactly two elements (an AssertionError too, as the
    reference rejects it with one)."""


def add_note(exc: BaseException, note: str) -> None:
    """Add `note` to `exc` where the user sees it: ``exc.add_note(note)`` on Python
    3.11+; on 3.10, which has no notes, the note is appended to the message (the
    first argument, when it is a string; else as one more argument) and to
    ``exc.__notes__`` (for code that reads them)."""
    if sys.version_info >= (3, 11):
        exc.add_note(note)
        return
    notes = getattr(exc, "__notes__", None)
    if not isinstance(notes, list):
        notes = exc.__notes__ = []  # type: ignore[attr-defined]  # (a 3.10 exception has none)
    notes.append(note)
    args = exc.args
    if args and isinstance(args[0], str):
        exc.args = (f"{args[0]}\n{note}", *args[1:])
    else:
        exc.args = (*args, note)
