"""Match records (pyfuse.engine.matching) equal the reference's ``_find_matches``,
for plain matches (built from the pattern's shape) and for the others (the
reference's walk replayed, reading the core's claims: ``MatchResult.owner``)."""

from __future__ import annotations

import pytest
import torch.fx

from pyfuse.engine.flatten import flatten
from pyfuse.engine.matching import find_matches, match_graph
from pyfuse.engine.patterns import compile_patterns
from tests.support.contract import same_matches, sorted_fusion_handlers
from tests.support.corpus import BACKENDS, MODELS_BY_NAME


@pytest.mark.parametrize(
    ("model", "backend"),
    [
        ("resnet18", "onednn"),
        ("onednn_residual", "onednn"),
        ("resnet18", "native"),
        ("add_kwarg", "onednn"),
    ],
)
def test_records_equal_the_reference(model, backend):
    from torch.ao.quantization.fx.fuse import _find_matches

    gm = torch.fx.symbolic_trace(MODELS_BY_NAME[model].factory().eval())
    handlers = sorted_fusion_handlers(BACKENDS[backend]())
    patterns = list(handlers)
    assert same_matches(
        _find_matches(gm, gm.graph, handlers), find_matches(gm, gm.graph, patterns)
    )


def test_both_kinds_of_record_are_exercised():
    """onednn's add patterns hold MatchAllNode: those matches are replayed; its
    conv-bn-relu chains are plain."""
    gm = torch.fx.symbolic_trace(MODELS_BY_NAME["resnet18"].factory().eval())
    patterns = list(sorted_fusion_handlers(BACKENDS["onednn"]()))
    compiled = compile_patterns(patterns)
    matches = match_graph(compiled, flatten(gm.graph, gm, compiled))
    kinds = {m.plain for m in matches}
    assert kinds == {True, False}
    for m in matches:
        assert m.node_pattern  # built (or replayed) on demand
        assert m.last.name in m.entries


def test_only_the_patterns_that_match_get_a_shape():
    """A pattern's record builder is compiled (an ``exec``) when a match first
    needs it: a graph matches few of a config's patterns."""
    from torch import nn

    from pyfuse.engine.matching import plain_shapes

    patterns = [(nn.ReLU, (nn.BatchNorm2d, nn.Conv2d)), (nn.ReLU, nn.Linear)]
    patterns.append((nn.ReLU, "method_only_in_this_test"))
    gm = torch.fx.symbolic_trace(
        nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1), nn.ReLU()).eval()
    )
    compiled = compile_patterns(patterns)
    matches = match_graph(compiled, flatten(gm.graph, gm, compiled))
    assert [m.pattern_index for m in matches] == [0]
    assert matches[0].plain
    built = [isinstance(s, tuple) for s in plain_shapes(compiled.patterns)]
    assert built == [True, False, False]
