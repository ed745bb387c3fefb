"""Write ONNX graph math like array code: ``GraphArray`` wraps an onnx-graphsurgeon tensor.

``a * 0.5 + b[..., 0:2]`` on GraphArrays appends Mul, Slice and Add nodes to the graph, so box
math written for numpy and torch (``trtflow.vision.formats``) also builds the in-graph version.
Ops whose form changed across opsets (Squeeze/Unsqueeze axes at 13, Reduce* axes at 13/18) are
emitted in the form of the model's opset.
"""

from __future__ import annotations

import itertools
from typing import Any, Optional, Sequence

import numpy as np

INT64_MAX = np.iinfo(np.int64).max


class GraphArray:
    """A tensor of the graph being built; arithmetic and ``x[..., a:b]`` slicing emit nodes."""

    __array_ufunc__ = None  # numpy defers `array * GraphArray` to __rmul__

    def __init__(self, builder: "GraphBuilder", tensor, dtype: Any = np.float32):
        self.builder = builder
        self.tensor = tensor
        self.dtype = np.dtype(dtype)

    @property
    def shape(self):
        return self.tensor.shape

    def _binary(self, op: str, other, reverse: bool = False) -> "GraphArray":
        other = self.builder.as_array(other, self.dtype)
        a, b = (other, self) if reverse else (self, other)
        return self.builder.op(op, [a, b], dtype=self.dtype)

    def __add__(self, other):
        return self._binary("Add", other)

    def __radd__(self, other):
        return self._binary("Add", other, reverse=True)

    def __sub__(self, other):
        return self._binary("Sub", other)

    def __rsub__(self, other):
        return self._binary("Sub", other, reverse=True)

    def __mul__(self, other):
        return self._binary("Mul", other)

    def __rmul__(self, other):
        return self._binary("Mul", other, reverse=True)

    def __truediv__(self, other):
        return self._binary("Div", other)

    def __rtruediv__(self, other):
        return self._binary("Div", other, reverse=True)

    def __getitem__(self, key) -> "GraphArray":
        """Only ``x[..., start:stop]`` (last axis) and ``x[start:stop]`` (first axis) are supported."""
        if isinstance(key, tuple) and len(key) == 2 and key[0] is Ellipsis and isinstance(key[1], slice):
            return self.builder.slice(self, -1, key[1].start or 0, key[1].stop)
        if isinstance(key, slice):
            return self.builder.slice(self, 0, key.start or 0, key.stop)
        raise TypeError(f"GraphArray supports x[..., a:b] and x[a:b] slicing only, got {key!r}")


class GraphBuilder:
    """Appends nodes to an onnx-graphsurgeon graph; names start with ``prefix``.

    Args:
        graph: the gs.Graph to extend.
        opset: the model's default-domain opset (decides the form of some ops).
        prefix: prefix of every new node and tensor name.
    """

    def __init__(self, graph, opset: int, prefix: str = "nms"):
        import onnx_graphsurgeon as gs

        self.gs = gs
        self.graph = graph
        self.opset = opset
        self.prefix = prefix
        self._ids = itertools.count()
        self._shapes: dict[int, GraphArray] = {}

    def name(self, hint: str) -> str:
        return f"{self.prefix}/{hint}_{next(self._ids)}"

    def wrap(self, tensor, dtype: Any = None) -> GraphArray:
        return GraphArray(self, tensor, dtype if dtype is not None else (tensor.dtype or np.float32))

    def const(self, value, dtype: Any = np.float32) -> GraphArray:
        arr = np.asarray(value, dtype=dtype)
        return GraphArray(self, self.gs.Constant(self.name("const"), arr), arr.dtype)

    def as_array(self, value, dtype: Any = np.float32) -> GraphArray:
        return value if isinstance(value, GraphArray) else self.const(value, dtype)

    def op(self, op_type: str, inputs: Sequence, attrs: Optional[dict] = None, dtype: Any = np.float32,
           outputs: int = 1, domain: Optional[str] = None, output_dtypes: Optional[Sequence] = None):
        """Append one node; returns its output GraphArray, or a list when ``outputs > 1``."""
        ins = [x.tensor if isinstance(x, GraphArray) else x for x in inputs]
        dtypes = list(output_dtypes) if output_dtypes is not None else [dtype] * outputs
        outs = [self.gs.Variable(self.name(op_type.lower()), dtype=np.dtype(d)) for d in dtypes]
        node = self.gs.Node(op_type, self.name(op_type), attrs=attrs or {}, inputs=ins, outputs=outs)
        if domain:
            node.domain = domain
        self.graph.nodes.append(node)
        arrays = [GraphArray(self, t, d) for t, d in zip(outs, dtypes)]
        return arrays[0] if outputs == 1 else arrays

    # the array interface of trtflow.vision.formats
    def cat(self, parts: Sequence, axis: int = -1) -> GraphArray:
        parts = [self.as_array(p) for p in parts]
        return self.op("Concat", parts, {"axis": axis}, dtype=parts[0].dtype)

    def exp(self, x: GraphArray) -> GraphArray:
        return self.op("Exp", [x], dtype=x.dtype)

    def permute(self, x: GraphArray, perm: Sequence[int]) -> GraphArray:
        return self.op("Transpose", [x], {"perm": list(perm)}, dtype=x.dtype)

    # more ops
    def slice(self, x: GraphArray, axis: int, start: int, stop: Optional[int]) -> GraphArray:
        ints = [self.const([v], np.int64) for v in (start, INT64_MAX if stop is None else stop, axis)]
        return self.op("Slice", [x, *ints], dtype=x.dtype)

    def reshape(self, x: GraphArray, shape) -> GraphArray:
        return self.op("Reshape", [x, self.as_array(shape, np.int64)], dtype=x.dtype)

    def cast(self, x: GraphArray, dtype: Any) -> GraphArray:
        from onnx import helper

        to = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        return self.op("Cast", [x], {"to": to}, dtype=dtype)

    def shape(self, x: GraphArray) -> GraphArray:
        """Shape of ``x`` (one Shape node per tensor)."""
        key = id(x.tensor)
        if key not in self._shapes:
            self._shapes[key] = self.op("Shape", [x], dtype=np.int64)
        return self._shapes[key]

    def dim(self, x: GraphArray, axis: int) -> GraphArray:
        """Dimension ``axis`` of ``x`` as an int64 [1] tensor."""
        return self.slice(self.shape(x), 0, axis, axis + 1 if axis != -1 else None)

    def unsqueeze(self, x: GraphArray, axes: Sequence[int]) -> GraphArray:
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.const(list(axes), np.int64)], dtype=x.dtype)
        return self.op("Unsqueeze", [x], {"axes": list(axes)}, dtype=x.dtype)

    def squeeze(self, x: GraphArray, axes: Sequence[int]) -> GraphArray:
        if self.opset >= 13:
            return self.op("Squeeze", [x, self.const(list(axes), np.int64)], dtype=x.dtype)
        return self.op("Squeeze", [x], {"axes": list(axes)}, dtype=x.dtype)

    def reduce(self, op_type: str, x: GraphArray, axes: Sequence[int], keepdims: bool) -> GraphArray:
        """ReduceMax/ReduceSum/...; axes became an input at opset 13 (ReduceSum) or 18 (the others)."""
        axes_as_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        attrs = {"keepdims": int(keepdims)}
        if axes_as_input:
            return self.op(op_type, [x, self.const(list(axes), np.int64)], attrs, dtype=x.dtype)
        return self.op(op_type, [x], {**attrs, "axes": list(axes)}, dtype=x.dtype)

    def where(self, cond: GraphArray, a, b) -> GraphArray:
        a = self.as_array(a, b.dtype if isinstance(b, GraphArray) else np.float32)
        return self.op("Where", [cond, a, self.as_array(b, a.dtype)], dtype=a.dtype)
