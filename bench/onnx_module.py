"""A small ONNX -> ``torch.nn.Module`` interpreter for the benchmark's convolutional models
(RetinaFace, waifu2x), written so the module can be captured in a CUDA graph: shape arithmetic
(Shape, Gather, Unsqueeze, Concat and Slice of shapes) runs on Python ints, weights live on the
module's device, and no op copies from the host while running.

Ops: Conv, ConvTranspose, Relu, LeakyRelu, Add, Concat, Transpose, Reshape, Softmax, Resize
(nearest), Shape, Gather, Unsqueeze, Slice. Anything else raises ``UnsupportedOp``: the
benchmark then names the op, and the model needs the ONNX Runtime or an export path instead.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class UnsupportedOp(ValueError):
    """An ONNX op (or an op on operands) this benchmark interpreter does not implement."""


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class OnnxModule(nn.Module):
    """Runs an ONNX graph node by node; ``forward`` takes the graph inputs positionally and
    returns its outputs as a tuple (one output: the tensor)."""

    def __init__(self, model):
        super().__init__()
        from onnx import numpy_helper

        graph = model.graph
        self.inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        self.inputs = [i.name for i in graph.input if i.name not in self.inits]
        self.outputs = [o.name for o in graph.output]
        self.nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in graph.node]
        self.params = nn.ParameterDict()
        for op, ins, _, _ in self.nodes:
            if op in ("Conv", "ConvTranspose"):
                for name in ins[1:]:
                    self._param(name)
            elif op in ("Add", "Concat"):
                for name in ins:
                    if name in self.inits and self.inits[name].dtype.kind == "f":
                        self._param(name)

    def _param(self, name: str) -> None:
        key = name.replace(".", "_").replace("/", "_")
        if key not in self.params:
            self.params[key] = nn.Parameter(torch.from_numpy(self.inits[name].copy()), requires_grad=False)

    def _tensor(self, name: str):
        return self.params[name.replace(".", "_").replace("/", "_")]

    def forward(self, *xs):
        env: dict = dict(zip(self.inputs, xs))

        def get(name):
            if name == "":
                return None
            if name in env:
                return env[name]
            if name in self.inits:
                value = self.inits[name]
                if value.dtype.kind == "f":
                    return self._tensor(name).to(xs[0].dtype)
                return value.tolist()  # shape-like constants stay on the host as ints
            raise KeyError(name)

        for op, ins, outs, at in self.nodes:
            env[outs[0]] = getattr(self, f"_{op}", self._unsupported(op))(ins, at, get, xs[0])
        result = tuple(env[o] for o in self.outputs)
        return result[0] if len(result) == 1 else result

    @staticmethod
    def _unsupported(op: str):
        def fail(*_):
            raise UnsupportedOp(f"ONNX op {op} is not supported by bench/onnx_module.py")

        return fail

    # -- tensor ops -------------------------------------------------------------------------------
    def _Conv(self, ins, at, get, x0):
        x, w = get(ins[0]), get(ins[1])
        b = get(ins[2]) if len(ins) > 2 else None
        pads = at.get("pads", [0, 0, 0, 0])
        if pads[0] != pads[2] or pads[1] != pads[3]:
            x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
            pads = [0, 0, 0, 0]
        return F.conv2d(x, w, b, at.get("strides", [1, 1]), pads[:2], at.get("dilations", [1, 1]), at.get("group", 1))

    def _ConvTranspose(self, ins, at, get, x0):
        x, w = get(ins[0]), get(ins[1])
        b = get(ins[2]) if len(ins) > 2 else None
        pads = at.get("pads", [0, 0, 0, 0])
        return F.conv_transpose2d(x, w, b, at.get("strides", [1, 1]), pads[:2], 0, at.get("group", 1),
                                  at.get("dilations", [1, 1]))

    def _Relu(self, ins, at, get, x0):
        return F.relu(get(ins[0]))

    def _LeakyRelu(self, ins, at, get, x0):
        return F.leaky_relu(get(ins[0]), at.get("alpha", 0.01))

    def _Add(self, ins, at, get, x0):
        return get(ins[0]) + get(ins[1])

    def _Softmax(self, ins, at, get, x0):
        return torch.softmax(get(ins[0]), at.get("axis", -1))

    def _Transpose(self, ins, at, get, x0):
        return get(ins[0]).permute(*at["perm"])

    def _Reshape(self, ins, at, get, x0):
        x, shape = get(ins[0]), list(get(ins[1]))
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return x.reshape(shape)

    def _Resize(self, ins, at, get, x0):
        x = get(ins[0])
        sizes = get(ins[3]) if len(ins) > 3 else None
        if at.get("mode", b"nearest") not in (b"nearest", "nearest"):
            raise UnsupportedOp("Resize: only mode=nearest")
        if sizes:
            return F.interpolate(x, size=[int(s) for s in sizes[2:]], mode="nearest")
        scales = get(ins[2])
        scales = scales.tolist() if hasattr(scales, "tolist") else scales
        return F.interpolate(x, scale_factor=[float(s) for s in scales[2:]], mode="nearest")

    def _Concat(self, ins, at, get, x0):
        parts = [get(i) for i in ins]
        if all(isinstance(p, (list, int)) for p in parts):  # shape arithmetic
            return [v for p in parts for v in (p if isinstance(p, list) else [p])]
        return torch.cat(parts, at.get("axis", 0))

    # -- shape ops (Python ints) ------------------------------------------------------------------
    def _Shape(self, ins, at, get, x0):
        return list(get(ins[0]).shape)

    def _Gather(self, ins, at, get, x0):
        data, index = get(ins[0]), get(ins[1])
        if not isinstance(data, list):
            raise UnsupportedOp("Gather on tensors")
        return [data[i] for i in index] if isinstance(index, list) else data[int(index)]

    def _Unsqueeze(self, ins, at, get, x0):
        value = get(ins[0])
        if isinstance(value, list):
            raise UnsupportedOp("Unsqueeze of a shape list")
        if isinstance(value, int):
            return [value]
        axes = at.get("axes") or get(ins[1])
        for a in sorted(axes):
            value = value.unsqueeze(a)
        return value

    def _Slice(self, ins, at, get, x0):
        data = get(ins[0])
        starts, ends = get(ins[1]), get(ins[2])
        if not isinstance(data, list):
            raise UnsupportedOp("Slice on tensors")
        return data[int(starts[0]):int(min(ends[0], len(data)))]


def load(path: str) -> OnnxModule:
    import onnx

    return OnnxModule(onnx.load(str(path))).eval()


if __name__ == "__main__":  # check against ONNX Runtime on the CPU
    import sys

    import onnxruntime as ort

    module = load(sys.argv[1])
    shape = [int(s) for s in sys.argv[2].split("x")]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"]).run(None, {module.inputs[0]: x})
    with torch.no_grad():
        got = module(torch.from_numpy(x))
    got = got if isinstance(got, tuple) else (got,)
    for name, a, b in zip(module.outputs, want, got):
        print(name, a.shape, tuple(b.shape), float(np.abs(a - b.numpy()).max()))
