"""What an edit changed: nodes added and removed by op type, inputs and outputs before and after."""

from __future__ import annotations

from typing import Any

from trtflow.arrays import ONNX_DTYPES
from trtflow.graph.io import graph_inputs, is_unranked, value_spec
from trtflow.graph.ir import op_counts


def describe_change(before: Any, after: Any) -> dict:
    """Node counts, per-op additions/removals and I/O specs of two versions of a model.

    Returns:
        ``{"nodes_before", "nodes_after", "added": {op: n}, "removed": {op: n},
        "inputs": {"before": [...], "after": [...]}, "outputs": {...}, "size_bytes": {...}}``.
    """
    a, b = op_counts(before), op_counts(after)
    b_in, b_out = io_dicts(before)
    a_in, a_out = io_dicts(after)
    return {
        "nodes_before": sum(a.values()),
        "nodes_after": sum(b.values()),
        "added": dict(sorted((b - a).items())),
        "removed": dict(sorted((a - b).items())),
        "inputs": {"before": b_in, "after": a_in},
        "outputs": {"before": b_out, "after": a_out},
        "size_bytes": {"before": before.ByteSize(), "after": after.ByteSize()},
    }


def io_dicts(proto: Any) -> tuple[list[dict], list[dict]]:
    """``TensorSpec.to_dict()`` of the graph inputs and outputs (``trtflow inspect`` shows these too);
    one of unknown rank (no shape in the model, as an input before fix-shapes gives it one) has the
    shape None, which a spec would read as a scalar. So has a value that is not a tensor (a
    sequence, map or optional), whose dtype names its kind, e.g. ``sequence<float32>``."""
    return [_io_dict(v) for v in graph_inputs(proto)], [_io_dict(v) for v in proto.graph.output]


def _io_dict(value: Any) -> dict:
    if value.type.WhichOneof("value") != "tensor_type":
        return {"name": value.name, "dtype": _type_name(value.type), "shape": None}
    spec = value_spec(value).to_dict()
    return {**spec, "shape": None} if is_unranked(value) else spec


def _type_name(proto: Any) -> str:
    """An ONNX TypeProto as text: ``float32``, ``sequence<float32>``, ``map<int64,float32>``, ``optional<...>``."""
    kind = proto.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        elem = getattr(proto, kind).elem_type
        name = ONNX_DTYPES.get(elem, f"onnx:{elem}")
        return name if kind == "tensor_type" else f"sparse<{name}>"
    if kind == "sequence_type":
        return f"sequence<{_type_name(proto.sequence_type.elem_type)}>"
    if kind == "optional_type":
        return f"optional<{_type_name(proto.optional_type.elem_type)}>"
    if kind == "map_type":
        key = ONNX_DTYPES.get(proto.map_type.key_type, f"onnx:{proto.map_type.key_type}")
        return f"map<{key},{_type_name(proto.map_type.value_type)}>"
    return "unknown"  # no type in the model


def summary_lines(report: dict) -> list[str]:
    """A few human lines about one edit's report (the CLI prints them above the tables)."""
    ch = report["changes"]
    lines = [f"nodes: {ch['nodes_before']} -> {ch['nodes_after']}"]
    if ch["added"]:
        lines.append("added: " + ", ".join(f"{op} x{n}" for op, n in ch["added"].items()))
    if ch["removed"]:
        lines.append("removed: " + ", ".join(f"{op} x{n}" for op, n in ch["removed"].items()))
    mb = {k: v / 2**20 for k, v in ch["size_bytes"].items()}
    lines.append(f"size: {mb['before']:.2f} MiB -> {mb['after']:.2f} MiB")
    kept = report.get("details", {}).get("kept_fp32")
    if kept:
        by_op = report["details"].get("kept_fp32_by_op", {})
        lines.append("kept in FP32: " + ", ".join(f"{op} x{n}" for op, n in by_op.items()))
    warning = report.get("details", {}).get("warning")
    if warning:
        lines.append(f"warning: {warning}")
    return lines


def _io_text(spec: dict) -> str:
    if spec["shape"] is None:
        return f"{spec['dtype']} (unknown rank)"
    return f"{spec['dtype']} ({', '.join(str(d) for d in spec['shape'])})"


def io_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """Rows ``(kind, name, before, after)`` for the I/O table; names matched through the edit's maps."""
    ch, details = report["changes"], report.get("details", {})
    rows = []
    for kind, key in (("input", "input_map"), ("output", "output_map")):
        mapping = details.get(key) or {}
        before = {s["name"]: s for s in ch[kind + "s"]["before"]}
        after = {s["name"]: s for s in ch[kind + "s"]["after"]}
        seen = set()
        for name, spec in before.items():
            new = mapping.get(name, name)
            seen.add(new)
            label = name if new == name else f"{name} -> {new}"
            rows.append((kind, label, _io_text(spec), _io_text(after[new]) if new in after else "(removed)"))
        for name, spec in after.items():
            if name not in seen:
                rows.append((kind, name, "(new)", _io_text(spec)))
    return rows
