"""``fold_batch_norm``: a new ExportedProgram with its inference BatchNorms folded.

Works on the program's own graph, where parameters and buffers are lifted
placeholders: as exported (``conv2d``, ``linear``, ``batch_norm``) and after
``run_decompositions()`` (``convolution``, ``permute`` + ``addmm`` / ``mm``,
``_native_batch_norm_legit_no_training`` + ``getitem``). The same sites, checks
and arithmetic as the pt2e flow; the input program is never changed: the graph
is copied, folded tensors go into a new state dict, the folded BatchNorms'
parameters and buffers leave it and the graph signature, and a bias-less
producer gets a new bias parameter (``<module>.bias``).
"""

from __future__ import annotations

import copy
import dataclasses
import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import (
    ExportGraphSignature,
    InputKind,
    InputSpec,
    OutputSpec,
    TensorArgument,
)
from torch.fx import Graph, GraphModule, Node

from ..engine.gcpause import gc_paused
from ..report import Fused, FuseReport, Skipped
from .dce import eliminate_dead_code
from .match import find_sites
from .ops import CONV_PRODUCERS, DECOMPOSED_PRODUCERS, LINEAR_PRODUCERS
from .plan import Group, plan_folds
from .weights import fold_weights

__all__ = ["PRODUCERS", "fold_batch_norm", "fold_program", "plan_program"]

aten = torch.ops.aten
PRODUCERS = CONV_PRODUCERS + LINEAR_PRODUCERS + DECOMPOSED_PRODUCERS
_KEEPABLE = (InputKind.PARAMETER, InputKind.BUFFER)


def bias_name(weight_key: str) -> str:
    """``conv.weight`` -> ``conv.bias``: the folded bias of a bias-less producer."""
    if weight_key == "weight" or weight_key.endswith(".weight"):
        return weight_key[: -len("weight")] + "bias"
    return weight_key + "_bias"


class ProgramStore:
    """Constants of an ExportedProgram: its lifted parameters and buffers."""

    def __init__(self, ep: ExportedProgram, graph: Graph) -> None:
        self.ep = ep
        self.spec_of: dict[str, InputSpec] = {}
        for spec in ep.graph_signature.input_specs:
            if isinstance(spec.arg, TensorArgument) and spec.target is not None:
                self.spec_of[spec.arg.name] = spec
        self._readers: dict[str, list[Node]] = {}
        for n in graph.find_nodes(op="placeholder"):
            spec = self.spec_of.get(n.name)
            if spec is not None and spec.target is not None:
                self._readers.setdefault(spec.target, []).append(n)

    def key(self, node: Node) -> str | None:
        if node.op != "placeholder":
            return None
        spec = self.spec_of.get(node.name)
        return spec.target if spec is not None else None

    def readers(self, key: str) -> list[Node]:
        return self._readers.get(key, [])

    def replaceable(self, key: str) -> str | None:
        spec = self.spec_of[self._readers[key][0].name]
        if spec.kind not in _KEEPABLE or key not in self.ep.state_dict:
            return f"{key!r} is a lifted constant, not a parameter or buffer"
        return None

    def exists(self, key: str) -> bool:
        return (
            key in self.ep.state_dict
            or key in self.ep.constants
            or key in self._readers
        )

    def tensor(self, key: str) -> torch.Tensor:
        value = self.ep.state_dict.get(key)
        if value is None:
            value = self.ep.constants.get(key)
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"the program's constant {key!r} is not a tensor")
        return value


@dataclass
class ProgramPlan:
    """The copied graph, its constants and what folds."""

    graph: Graph
    store: ProgramStore
    groups: list[Group]
    skipped: list[Skipped]


def _copy_graph(ep: ExportedProgram) -> Graph:
    graph = Graph()
    graph._codegen = copy.deepcopy(ep.graph._codegen)
    val_map: dict[Node, Node] = {}
    out = graph.graph_copy(ep.graph, val_map, return_output_node=True)
    assert isinstance(out, tuple)
    value, old_output = out
    new_output = graph.output(value, type_expr=old_output.type)
    new_output.meta = copy.copy(old_output.meta)
    return graph


def plan_program(ep: ExportedProgram) -> ProgramPlan:
    """Copy `ep`'s graph and decide its folds (nothing of `ep` changes)."""
    if not isinstance(ep, ExportedProgram):
        raise TypeError(
            f"fold_batch_norm needs a torch.export.ExportedProgram, "
            f"got {type(ep).__name__}"
        )
    graph = _copy_graph(ep)
    sites = find_sites(graph, ep.graph_module, PRODUCERS)
    store = ProgramStore(ep, graph)
    plan = plan_folds(sites, PRODUCERS, store, check_rank=True, new_bias_name=bias_name)
    return ProgramPlan(
        graph, store, plan.groups, [Skipped(p, n, r) for p, n, r in plan.skipped]
    )


def _compute(group: Group, store: ProgramStore) -> tuple[torch.Tensor, torch.Tensor]:
    s = group.first
    bw_key, bb_key, rm_key, rv_key = s.bn_keys
    bw = store.tensor(bw_key) if bw_key is not None else None
    bb = store.tensor(bb_key) if bb_key is not None else None
    w = store.tensor(s.weight_key)
    b = store.tensor(s.bias_key) if s.bias_key is not None else None
    return fold_weights(
        s.producer.kind,
        s.transpose,
        s.groups,
        w,
        b,
        store.tensor(rm_key),
        store.tensor(rv_key),
        s.eps,
        bw,
        bb,
    )


def _new_placeholder(graph: Graph, after: Node, kind: InputKind, key: str) -> Node:
    """A placeholder for the new constant `key`, named as export names them."""
    base = ("p_" if kind == InputKind.PARAMETER else "b_") + key.replace(
        ".", "_"
    ).lower()
    with graph.inserting_after(after):
        node = graph.create_node("placeholder", base, name=base)
    node.target = node.name
    return node


def _redirect(bn: Node, prod: Node, tuple_output: bool) -> None:
    if not tuple_output:
        bn.replace_all_uses_with(prod)
        return
    for user in list(bn.users):
        if (
            user.op == "call_function"
            and user.target is operator.getitem
            and user.args[1] == 0
        ):
            user.replace_all_uses_with(prod)


def fold_program(ep: ExportedProgram) -> tuple[ExportedProgram, FuseReport]:
    """`fold_batch_norm`, with the report of folds made and BatchNorms left."""
    with gc_paused():  # the pass only allocates; see gc_paused
        return _fold_program(ep)


def _fold_program(ep: ExportedProgram) -> tuple[ExportedProgram, FuseReport]:
    p = plan_program(ep)
    graph, store = p.graph, p.store
    folded = [(g, *_compute(g, store)) for g in p.groups]
    state_dict: dict[str, Any] = dict(ep.state_dict)
    new_specs: dict[str, InputSpec] = {}  # new placeholder name -> spec
    report = FuseReport(skipped=list(p.skipped))
    bn_keys: set[str] = set()
    added: dict[str, tuple[str, torch.Tensor]] = {}  # weight key -> new bias after it
    for group, weight, bias in folded:
        s = group.first
        w_spec = store.spec_of[s.weight_node.name]
        state_dict[s.weight_key] = _like(weight, ep.state_dict[s.weight_key])
        bias_key = s.bias_key
        new_bias: Node | None = None
        if bias_key is None:
            bias_key = bias_name(s.weight_key)
            added[s.weight_key] = (bias_key, _like(bias, ep.state_dict[s.weight_key]))
            new_bias = _new_placeholder(graph, s.weight_node, w_spec.kind, bias_key)
            val = s.weight_node.meta.get("val")
            if val is not None and hasattr(val, "fake_mode"):
                new_bias.meta["val"] = val.fake_mode.from_tensor(
                    bias, static_shapes=True
                )
            new_specs[new_bias.name] = InputSpec(
                w_spec.kind,
                TensorArgument(new_bias.name),
                bias_key,
                True if w_spec.kind == InputKind.BUFFER else None,
            )
        else:
            state_dict[bias_key] = _like(bias, ep.state_dict[bias_key])
        for site in group.sites:
            prod = site.prod
            if new_bias is not None:
                if site.producer.kind == "mm":
                    x, perm = prod.args[0], prod.args[1]
                    with graph.inserting_before(prod):
                        addmm = graph.call_function(
                            aten.addmm.default, (new_bias, x, perm)
                        )
                    addmm.meta = copy.copy(prod.meta)
                    prod = addmm
                else:
                    args = list(prod.args)
                    if len(args) == 2:
                        args.append(None)
                    args[2] = new_bias
                    prod.args = tuple(args)
            _redirect(site.bn, prod, site.norm.tuple_output)
            report.fused.append(
                Fused(
                    site.pattern,
                    (site.prod.name, site.bn.name),
                    (s.weight_key, bias_key),
                    "folded",
                )
            )
            bn_keys.update(k for k in site.bn_keys if k is not None)
            prefix = site.bn_keys[2].rpartition(".")[0]
            bn_keys.add(
                f"{prefix}.num_batches_tracked" if prefix else "num_batches_tracked"
            )
    eliminate_dead_code(graph)
    for group, _w, _b in folded:
        for site in group.sites:
            if not site.bn._erased and not site.bn.users:
                graph.erase_node(site.bn)
    # the folded BatchNorms' constants nothing reads any more leave the program
    for key in sorted(bn_keys):
        for ph in store.readers(key):
            if not ph.users:
                graph.erase_node(ph)
                state_dict.pop(key, None)
    ordered: dict[str, Any] = {}
    for key, value in state_dict.items():
        ordered[key] = value
        if key in added:
            ordered[added[key][0]] = added[key][1]
    return _rebuild(ep, graph, ordered, new_specs), report


def _like(value: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """`value` as the kind of tensor `original` is (Parameter or plain)."""
    if isinstance(original, torch.nn.Parameter):
        return (
            value
            if isinstance(value, torch.nn.Parameter)
            else torch.nn.Parameter(value.detach(), original.requires_grad)
        )
    return value.detach()


def _rebuild(
    ep: ExportedProgram,
    graph: Graph,
    state_dict: dict[str, Any],
    new_specs: dict[str, InputSpec],
) -> ExportedProgram:
    old = {
        s.arg.name: s for s in ep.graph_signature.input_specs if hasattr(s.arg, "name")
    }
    old_inputs = list(ep.graph_signature.input_specs)
    input_specs: list[InputSpec] = []
    by_position = iter(old_inputs)
    for ph in graph.find_nodes(op="placeholder"):
        if ph.name in new_specs:
            input_specs.append(new_specs[ph.name])
            continue
        spec = old.get(ph.name)
        if spec is None:  # a non-tensor input (constant / token): keep its order
            spec = next(s for s in by_position if not hasattr(s.arg, "name"))
        input_specs.append(spec)
    output = graph.output_node()
    values = output.args[0]
    flat = list(values) if isinstance(values, list | tuple) else [values]
    renamed: dict[str, str] = {}
    output_specs: list[OutputSpec] = []
    for out_spec, value in zip(ep.graph_signature.output_specs, flat, strict=True):
        if (
            isinstance(out_spec.arg, TensorArgument)
            and isinstance(value, Node)
            and value.name != out_spec.arg.name
        ):
            renamed[out_spec.arg.name] = value.name
            out_spec = OutputSpec(  # noqa: PLW2901
                out_spec.kind,
                TensorArgument(value.name),
                out_spec.target,
            )
        output_specs.append(out_spec)
    signature = ExportGraphSignature(input_specs=input_specs, output_specs=output_specs)

    def rename(args: list[Any]) -> list[Any]:
        return [
            TensorArgument(renamed.get(a.name, a.name))
            if isinstance(a, TensorArgument)
            else a
            for a in args
        ]

    module_call_graph = []  # entries shared with `ep`, except those renamed
    for entry in ep.module_call_graph:
        sig = entry.signature
        if sig is not None and any(
            isinstance(a, TensorArgument) and a.name in renamed
            for a in list(sig.inputs) + list(sig.outputs)
        ):
            sig = dataclasses.replace(
                sig, inputs=rename(sig.inputs), outputs=rename(sig.outputs)
            )
            module_call_graph.append(dataclasses.replace(entry, signature=sig))
        else:
            module_call_graph.append(entry)
    gm = GraphModule(ep.graph_module, graph)
    gm.meta.update(ep.graph_module.meta)
    return ExportedProgram(
        root=gm,
        graph=gm.graph,
        graph_signature=signature,
        state_dict=state_dict,
        range_constraints=copy.deepcopy(ep.range_constraints),
        module_call_graph=module_call_graph,
        example_inputs=ep.example_inputs,
        constants=dict(ep.constants),
        verifiers=list(ep.verifiers),
    )


def fold_batch_norm(ep: ExportedProgram) -> ExportedProgram:
    """A new program with every safe conv / conv-transpose / linear + inference
    BatchNorm of `ep` folded (also after ``run_decompositions()``); `ep` is left
    as it was. BatchNorms whose fold would change the program's output stay."""
    return fold_program(ep)[0]
