"""trtflow inspect MODEL: inputs, outputs, opset, node count and op histogram."""

from __future__ import annotations

import argparse
from collections import Counter

from trtflow.cli import options, output

HELP = "show an ONNX model's inputs, outputs, opset and operators"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an .onnx file")
    options.add_json(parser)


def _dims(shape) -> str:
    return "? (rank unknown)" if shape is None else "x".join(map(str, shape)) or "scalar"


def summary(model) -> dict:
    """What ``inspect`` reports, as a dict (an input or output of unknown rank, or not a tensor, has
    ``shape`` None)."""
    from trtflow.edits.report import io_dicts
    from trtflow.graph.io import load_onnx

    proto = load_onnx(model)
    inputs, outputs = io_dicts(proto)
    ops = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in proto.graph.node)
    opsets = {(o.domain or "ai.onnx"): o.version for o in proto.opset_import}
    return {
        "inputs": inputs,
        "outputs": outputs,
        "opset": opsets.get("ai.onnx"),
        "opsets": opsets,
        "ir_version": proto.ir_version,
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "nodes": len(proto.graph.node),
        "initializers": len(proto.graph.initializer),
        "ops": dict(ops.most_common()),
    }


def run(args: argparse.Namespace) -> int:
    info = summary(args.model)
    if args.json:
        output.print_json(info)
        return 0
    output.print_table(
        f"{args.model}: opset {info['opset']}, IR {info['ir_version']}, {info['nodes']} nodes",
        ["io", "name", "dtype", "shape"],
        [("input", s["name"], s["dtype"], _dims(s["shape"])) for s in info["inputs"]]
        + [("output", s["name"], s["dtype"], _dims(s["shape"])) for s in info["outputs"]],
    )
    output.print_table("operators", ["op", "count"], info["ops"].items())
    return 0
