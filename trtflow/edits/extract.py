"""``extract``: the subgraph between named tensors, with input/output dtypes and shapes inferred."""

from __future__ import annotations

import copy
import difflib
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from trtflow.edits import fields
from trtflow.edits.registry import Edit, register
from trtflow.edits.verify import VerifyConfig, build_feeds, compare_models, run_ort
from trtflow.errors import GraphError, UsageError
from trtflow.graph.io import give_shape, load_onnx, onnx_specs, unranked_inputs
from trtflow.graph.ir import export_graph, import_graph, infer_shapes
from trtflow.graph.nms_head import NMS_OPS, raw_head
from trtflow.progress import Progress
from trtflow.spec import Shape, format_shape


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractOptions:
    """Options of the ``extract`` edit.

    Attributes:
        outputs: tensor names that become the graph outputs (``"c,d"`` works too).
        inputs: tensor names that become the graph inputs (empty: keep the model's inputs).
        shapes: input name -> static shape, for the inputs of the subgraph whose rank shape inference
            cannot find (a dtype but no shape, e.g. after a Reshape by a shape computed at run time).
    """

    outputs: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    shapes: Mapping[str, Shape] = field(default_factory=dict)

    def __post_init__(self):
        fields.set_field(self, "outputs", fields.names(self.outputs, "outputs"))
        fields.set_field(self, "inputs", fields.names(self.inputs, "inputs"))
        fields.set_field(self, "shapes", fields.shape_map(self.shapes, "shapes"))
        for what, names in (("outputs", self.outputs), ("inputs", self.inputs)):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise UsageError(f"--{what} names {', '.join(repr(n) for n in twice)} more than once; "
                                 "name each tensor once")
        if not self.outputs:
            raise UsageError("extract needs --outputs NAME[,NAME] (outputs= in Python)")


def _lookup(tensors: dict, name: str, flag: str):
    if name not in tensors:
        close = difflib.get_close_matches(name, list(tensors), n=3)
        hint = f"; did you mean {close}?" if close else "; list tensor names with `trtflow inspect`"
        raise UsageError(f"{flag} names '{name}', which is no tensor of the graph{hint}")
    return tensors[name]


def extract_subgraph(proto: Any, options: ExtractOptions) -> tuple[Any, dict]:
    """Cut the graph to the nodes between ``options.inputs`` and ``options.outputs``.

    Args:
        proto: an onnx.ModelProto, or a path or bytes of one.
        options: the tensor names that become the inputs and outputs.

    Returns:
        ``(new_proto, report)`` with the new ``inputs``/``outputs`` specs and ``nodes_kept``.

    Raises:
        UsageError: an unknown tensor name; a tensor of ``options.inputs`` the outputs do not depend on;
            an input of the subgraph of unknown rank without a shape in ``options.shapes``, or a shape
            there for another tensor.
        GraphError: a tensor without an inferable dtype, or a subgraph that needs more inputs.
    """
    import onnx_graphsurgeon as gs

    inputs, outputs = list(options.inputs), list(options.outputs)
    proto = load_onnx(proto)
    graph = import_graph(proto)
    tensors = graph.tensors()
    new_inputs = [_lookup(tensors, n, "--inputs") for n in inputs] if inputs else list(graph.inputs)
    new_outputs = [_lookup(tensors, n, "--outputs") for n in outputs]
    for t in [*new_inputs, *new_outputs]:
        if isinstance(t, gs.Constant):
            raise UsageError(f"'{t.name}' is a constant (initializer); pick a computed tensor")
        if t.dtype is None:
            raise GraphError(f"tensor '{t.name}' has no inferred dtype; run `trtflow surgeon fix-shapes` or "
                             "`simplify` first so shape inference can type it")
    for t in new_inputs:  # an input is produced by nobody in the subgraph
        for producer in list(t.inputs):  # a placeholder keeps the producer's other outputs in place (Split)
            producer.outputs[producer.outputs.index(t)] = gs.Variable(f"{t.name}__cut")
    graph.inputs, graph.outputs = new_inputs, new_outputs
    graph.cleanup(remove_unused_graph_inputs=True)
    kept = {t.name for t in graph.inputs}
    unused = [n for n in inputs if n not in kept]  # cleanup dropped them
    given = {t.name for t in new_inputs}
    missing = sorted({t.name for node in graph.nodes for t in node.inputs
                      if isinstance(t, gs.Variable) and t.name and not t.inputs and t.name not in given})
    if missing:
        example = ",".join([*(n for n in inputs if n in kept), *missing])
        raise GraphError(f"the subgraph also reads {missing}, which are not among its inputs; "
                         f"add them to --inputs (e.g. --inputs {example})"
                         + (f"; the outputs do not depend on {unused}: remove them" if unused else ""))
    if unused:
        raise UsageError(f"--inputs names {unused}, which the outputs {outputs} do not depend on; remove them from "
                         "--inputs, or add outputs computed from them to --outputs")
    new = _shape_unranked_inputs(infer_shapes(export_graph(graph, like=proto)), options.shapes)
    ins, outs = onnx_specs(new)
    report = {"inputs": [s.to_dict() for s in ins], "outputs": [s.to_dict() for s in outs], "nodes_kept": len(new.graph.node)}
    nms = [n for n in new.graph.node if n.op_type in NMS_OPS]
    if nms:
        report["warning"] = (
            f"the outputs still depend on {nms[0].op_type} (node '{nms[0].name}'), which TensorRT-RTX cannot build; "
            f"extract the raw detection head instead (--outputs {','.join(raw_head(new, nms[0]))}) or build the "
            "model from before add-nms, and run NMS after the engine (trtflow.vision.decode_detections)")
        log.warning("%s", report["warning"])
    return new, report


def _shape_unranked_inputs(proto: Any, shapes: Mapping[str, Shape]) -> Any:
    """Give each graph input of unknown rank (a dtype, no shape) its shape in ``shapes``, and infer again."""
    names = unranked_inputs(proto)
    other = [n for n in shapes if n not in names]
    if other:
        raise UsageError(f"--shape names {other}, which are not cut inputs of unknown rank (those: {names or 'none'}); "
                         "--shape is for inputs shape inference left without a rank, "
                         "`trtflow surgeon fix-shapes` makes the dims of the others static")
    missing = [n for n in names if n not in shapes]
    if missing:
        raise UsageError(f"inputs {missing} of the subgraph have a dtype but no shape: shape inference cannot tell "
                         "their rank (e.g. a Reshape by a shape computed at run time); give each one its shape: "
                         + " ".join(f"--shape {n}:DIMS" for n in missing) + " (shapes= in Python), "
                         "or cut at other tensors")
    if not names:
        return proto
    for v in proto.graph.input:
        if v.name in shapes:
            give_shape(v, shapes[v.name])
    del proto.graph.value_info[:]
    return infer_shapes(proto)


def verify_extract(before: Any, after: Any, options: ExtractOptions | None = None,
                   verify_config: VerifyConfig | None = None, feeds=None, progress: Progress | None = None) -> dict:
    """Feed the subgraph the before model's intermediate tensors and compare its outputs with the before model's.

    Args:
        before: the whole model. after: the extracted subgraph.
        options: the extract options (the subgraph's own inputs and outputs say what to compare; its
            ``shapes`` are named when a cut tensor has another shape).
        verify_config: tolerances, inputs, shapes and seed (None: the defaults).
        feeds: ``[(label, {input: array})]`` for the before model (None: built from ``verify_config``).
        progress: told before each feed runs.

    Raises:
        UsageError: dynamic dims without shapes; a cut tensor whose shape in the original model is not
            the subgraph input's. MismatchError: an output out of tolerance.
    """
    from onnx import helper

    config = verify_config or VerifyConfig()
    if feeds is None:
        feeds = build_feeds(before, None, config)  # raises the UsageError asking for --shapes
    sub_in, sub_out = onnx_specs(after)
    wanted = [s.name for s in (*sub_in, *sub_out)]
    probe = infer_shapes(before)
    if probe is before:  # inference failed and handed the model back: expose the tensors on a copy
        probe = copy.deepcopy(before)
    have = {o.name for o in probe.graph.output}
    typed = {v.name: v for v in (*probe.graph.value_info, *probe.graph.input)}
    for name in wanted:
        if name not in have:
            probe.graph.output.append(typed[name] if name in typed else helper.make_empty_tensor_value_info(name))
            have.add(name)
    after_feeds, labelled = [], []
    for label, feed in feeds:
        values = run_ort(probe, feed)
        after_feeds.append({s.name: np.asarray(values[s.name]) if s.name in values else feed[s.name] for s in sub_in})
        _check_cut_shapes(sub_in, after_feeds[-1], label, options)
        labelled.append((label, feed))
    # the reference is the probe model (the original with the cut tensors exposed), restricted to the subgraph outputs
    return compare_models(probe, after, labelled, config.tolerances, after_feeds=after_feeds,
                          what="the extracted subgraph", progress=progress, subset=True)


def _check_cut_shapes(specs, feed: dict, label: str, options: ExtractOptions | None) -> None:
    """Refuse a value of the original model that the subgraph input it feeds cannot take."""
    for spec in specs:
        value = feed[spec.name]
        if spec.takes(value.shape):
            continue
        given = options is not None and spec.name in options.shapes
        raise UsageError(f"cut input '{spec.name}' is {tuple(value.shape)} in the original model (feed {label}), but "
                         f"the subgraph takes {spec.describe_shape()}"
                         + (f"; give its shape as it is: --shape {spec.name}:{format_shape(value.shape)}" if given
                            else ""))


register(Edit(
    name="extract",
    help="keep the subgraph between named tensors (--inputs a,b --outputs c,d); dtypes and shapes inferred",
    options=ExtractOptions,
    apply=extract_subgraph,
    verify=verify_extract,
))
