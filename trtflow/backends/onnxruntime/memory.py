"""How much memory one ONNX Runtime run needs, estimated from ONNX shape inference before running,
so an absurd batch is refused with a message instead of being OOM-killed minutes later."""

from __future__ import annotations

import logging
import math
from typing import Mapping

from trtflow.arrays import ONNX_DTYPES
from trtflow.feeds import array_bytes, check_fits
from trtflow.spec import Shape

log = logging.getLogger(__name__)

SMALL_INIT = 1024  # initializers up to this many elements keep their values (Reshape targets, axes)


def light_model(proto):
    """The model's graph without its large weights (they become inputs of the same shape): what
    shape inference needs, a fraction of the memory."""
    from onnx import helper

    graph = proto.graph
    big = [t for t in graph.initializer if math.prod(t.dims) > SMALL_INIT]
    big_names = {t.name for t in big}
    inputs = [v for v in graph.input if v.name not in big_names]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in big]
    light = helper.make_graph(list(graph.node), graph.name or "g", inputs, list(graph.output),
                              [t for t in graph.initializer if t.name not in big_names])
    model = helper.make_model(light, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    model.metadata_props.add(key="trtflow.weights", value=",".join(sorted(big_names)))
    return model


def peak_bytes(light, shapes: Mapping[str, Shape]) -> int | None:
    """Inputs plus the largest node's inputs and outputs at ``shapes`` (input name -> shape), or
    None when shape inference cannot tell. A lower bound of the peak: ONNX Runtime reuses buffers
    between nodes, but one node's operands live at once.

    Args:
        light: ``light_model(proto)``.
        shapes: input name -> concrete shape.
    """
    from onnx import helper, shape_inference

    weights = set(next((p.value for p in light.metadata_props if p.key == "trtflow.weights"), "").split(","))
    model = type(light)()
    model.CopyFrom(light)
    for value in model.graph.input:
        if value.name in shapes:
            elem = value.type.tensor_type.elem_type
            value.CopyFrom(helper.make_tensor_value_info(value.name, elem, list(shapes[value.name])))
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False).graph
    except Exception as exc:  # noqa: BLE001 - an estimate only; running will tell
        log.debug("no memory estimate: shape inference failed (%s)", exc)
        return None
    sizes: dict[str, int] = {}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        ttype = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
        if None not in dims and value.name not in weights:
            sizes[value.name] = array_bytes(tuple(dims), ONNX_DTYPES.get(ttype.elem_type, "float32"))
    feed = sum(sizes.get(name, 0) for name in shapes)
    widest = max((sum(sizes.get(n, 0) for n in [*node.input, *node.output] if n not in shapes)
                  for node in inferred.node), default=0)
    return feed + widest


def check_memory(light, shapes: Mapping[str, Shape]) -> None:
    """Refuse a run whose estimated peak memory cannot fit (``trtflow.feeds.check_fits``).

    Raises:
        UsageError: the estimate is more than the available memory allows.
    """
    need = peak_bytes(light, shapes)
    if need is not None:
        desc = ", ".join(f"{k}:{'x'.join(map(str, v))}" for k, v in shapes.items())
        check_fits(need, f"running the model at {desc}")
