"""``rename``: rename model inputs and outputs (``--input old=new``, ``--output old=new``)."""

from __future__ import annotations

import argparse
from typing import Any, Mapping

from trtflow.errors import GraphError, UsageError
from trtflow.graph.ir import export_graph, import_graph
from trtflow.edits.registry import Edit, register
from trtflow.spec import parse_pairs


def rename_io(proto: Any, inputs: Mapping[str, str] | None = None,
              outputs: Mapping[str, str] | None = None) -> tuple[Any, dict]:
    """Rename graph inputs and outputs.

    Args:
        proto: an onnx.ModelProto.
        inputs: old input name -> new name.
        outputs: old output name -> new name.

    Returns:
        ``(new_proto, report)`` with ``input_map`` and ``output_map``.

    Raises:
        UsageError: a name that is not an input/output, or a new name already used in the graph.
    """
    inputs, outputs = dict(inputs or {}), dict(outputs or {})
    if not inputs and not outputs:
        raise UsageError("nothing to rename: give --input OLD=NEW and/or --output OLD=NEW")
    graph = import_graph(proto, infer=False)
    tensors = graph.tensors()
    for kind, mapping, present in (("input", inputs, graph.inputs), ("output", outputs, graph.outputs)):
        names = [t.name for t in present]
        for old, new in mapping.items():
            if old not in names:
                raise UsageError(f"'{old}' is not a model {kind}; the model's {kind}s are {names}")
            if new in tensors and new != old and new not in (*inputs, *outputs):
                raise UsageError(f"cannot rename {kind} '{old}' to '{new}': the graph already has a tensor '{new}'")
    for old, new in {**inputs, **outputs}.items():
        tensors[old].name = new
    try:
        new_proto = export_graph(graph, like=proto)
    except Exception as exc:
        raise GraphError(f"renaming produced an invalid graph: {exc}") from None
    return new_proto, {"input_map": inputs, "output_map": outputs}


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", dest="rename_inputs", action="append", metavar="OLD=NEW",
                        help="rename a model input (repeatable)")
    parser.add_argument("--output", dest="rename_outputs", action="append", metavar="OLD=NEW",
                        help="rename a model output (repeatable)")


def _apply(proto: Any, args: argparse.Namespace) -> tuple[Any, dict]:
    return rename_io(proto, parse_pairs(args.rename_inputs, "--input", "OLD=NEW, e.g. --input input.1=images"), parse_pairs(args.rename_outputs, "--output", "OLD=NEW, e.g. --output 495=logits"))


register(Edit(
    name="rename",
    help="rename model inputs/outputs (--input old=new, --output old=new); verification inputs go with --feed",
    add_arguments=_add_arguments,
    apply=_apply,
    atol=0.0,
    rtol=0.0,
))
