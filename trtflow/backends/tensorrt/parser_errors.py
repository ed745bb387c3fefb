"""Parse and build failures as one record per ONNX node: node name, op type, reason, fix.

The ONNX parser reports errors with the node's name and op; a failed build reports TensorRT
layer names, which map back to ONNX nodes through each layer's metadata
(``"[ONNX Layer: NODE]"``) or, failing that, the longest node name the layer name starts with.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

NMS_RTX_FIX = (
    "TensorRT-RTX has no NonMaxSuppression kernel: build the model from before `trtflow surgeon add-nms`, or cut "
    "the graph at the raw detection head with `trtflow surgeon extract --outputs BOXES,SCORES` (the tensors "
    "feeding NMS; after add-nms the raw outputs are boxes_raw/scores_raw or keep their own names), and run "
    "`trtflow.vision.decode_detections` on the engine's outputs"
)


def name_nms_tensors(failures: list[dict], proto: Any) -> list[dict]:
    """NMS failures whose fix names this model's real raw tensors instead of BOXES,SCORES."""
    from trtflow.graph.nms_head import raw_head

    nodes = {n.name: n for n in proto.graph.node}
    out = []
    for f in failures:
        node = nodes.get(f.get("node"))
        if f.get("fix") == NMS_RTX_FIX:
            named = ",".join(raw_head(proto, node))
            f = {**f, "fix": NMS_RTX_FIX.replace("--outputs BOXES,SCORES` (the tensors feeding NMS; after add-nms "
                                                 "the raw outputs are boxes_raw/scores_raw or keep their own names)",
                                                 f"--outputs {named}`")}
        out.append(f)
    return out
UNSUPPORTED_OP_FIX = (
    "no importer for this op in {flavor}: load a plugin library that implements it (--plugins LIB.so), "
    "rewrite it with supported ops, or cut the graph before it with `trtflow surgeon extract` and run "
    "the rest after the engine"
)
DTYPE_FIX = (
    "TensorRT takes float32/float16/bfloat16/int8/int32/int64/bool/uint8 tensors: cast this tensor "
    "(e.g. a Cast node to int32 or float32) or fold constants with `trtflow surgeon simplify`"
)
INT64_FIX = (
    "INT64 weights are cast to INT32 by TensorRT and values outside the INT32 range fail: fold "
    "constants with `trtflow surgeon simplify` or cast the initializers to INT32 at export"
)
DYNAMIC_FIX = (
    "an input of this node must be a build-time constant or have a profile: fold constants with "
    "`trtflow surgeon simplify`, fix shapes with `trtflow surgeon fix-shapes`, or give "
    "--minShapes/--optShapes/--maxShapes"
)
INPUT_FIX = (
    "an input TensorRT needs as a constant (e.g. Reduce* 'axes', Resize 'scales') is computed at run time: "
    "fold constants with `trtflow surgeon simplify`"
)
ATTR_FIX = "an attribute value TensorRT does not support: re-export with another opset or rewrite the node"
OUTPUTS_FIX = "drop the node's unused extra outputs (e.g. LayerNormalization Mean/InvStdDev) and re-export"
WORKSPACE_FIX = (
    "the workspace limit is too small for this network; raise --memPoolSize workspace:N (MiB; trtexec's "
    "--workspace=N) or leave it out so TensorRT may use the GPU's memory"
)
NO_RUNNER_FIX = (
    "{flavor} has no kernel for this layer with these types or shapes: try float32 inputs, other profile "
    "shapes, or rewrite the node"
)


def is_workspace_failure(reason: str) -> bool:
    """True for a build that ran out of the workspace pool (``OutOfMemory (Requested size ...)``)."""
    text = reason.lower()
    return "outofmemory" in text.replace(" ", "") or "requested size" in text or "workspace limit" in text


def fix_for(op: str, reason: str, code: str = "", flavor: Any = None, supported_op: bool | None = None) -> str:
    """A known fix for a failing node, or "" when none is known.

    Args:
        op: ONNX op type.
        reason: the parser's or builder's message.
        code: the parser's ErrorCode name (e.g. "UNSUPPORTED_NODE"), if any.
        flavor: the ``Flavor`` (for its label and RTX facts).
        supported_op: ``parser.supports_operator(op)`` if known.
    """
    label = getattr(flavor, "label", "this TensorRT")
    text = reason.lower()
    if op == "NonMaxSuppression" and getattr(flavor, "is_rtx", False):
        return NMS_RTX_FIX
    if is_workspace_failure(reason):
        return WORKSPACE_FIX
    if "int64" in text and ("weight" in text or "initializer" in text or "int32" in text):
        return INT64_FIX
    if code == "UNSUPPORTED_NODE_DATATYPE" or "data type" in text or "datatype" in text:
        return DTYPE_FIX
    if code == "UNSUPPORTED_NODE_DYNAMIC" or "dynamic" in text:
        return DYNAMIC_FIX
    if code == "UNSUPPORTED_NODE_INPUT" or "must be an initializer" in text or "constant" in text:
        return INPUT_FIX
    if code == "UNSUPPORTED_NODE_ATTR":
        return ATTR_FIX
    if "output" in text and ("extra" in text or "optional" in text):
        return OUTPUTS_FIX
    if "no runners" in text or "no implementation" in text:
        return NO_RUNNER_FIX.format(flavor=label)
    if code == "UNSUPPORTED_NODE" and supported_op is False:
        return UNSUPPORTED_OP_FIX.format(flavor=label)
    if supported_op is False:
        return UNSUPPORTED_OP_FIX.format(flavor=label)
    return ""


def _reason(code: str, desc: str, op: str, supported_op: bool | None, flavor: Any) -> str:
    label = getattr(flavor, "label", "TensorRT")
    desc = (desc or "").strip()
    if supported_op is False and code in ("UNSUPPORTED_NODE", ""):
        return f"{label} has no importer for ONNX op {op}"
    if desc in ("", "false", "true"):  # the parser often reports only the failed assertion
        return f"{code.replace('_', ' ').lower() or 'parse error'}"
    return f"{code}: {desc}" if code else desc


def parser_failures(parser: Any, flavor: Any = None) -> list[dict]:
    """One record per parser error (``parser.num_errors`` / ``get_error``), duplicates merged."""
    out: list[dict] = []
    seen = set()
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        code = getattr(err.code(), "name", str(err.code()))
        index, name, op = err.node(), err.node_name(), err.node_operator()
        if not name and not op and index < 0:  # no node: a graph input or the model itself (the message says which)
            reason = _network_reason(err)
            if (NETWORK, reason) in seen:
                continue
            seen.add((NETWORK, reason))
            out.append({"node": NETWORK, "op": "-", "reason": reason, "fix": fix_for("", reason, code, flavor)})
            continue
        node, op = name or f"#{index}", op or "?"
        if (node, op) in seen:
            continue
        seen.add((node, op))
        supported = _supports(parser, op) if op != "?" else None
        reason = _reason(code, err.desc(), op, supported, flavor)
        out.append({"node": node, "op": op, "reason": reason, "fix": fix_for(op, f"{reason} {err.desc()}", code, flavor, supported)})
    return out


def _network_reason(err: Any) -> str:
    """The parser's message for an error at no node: the quoted text of a failed assertion, naming the graph
    input when the parser failed while importing one (onnx-tensorrt puts its name where a source file goes)."""
    desc = (err.desc() or "").strip()
    quoted = re.search(r'&&\s*"([^"]+)"', desc)
    reason = quoted.group(1).strip() if quoted else desc or "parse error"
    try:
        where, tensor = err.func(), err.file()
    except Exception:  # parsers without the error's location
        where, tensor = "", ""
    if where == "importInput" and tensor:
        reason = f"input '{tensor}': {reason}"
    return reason


def _supports(parser: Any, op: str) -> bool | None:
    try:
        return bool(parser.supports_operator(op))
    except Exception:
        return None


def layer_nodes(network: Any) -> dict[str, str]:
    """TensorRT layer name -> ONNX node name, from the layers' ``"[ONNX Layer: NAME]"`` metadata."""
    out = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        meta = getattr(layer, "metadata", "") or ""
        m = re.search(r"\[ONNX Layer: (.*?)\]", meta)
        if m:
            out[layer.name] = m.group(1)
    return out


_LAYER_IN_MESSAGE = [
    re.compile(r"(\S+) has no runners"),
    re.compile(r"[Ll]ayer (\S+?)[:,]? (?:failed|has|is)"),
    re.compile(r"\(Unnamed Layer\* \d+\) \[[^\]]+\]"),
]


NETWORK = "(network)"  # the node of a failure TensorRT reports for the whole network (no layer named)


def build_failures(
    messages: Iterable[str], network: Any, nodes: dict[str, str], flavor: Any = None
) -> list[dict]:
    """Records for a failed build from TensorRT's error log lines.

    Args:
        messages: the ERROR lines the builder logged.
        network: the parsed INetworkDefinition (for layer -> node metadata).
        nodes: ONNX node name -> op type.
        flavor: the ``Flavor``.
    """
    by_layer = layer_nodes(network)
    out: list[dict] = []
    seen = set()
    for msg in messages:
        layer = None
        for pattern in _LAYER_IN_MESSAGE:
            m = pattern.search(msg)
            if m:
                layer = m.group(1) if m.groups() else m.group(0)
                break
        node = by_layer.get(layer) if layer else None
        if node is None and layer:
            prefixes = [n for n in nodes if layer.startswith(n)]
            node = max(prefixes, key=len) if prefixes else None
        reason = _clean(msg)
        key = node or reason
        if key in seen:
            continue
        seen.add(key)
        op = nodes.get(node, "-") if node else "-"
        out.append({"node": node or layer or NETWORK, "op": op, "reason": reason, "fix": fix_for(op, reason, "", flavor)})
    return out


def _clean(msg: str) -> str:
    """Drop TensorRT's source locations from a log line."""
    msg = re.sub(r"\s*In \w+ at /\S+:\d+\)?", "", msg)
    msg = re.sub(r"\[\w+\.cpp::\w+::\d+\]\s*", "", msg)
    m = re.search(r"Assertion .*? failed\.\s*(.*)", msg)  # keep the sentence after TensorRT's failed assertion
    if m and m.group(1).strip():
        msg = m.group(1)
    return msg.strip().rstrip(")").strip()


def format_failures(failures: list[dict]) -> str:
    """One line per failing node, for error messages."""
    lines = []
    for f in failures:
        where = "the network" if f["node"] == NETWORK else f"node '{f['node']}' ({f['op']})"
        line = f"{where}: {f['reason']}"
        if f.get("fix"):
            line += f". Fix: {f['fix']}"
        lines.append(line)
    return "; ".join(lines)
