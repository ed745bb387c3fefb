"""``extract``: the subgraph between named tensors, with input/output dtypes and shapes inferred."""

from __future__ import annotations

import argparse
import difflib
from typing import Any, Iterable

import numpy as np

from trtflow.errors import GraphError, UsageError
from trtflow.graph.ir import export_graph, import_graph, infer_shapes
from trtflow.edits.registry import Edit, register


def _names(text: str | Iterable[str] | None) -> list[str]:
    if text is None:
        return []
    items = [text] if isinstance(text, str) else list(text)
    return [n.strip() for item in items for n in item.split(",") if n.strip()]


def _lookup(tensors: dict, name: str, flag: str):
    if name not in tensors:
        close = difflib.get_close_matches(name, list(tensors), n=3)
        hint = f"; did you mean {close}?" if close else "; list tensor names with `trtflow inspect`"
        raise UsageError(f"{flag} names '{name}', which is no tensor of the graph{hint}")
    return tensors[name]


def extract_subgraph(proto: Any, inputs: Iterable[str] | None, outputs: Iterable[str]) -> tuple[Any, dict]:
    """Cut the graph to the nodes between ``inputs`` and ``outputs``.

    Args:
        proto: an onnx.ModelProto.
        inputs: tensor names that become the graph inputs (empty: keep the model's inputs).
        outputs: tensor names that become the graph outputs.

    Returns:
        ``(new_proto, report)`` with the new ``inputs``/``outputs`` specs and ``nodes_kept``.

    Raises:
        UsageError: an unknown tensor name, or no outputs.
        GraphError: a tensor without an inferable dtype, or a subgraph that needs more inputs.
    """
    import onnx_graphsurgeon as gs

    inputs, outputs = _names(inputs), _names(outputs)
    if not outputs:
        raise UsageError("extract needs --outputs NAME[,NAME]")
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
        t.inputs.clear()
    graph.inputs, graph.outputs = new_inputs, new_outputs
    graph.cleanup(remove_unused_graph_inputs=True)
    given = {t.name for t in new_inputs}
    missing = sorted({t.name for node in graph.nodes for t in node.inputs
                      if isinstance(t, gs.Variable) and t.name and not t.inputs and t.name not in given})
    if missing:
        raise GraphError(f"the subgraph also reads {missing}, which are not among its inputs; "
                         f"add them to --inputs (e.g. --inputs {','.join([*inputs, *missing])})")
    new = infer_shapes(export_graph(graph, like=proto))
    from trtflow.graph.io import onnx_specs

    ins, outs = onnx_specs(new)
    report = {"inputs": [s.to_dict() for s in ins], "outputs": [s.to_dict() for s in outs], "nodes_kept": len(new.graph.node)}
    return new, report


def verify_extract(before: Any, after: Any, args: argparse.Namespace, feeds=None) -> dict:
    """Feed the subgraph the before model's intermediate tensors and compare its outputs with the before model's."""
    from onnx import helper

    from trtflow.compare.core import Tolerances
    from trtflow.graph.io import onnx_specs
    from trtflow.edits.verify import VerifyConfig, build_feeds, compare_models, run_ort

    if feeds is None:
        config = getattr(args, "verify_config", None) or VerifyConfig(args.atol, args.rtol)
        feeds = build_feeds(before, None, config)  # raises the UsageError asking for --shapes
    sub_in, sub_out = onnx_specs(after)
    wanted = [s.name for s in (*sub_in, *sub_out)]
    probe = infer_shapes(before)
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
        labelled.append((label, feed))
    # the reference is the probe model (the original with the cut tensors exposed), restricted to the subgraph outputs
    return compare_models(probe, after, labelled, Tolerances(args.atol, args.rtol), after_feeds=after_feeds,
                          what="the extracted subgraph")


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inputs", metavar="A,B", help="tensors that become the inputs (default: the model's)")
    parser.add_argument("--outputs", metavar="C,D", required=True, help="tensors that become the outputs")


def _apply(proto: Any, args: argparse.Namespace) -> tuple[Any, dict]:
    return extract_subgraph(proto, args.inputs, args.outputs)


register(Edit(
    name="extract",
    help="keep the subgraph between named tensors (--inputs a,b --outputs c,d); dtypes and shapes inferred",
    add_arguments=_add_arguments,
    apply=_apply,
    verify=verify_extract,
))
