"""An error raised by a fuser method reaches the user with a note naming the
match, on every supported Python (3.10 has no exception notes: the note goes
into the message there), and the model is left unchanged."""

from __future__ import annotations

import traceback

import pytest
import torch
import torch.fx
from torch import nn

import pyfuse
from pyfuse.errors import add_note
from tests.support.contract import reference_fuse

pytestmark = pytest.mark.quick


class ConvBn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def _raising_backend():
    from torch.ao.quantization.backend_config import BackendConfig, BackendPatternConfig

    def fuser(_is_qat, _conv, _bn):
        raise ValueError("the fuser failed on purpose")

    return BackendConfig("raising").set_backend_pattern_config(
        BackendPatternConfig((nn.Conv2d, nn.BatchNorm2d)).set_fuser_method(fuser)
    )


def _shown(exc: BaseException) -> str:
    """What the user sees of `exc` in a traceback."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def test_fuser_error_names_the_match_and_changes_nothing():
    gm = torch.fx.symbolic_trace(ConvBn().eval())
    code = gm.code
    with pytest.raises(ValueError, match="the fuser failed on purpose") as ref:
        reference_fuse(
            torch.fx.symbolic_trace(ConvBn().eval()), False, None, _raising_backend()
        )
    with pytest.raises(ValueError, match="the fuser failed on purpose") as got:
        pyfuse.fuse(gm, False, backend_config=_raising_backend())
    assert type(got.value) is type(ref.value)
    shown = _shown(got.value)
    assert "pyfuse: while fusing Conv2d -> BatchNorm2d at nodes ['bn', 'conv']" in shown
    assert "(the model is unchanged)" in shown
    assert gm.code == code
    assert isinstance(gm.bn, nn.BatchNorm2d)


@pytest.mark.parametrize(
    "exc", [ValueError("a message"), KeyError("key"), RuntimeError()], ids=repr
)
def test_add_note_is_shown_with_the_exception(exc):
    add_note(exc, "pyfuse: a note")
    try:
        raise exc
    except type(exc) as e:
        shown = _shown(e)
    assert "pyfuse: a note" in shown
    assert getattr(exc, "__notes__", None) == ["pyfuse: a note"]
