"""FP16 conversion that keeps overflow-prone and accuracy-sensitive ops in FP32, and says which.

The model's float32 tensors become float16 except around blocked nodes: a node is kept in FP32
when its op is in the block list, when ONNX's schema of its op takes no float16 where it has
float32, when it reduces over many elements, when a constant it reads does not fit float16, or
when it carries a subgraph. Casts are inserted at every boundary between
the FP16 and FP32 parts (one per tensor and direction). With ``keep_io_types`` the model's inputs
and outputs stay float32, so callers feed the same arrays as before.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Mapping

import numpy as np

from trtflow.errors import GraphError
from trtflow.graph.io import load_onnx
from trtflow.graph.ir import export_graph, import_graph

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
FP16_TINY = 2.0**-24  # smallest positive subnormal: smaller magnitudes flush to zero
# default verification tolerances: FP16 keeps ~3 significant digits per op and errors add up over
# dozens of layers (MobileNetV2 logits: max abs error 0.09, mean 0.01 on real images)
FP16_ATOL = 0.1
FP16_RTOL = 0.05
LARGE_REDUCTION = 4096  # reductions over more elements than this stay FP32 (sums overflow, means lose bits)

# Ops kept in FP32 by default, with the reason reported for each.
DEFAULT_BLOCK_OPS: dict[str, str] = {
    "Exp": "overflows above x=11",
    "Pow": "overflows easily",
    "Log": "loses accuracy near 0",
    "Softmax": "exp of its inputs overflows",
    "LogSoftmax": "exp of its inputs overflows",
    "LayerNormalization": "mean/variance statistics lose accuracy",
    "InstanceNormalization": "mean/variance statistics lose accuracy",
    "GroupNormalization": "mean/variance statistics lose accuracy",
    "ReduceSumSquare": "sum of squares overflows",
    "ReduceL2": "sum of squares overflows",
    "ReduceLogSumExp": "exp overflows",
    "ReduceProd": "products overflow",
    "Range": "index arithmetic needs exact values",
    "NonMaxSuppression": "box coordinates and scores are float32 only",
    "TopK": "ties and ordering change with rounding",
    "RoiAlign": "coordinates need float32",
    "RandomNormal": "has its own dtype attribute",
    "RandomUniform": "has its own dtype attribute",
    "RandomNormalLike": "has its own dtype attribute",
    "RandomUniformLike": "has its own dtype attribute",
    "Multinomial": "has its own dtype attribute",
    "EyeLike": "has its own dtype attribute",
    "Bernoulli": "has its own dtype attribute",
    "HannWindow": "has its own output_datatype attribute",
    "HammingWindow": "has its own output_datatype attribute",
    "BlackmanWindow": "has its own output_datatype attribute",
    "MelWeightMatrix": "has its own output_datatype attribute",
    "QuantizeLinear": "quantization scales stay float32",
    "DequantizeLinear": "quantization scales stay float32",
}
LARGE_REDUCE_OPS = {"ReduceSum", "ReduceMean", "GlobalAveragePool"}
SUBGRAPH_OPS = {"If", "Loop", "Scan"}
# inputs whose type is float32 whatever the node's data type
FIXED_FP32_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}
INT_TYPES = {2, 3, 4, 5, 6, 7, 9, 12, 13}  # uint8 .. uint64, bool
VALUE_ATTRS = ("value", "value_float", "value_floats")  # attributes holding a float value (Constant, ConstantOfShape)


def _is_f32(tensor) -> bool:
    if tensor is None or not tensor.name or tensor.dtype is None:
        return False
    try:
        return np.dtype(tensor.dtype) == np.float32
    except TypeError:  # an ONNX-only type (bfloat16, float8) that numpy does not name
        return False


def _const_values(tensor):
    """The values of a constant tensor or of a Constant node's output; None for computed tensors."""
    import onnx_graphsurgeon as gs

    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    inputs = getattr(tensor, "inputs", [])
    if len(inputs) == 1 and inputs[0].op == "Constant":
        return _attr_values(inputs[0])
    return None


def _attr_values(node):
    """The float or tensor value a node's value/value_float/value_floats attribute holds, else None."""
    import onnx_graphsurgeon as gs

    for key in VALUE_ATTRS:
        attr = node.attrs.get(key)
        if isinstance(attr, gs.Constant):
            return np.asarray(attr.values)
        if attr is not None and key != "value":
            return np.asarray(attr, dtype=np.float32)
    return None


def _reduced_count(node) -> int | None:
    """How many elements each output element of a reduction reads (None when unknown)."""
    shape = node.inputs[0].shape
    if shape is None:
        return None
    if node.op == "GlobalAveragePool":
        axes = list(range(2, len(shape)))
    else:
        axes = node.attrs.get("axes")
        if axes is None and len(node.inputs) > 1 and node.inputs[1].name:
            values = _const_values(node.inputs[1])
            if values is None:
                return None
            axes = values.tolist()
        if axes is None or len(axes) == 0:
            if node.attrs.get("noop_with_empty_axes", 0):
                return 1
            axes = range(len(shape))
    dims = [shape[a] for a in axes]
    if any(not isinstance(d, int) or d < 0 for d in dims):
        return None
    return int(np.prod(dims))


def _block_reason(node, block_ops: dict[str, str]) -> str | None:
    """Why ``node`` stays FP32, or None to convert it."""
    if node.op in block_ops:
        return block_ops[node.op]
    if node.op in SUBGRAPH_OPS:
        return "carries a subgraph"
    if node.domain not in ("", "ai.onnx", None):
        return f"custom op of domain '{node.domain}'"
    if node.op == "Cast" and node.attrs.get("to") in INT_TYPES:
        return "cast to an integer type needs the float32 value"
    if node.op in ("Cast", "CastLike") and node.inputs and node.inputs[0].dtype is not None:
        try:
            source = np.dtype(node.inputs[0].dtype)
        except TypeError:  # an ONNX-only type numpy does not name
            source = None
        if source is not None and source.kind in "iu" and source.itemsize > 1:
            return f"cast from {source.name}: float16 holds integers exactly only up to 2048"
    if node.op in LARGE_REDUCE_OPS:
        count = _reduced_count(node)
        if count is None or count > LARGE_REDUCTION:
            what = "an unknown number of" if count is None else str(count)
            return f"reduces over {what} elements (> {LARGE_REDUCTION})"
    for t in node.inputs:  # initializers and Constant nodes' outputs
        values = _const_values(t) if t.name else None
        if values is not None and values.dtype == np.float32 and values.size:
            peak = float(np.max(np.abs(values[np.isfinite(values)]))) if np.isfinite(values).any() else 0.0
            if peak > FP16_MAX:
                return f"constant '{t.name}' holds {peak:.4g}, beyond float16's {FP16_MAX:g}"
    values = _attr_values(node)
    if values is not None and values.dtype == np.float32 and values.size and np.abs(values).max() > FP16_MAX:
        return "its value attribute exceeds float16's range"
    return None


def _schema_reason(node, opset: int | None) -> str | None:
    """Why ONNX's schema of ``node``'s op keeps it FP32: a float32 input or output whose type takes no
    float16 (Celu; QLinearConv/QLinearMatMul scales; DynamicQuantizeLinear), else None."""
    import onnx

    if not opset or node.domain not in ("", "ai.onnx", None):
        return None
    try:
        schema = onnx.defs.get_schema(node.op, int(opset), "")
    except onnx.defs.SchemaError:  # an op this onnx does not know at that opset: nothing to go by
        return None
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    fixed = FIXED_FP32_INPUTS.get(node.op, ())
    for kind, tensors, formals in (("input", node.inputs, schema.inputs), ("output", node.outputs, schema.outputs)):
        for i, t in enumerate(tensors):
            if not formals or not _is_f32(t) or (kind == "input" and i in fixed):
                continue
            formal = formals[min(i, len(formals) - 1)]  # a variadic last parameter covers the rest
            if "tensor(float16)" not in allowed.get(formal.type_str, {formal.type_str}):
                return f"ONNX's {node.op}-{schema.since_version} takes no float16 {kind} '{formal.name}'"
    return None


def _fixed_fp32(graph) -> tuple[set[int], set[str]]:
    """ids of the nodes computing a float32-only input (Resize scales/roi), and the names of those inputs
    and of the float32 tensors the nodes read: kept FP32, since a scale rounded to float16 changes the
    output size (640/480 -> 1.333 -> 639 rows)."""
    marked: set[int] = set()
    names: set[str] = set()
    stack = [node.inputs[i] for node in graph.nodes for i in FIXED_FP32_INPUTS.get(node.op, ())
             if i < len(node.inputs)]
    while stack:
        tensor = stack.pop()
        names.add(tensor.name)
        for producer in getattr(tensor, "inputs", []):
            if id(producer) not in marked:
                marked.add(id(producer))
                stack.extend(t for t in producer.inputs if _is_f32(t))
    return marked, names


def _shape_arithmetic(graph) -> set[int]:
    """ids of the nodes computing from tensor sizes only (Shape/Size outputs and constants): sizes in
    float16 are exact only up to 2048 (2003 -> 2004), so float shape arithmetic stays FP32."""
    sizes: set[str] = set()
    marked: set[int] = set()
    for node in graph.nodes:  # toposorted
        if node.op in ("Shape", "Size"):
            sizes.update(t.name for t in node.outputs)
            continue
        ins = [t for t in node.inputs if t.name]
        if any(t.name in sizes for t in ins) and all(t.name in sizes or _const_values(t) is not None for t in ins):
            sizes.update(t.name for t in node.outputs)
            marked.add(id(node))
    return marked


def _read_by_subgraphs(graph) -> set[str]:
    """Names of the outer tensors the If/Loop/Scan subgraphs of ``graph`` read implicitly (not as node inputs)."""
    import onnx_graphsurgeon as gs

    names: set[str] = set()
    for node in graph.nodes:
        for sub in (a for a in node.attrs.values() if isinstance(a, gs.Graph)):
            inner = {t.name for t in sub.inputs} | {t.name for n in sub.nodes for t in n.outputs}
            names |= {t.name for n in sub.nodes for t in n.inputs
                      if t.name and t.name not in inner and not isinstance(t, gs.Constant)}
            names |= _read_by_subgraphs(sub) - inner
    return names


class _Converter:
    """One conversion pass over a graphsurgeon graph, counting what it does."""

    def __init__(self, graph, block_ops: dict[str, str], peaks: Mapping[str, float] | None = None):
        import onnx_graphsurgeon as gs

        self.gs = gs
        self.graph = graph
        self.block_ops = block_ops
        self.converted: set[str] = set()  # variable tensors now float16
        self.casts: dict[tuple[str, str], Any] = {}
        self.fp16_consts: dict[str, Any] = {}
        self.const_fp32: dict[str, Any] = {}  # outputs of Constant nodes made FP16 -> their float32 values
        self.kept: list[dict] = []
        self.n_converted = 0
        self.flushed = 0
        self.output_casts = 0
        self.peaks = dict(peaks or {})
        self.fixed, self.fixed_tensors = _fixed_fp32(graph)  # a model input among the tensors stays float32
        self.sizes = _shape_arithmetic(graph)
        self.implicit = _read_by_subgraphs(graph)  # kept float32: a subgraph's types cannot follow

    def _range_reason(self, node) -> str | None:
        """Keep a node FP32 when a float tensor it reads or writes went beyond float16 on the range feeds."""
        for t in (*node.inputs, *node.outputs):
            peak = self.peaks.get(t.name, 0.0)
            if peak > FP16_MAX:
                return f"tensor '{t.name}' reaches {peak:.4g} on the range-check inputs (float16 max {FP16_MAX:g})"
        return None

    def _keep_reason(self, node) -> str | None:
        """Why ``node`` stays FP32: its op or constants, its ranges, or what it computes for, else None."""
        reason = (_block_reason(node, self.block_ops) or _schema_reason(node, self.graph.opset)
                  or self._range_reason(node))
        if reason is not None:
            return reason
        if id(node) in self.fixed:
            return "computes a Resize scales/roi input, which stays float32"
        if id(node) in self.sizes:
            return "computes sizes from the input's shape"
        if any(t.name in self.implicit for t in node.outputs):
            return "its output is read inside an If/Loop/Scan subgraph, which stays FP32"
        untyped = next((t.name for t in (*node.inputs, *node.outputs)
                        if t.name and t.dtype is None and not isinstance(t, self.gs.Constant)), None)
        if untyped is not None:  # it may be float32: left as it is, it stays what it was
            return f"the type of tensor '{untyped}' is unknown (ONNX shape inference could not type it)"
        return None

    def cast(self, tensor, to: str):
        key = (tensor.name, to)
        if key not in self.casts:
            import onnx

            dtype = np.float16 if to == "fp16" else np.float32
            out = self.gs.Variable(f"{tensor.name}__{to}", dtype=dtype, shape=tensor.shape)
            target = onnx.TensorProto.FLOAT16 if to == "fp16" else onnx.TensorProto.FLOAT
            self.graph.nodes.append(
                self.gs.Node("Cast", name=f"{tensor.name}__cast_{to}", attrs={"to": target}, inputs=[tensor], outputs=[out])
            )
            self.casts[key] = out
        return self.casts[key]

    def const16(self, tensor):
        if tensor.name not in self.fp16_consts:
            values = np.asarray(tensor.values)
            tiny = (values != 0) & (np.abs(values) < FP16_TINY)
            self.flushed += int(tiny.sum())
            self.fp16_consts[tensor.name] = self.gs.Constant(f"{tensor.name}__fp16", values.astype(np.float16))
        return self.fp16_consts[tensor.name]

    def run(self, keep_io_types: bool) -> None:
        gs = self.gs
        if not keep_io_types:
            for t in self.graph.inputs:
                if _is_f32(t) and t.name not in self.implicit and t.name not in self.fixed_tensors:
                    t.dtype = np.float16
                    self.converted.add(t.name)
        for node in list(self.graph.nodes):
            reason = self._keep_reason(node)
            fp16 = reason is None and any(
                (_is_f32(t) or t.name in self.converted) for t in [*node.inputs, *node.outputs]
            )
            if reason is not None and any(_is_f32(t) or t.name in self.converted for t in node.inputs):
                self.kept.append({"node": node.name, "op": node.op, "reason": reason})
            fixed = FIXED_FP32_INPUTS.get(node.op, set())
            for i, t in enumerate(node.inputs):
                if not t.name:
                    continue
                want16 = fp16 and i not in fixed
                if isinstance(t, gs.Constant):
                    if want16 and np.asarray(t.values).dtype == np.float32:
                        node.inputs[i] = self.const16(t)
                elif want16 and _is_f32(t) and t.name not in self.converted:
                    node.inputs[i] = self.cast(t, "fp16")
                elif not want16 and t.name in self.const_fp32:  # the exact value, not a rounded one
                    node.inputs[i] = self.const_fp32[t.name]
                elif not want16 and t.name in self.converted:
                    node.inputs[i] = self.cast(t, "fp32")
            if not fp16:
                continue
            self.n_converted += 1
            values = _attr_values(node) if node.op == "Constant" else None
            if values is not None and values.dtype == np.float32:
                name = node.outputs[0].name
                self.const_fp32[name] = self.gs.Constant(f"{name}__fp32", values)
            self._convert_attrs(node)
            for t in node.outputs:
                if _is_f32(t):
                    t.dtype = np.float16
                    self.converted.add(t.name)
        self._fix_outputs(keep_io_types)

    def _convert_attrs(self, node) -> None:
        import onnx

        if node.op == "Cast" and node.attrs.get("to") == onnx.TensorProto.FLOAT:
            node.attrs["to"] = onnx.TensorProto.FLOAT16
        for key in VALUE_ATTRS:
            attr = node.attrs.get(key)
            if attr is None:
                continue
            if isinstance(attr, self.gs.Constant) and np.asarray(attr.values).dtype == np.float32:
                node.attrs[key] = self.gs.Constant(attr.name, np.asarray(attr.values).astype(np.float16))
            elif node.op == "Constant" and key != "value":
                del node.attrs[key]
                node.attrs["value"] = self.gs.Constant(f"{node.name}_value", np.asarray(attr, dtype=np.float16))

    def _fix_outputs(self, keep_io_types: bool) -> None:
        outputs = list(self.graph.outputs)
        for k, t in enumerate(outputs):
            if keep_io_types and t.name in self.converted:
                name = t.name
                t.name = f"{name}__fp16"
                out = self.gs.Variable(name, dtype=np.float32, shape=t.shape)
                self.graph.nodes.append(self.gs.Node("Cast", name=f"{name}__cast_fp32",
                                                     attrs={"to": 1}, inputs=[t], outputs=[out]))
                self.graph.outputs[k] = out
                self.output_casts += 1


def convert_fp16(
    proto: Any, keep_io_types: bool = True, block_ops: set[str] | None = None,
    peaks: Mapping[str, float] | None = None,
) -> tuple[Any, dict]:
    """Convert a model's float32 computation to float16, keeping risky ops in float32.

    Args:
        proto: an onnx.ModelProto, or a path or bytes of one.
        keep_io_types: keep float32 model inputs and outputs (casts at the edges); False makes them float16,
            except inputs read inside a subgraph or giving Resize scales/roi (or computing them).
        block_ops: op types to keep in FP32 instead of ``DEFAULT_BLOCK_OPS`` (e.g. add "Resize").
            Constants beyond float16's range, large reductions, integer casts and subgraphs stay
            FP32 whatever this holds.
        peaks: optional largest |value| of float32 tensors on real data (``edits.fp16.activation_peaks``):
            nodes reading or writing a tensor beyond float16's range stay FP32 too.

    Returns:
        ``(new_proto, report)``; the report holds ``converted_nodes``, ``kept_fp32`` (one dict per node:
        node, op, reason), ``kept_fp32_by_op``, ``casts_added``, ``initializers_converted`` and
        ``values_flushed_to_zero`` (constants smaller than float16's smallest subnormal).

    Raises:
        GraphError: the converted graph could not be exported.
    """
    proto = load_onnx(proto)
    if block_ops is None:
        blocks = dict(DEFAULT_BLOCK_OPS)
    else:
        blocks = {op: DEFAULT_BLOCK_OPS.get(op, "in the block list") for op in block_ops}
    graph = import_graph(proto)
    graph.toposort()
    conv = _Converter(graph, blocks, peaks)
    conv.run(keep_io_types)
    try:
        new = export_graph(graph, like=proto)
    except Exception as exc:
        raise GraphError(f"FP16 conversion produced a graph that does not export: {exc}") from None
    report = {
        "keep_io_types": keep_io_types,
        "converted_nodes": conv.n_converted,
        "kept_fp32": conv.kept,
        "kept_fp32_by_op": dict(Counter(k["op"] for k in conv.kept)),
        "casts_added": len(conv.casts) + conv.output_casts,
        "initializers_converted": len(conv.fp16_consts),
        "values_flushed_to_zero": conv.flushed,
    }
    log.info("fp16: %d nodes converted, %d kept in FP32", conv.n_converted, len(conv.kept))
    return new, report
