"""The exceptions pyfuse raises.

Each one is also an instance of the exception type the reference raises in the
same situation, so code written against torch's pass keeps catching it.
"""

from __future__ import annotations

__all__ = [
    "ErasedInput",
    "FusionError",
    "GraphModuleRequired",
    "MalformedGetattr",
    "ModuleRequired",
    "NotAModule",
    "PatternError",
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
