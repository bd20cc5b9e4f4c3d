"""torch's fusion pass with the defects README's "Differences" table documents fixed
("the fixed reference"): what the fuzzers' oracles judge pyfuse against.

torch's ``fuse`` (``tests.support.contract.REFERENCE_FUSE``) and ``_find_matches``
are pinned at import (a patch applied later, e.g. a ``pyfuse.patch_torch()`` left in
place, cannot reach them; the import fails if one is already in place). :func:`walk` is a copy of torch's ``_find_matches`` with
only these changes:

- ``exclude``: a (last node, pattern) pair listed there is not tried at that node, the
  next pattern is (how a match left unfused is taken out of the walk);
- a literal reached by a pattern position is recorded as itself, with no arguments
  (torch crashes reading its ``.name``);
- ``alias_paths``: call_module targets are looked up among every path of the module
  tree, aliases included (torch looks them up in the de-duplicated
  ``named_modules()``: KeyError for a module reachable only by an alias path).

:func:`fixed_reference` runs torch's own ``fuse`` with that walk and with two folding
helpers fixed: BN folded into a grouped ConvTranspose with the right weight layout, and
a ``BatchNorm1d(affine=False)`` folded into a Linear with weight 1 and bias 0.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import traceback
import warnings
from typing import Any

import torch
import torch.nn.functional as F
import torch.nn.utils.fusion as torch_fusion
from torch import nn
from torch.fx import Node
from torch.nn.utils import parametrize

from tests.support.contract import REFERENCE_FUSE

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch.ao.quantization.fuser_method_mappings import get_fuser_method_new
    from torch.ao.quantization.fx.fuse_handler import DefaultFuseHandler
    from torch.ao.quantization.fx.match_utils import _is_match
    from torch.ao.quantization.utils import MatchAllNode, _parent_name

# (the package attribute `fuse` is the function; the module is reached by name)
torch_fuse_module = importlib.import_module("torch.ao.quantization.fx.fuse")
#: torch's walk, pinned at import as the contract pins torch's ``fuse``
REFERENCE_FIND_MATCHES = torch_fuse_module._find_matches
if REFERENCE_FIND_MATCHES.__module__ != "torch.ao.quantization.fx.fuse":
    raise RuntimeError(f"torch's walk is patched at import: {REFERENCE_FIND_MATCHES!r}")
_TORCH_CONV_BN_EVAL = torch_fusion.fuse_conv_bn_eval
_TORCH_LINEAR_BN_WEIGHTS = torch_fusion.fuse_linear_bn_weights

# --------------------------------------------------------------------------------------
# the fixed reference: torch's walk, with exclusions and literals


class Fixes:
    """Which fixes the last fixed-reference run used (for the outcome statistics)."""

    def __init__(self):
        self.used: set[str] = set()


class _LiteralAwareHandler(DefaultFuseHandler):
    """torch's ``DefaultFuseHandler.fuse``, with a literal in the matched node pattern
    passed to the fuser as itself (torch reads ``.op`` of it)."""

    def __init__(self, node, fixes):
        super().__init__(node)
        self.fixes = fixes

    def fuse(
        self,
        load_arg,
        named_modules,
        fused_graph,
        root_node,
        extra_inputs,
        matched_node_pattern,
        fuse_custom_config,  # noqa: ARG002 - unused, as in torch's handler
        fuser_method_mapping,
        is_qat,
    ):
        if root_node.op != "call_module":
            raise AssertionError("Expecting module node to be a call_module Node")
        root_module = named_modules[str(root_node.target)]

        def get_modules(pattern):
            if isinstance(pattern, (tuple, list)):
                n, *args = pattern
                return (get_modules(n), *(get_modules(a) for a in args))
            n = pattern
            if not isinstance(n, Node):
                self.fixes.used.add("literal")
                return n
            if n.op == "call_module":
                return named_modules[n.target]
            if n.op == "call_function" and n.target is F.relu:
                relu = nn.ReLU()
                relu.training = root_module.training
                return relu
            if n.op in ("call_function", "call_method"):
                return n.target
            return MatchAllNode

        matched_modules = get_modules(matched_node_pattern)

        def get_matched_types(m):
            if isinstance(m, tuple):
                return tuple(map(get_matched_types, m))
            if isinstance(m, nn.Module):
                return parametrize.type_before_parametrizations(m)
            return m

        matched_module_types = get_matched_types(matched_modules)
        module_parent_name, module_name = _parent_name(root_node.target)
        fuser_method = get_fuser_method_new(matched_module_types, fuser_method_mapping)
        fused_module = fuser_method(is_qat, *matched_modules)
        setattr(named_modules[module_parent_name], module_name, fused_module)
        extra_args = [load_arg(a) for a in extra_inputs]
        node = fused_graph.node_copy(root_node, load_arg)
        node.args = (*node.args, *extra_args)
        return node


def walk(
    root, graph, pattern_to_handler, exclude=frozenset(), fixes=None, alias_paths=False
):
    """torch's ``_find_matches`` with two changes: a (last node, pattern) pair in
    ``exclude`` is not tried (the next pattern is), and a literal reached by a pattern
    position is recorded as itself, with no arguments (torch crashes reading its
    ``.name``); with ``alias_paths``, modules are looked up by every path."""
    modules = dict(root.named_modules(remove_duplicate=not alias_paths))
    match_map: dict[str, tuple] = {}
    node_to_subpattern: dict[Node, Any] = {}

    def apply_match(pattern, node, match, matched_node_pattern, node_to_subpattern):
        if isinstance(pattern, tuple):
            s, *args = pattern
            current_node_pattern: list = []
            apply_match(s, node, match, current_node_pattern, node_to_subpattern)
            node_args = node.args if isinstance(node, Node) else ()  # a literal
            for subpattern, arg in zip(args, node_args, strict=False):
                apply_match(
                    subpattern, arg, match, current_node_pattern, node_to_subpattern
                )
            matched_node_pattern.append(tuple(current_node_pattern))
        elif not isinstance(node, Node):
            if fixes is not None:
                fixes.used.add("literal")
            matched_node_pattern.append(node)
        elif node.name not in match_map:
            matched_node_pattern.append(node)
            if pattern is not MatchAllNode:
                node_to_subpattern[node] = pattern
                root_node, pattern, handler = match
                match_map[node.name] = (
                    root_node,
                    pattern,
                    matched_node_pattern,
                    handler,
                    node_to_subpattern,
                )

    for node in reversed(graph.nodes):
        if node.name in match_map:
            continue
        for pattern, handler_cls in pattern_to_handler.items():
            if (node, pattern) in exclude:
                continue
            matched_node_pattern: list = []
            if _is_match(modules, node, pattern):
                handler = (
                    _LiteralAwareHandler(node, fixes)
                    if fixes is not None
                    else handler_cls(node)
                )
                apply_match(
                    pattern,
                    node,
                    (node, pattern, handler),
                    matched_node_pattern,
                    node_to_subpattern,
                )
                break
    return match_map


def _grouped_convtranspose_fold(convt, bn, fixes):
    """BN folded into a grouped ConvTranspose: the weight is viewed in conv layout
    (output channel first), folded by torch's own ``fuse_conv_bn_weights``, and
    viewed back."""
    if convt.training or bn.training:
        raise AssertionError("Fusion only for eval!")
    if bn.running_mean is None or bn.running_var is None:
        raise AssertionError("bn.running_mean and bn.running_var must not be None")
    fixes.used.add("grouped ConvTranspose + BN")
    g = convt.groups
    w = convt.weight  # (in, out / g, *k)
    c_in, c_out_g, *k = w.shape
    as_conv = (
        w.reshape(g, c_in // g, c_out_g, *k)
        .transpose(1, 2)
        .reshape(g * c_out_g, c_in // g, *k)
    )
    fw, fb = torch_fusion.fuse_conv_bn_weights(
        as_conv,
        convt.bias,
        bn.running_mean,
        bn.running_var,
        bn.eps,
        bn.weight,
        bn.bias,
        False,
    )
    back = (
        fw.detach()
        .reshape(g, c_out_g, c_in // g, *k)
        .transpose(1, 2)
        .reshape(w.shape)
        .contiguous()
    )
    fused = copy.deepcopy(convt)
    fused.weight = nn.Parameter(back, fw.requires_grad)
    fused.bias = fb
    return fused


@contextlib.contextmanager
def fixed_reference(exclude, fixes):
    """torch's pass with the documented defects fixed, inside the block."""

    def conv_bn_eval(conv, bn, transpose=False):
        if transpose and conv.groups > 1:
            return _grouped_convtranspose_fold(conv, bn, fixes)
        return _TORCH_CONV_BN_EVAL(conv, bn, transpose)

    def linear_bn_weights(lw, lb, rm, rv, eps, bw, bb):
        if bw is None or bb is None:
            fixes.used.add("Linear + BN(affine=False)")
            bw = torch.ones_like(rm) if bw is None else bw
            bb = torch.zeros_like(rm) if bb is None else bb
        return _TORCH_LINEAR_BN_WEIGHTS(lw, lb, rm, rv, eps, bw, bb)

    def find_matches(root, graph, pattern_to_handler):
        return walk(root, graph, pattern_to_handler, exclude, fixes)

    patches = [
        (torch_fuse_module, "_find_matches", find_matches),
        (torch_fusion, "fuse_conv_bn_eval", conv_bn_eval),
        (torch_fusion, "fuse_linear_bn_weights", linear_bn_weights),
    ]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    try:
        for mod, name, value in patches:
            setattr(mod, name, value)
        yield
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)


def is_literal_crash(exc):
    """torch's walk crashed reading a literal's ``.name``."""
    if not isinstance(exc, AttributeError) or "has no attribute 'name'" not in str(exc):
        return False
    return any(f.name == "apply_match" for f in traceback.extract_tb(exc.__traceback__))


def run_fixed(gm, is_qat, backend_config, exclude=frozenset(), fixes=None):
    """The fixed reference on ``gm``: torch's pinned ``fuse`` inside
    :func:`fixed_reference`."""
    with fixed_reference(exclude, fixes if fixes is not None else Fixes()):
        return REFERENCE_FUSE(gm, is_qat, None, backend_config)
