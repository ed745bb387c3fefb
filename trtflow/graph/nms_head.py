"""The raw detection head behind an NMS node: the tensors to cut at for engines without NMS."""

from __future__ import annotations

from typing import Any

from trtflow.graph.io import graph_inputs

NMS_OPS = ("NonMaxSuppression", "EfficientNMS_TRT", "BatchedNMS_TRT", "BatchedNMSDynamic_TRT")
ADDED_PREFIX = "nms/"  # nodes `trtflow surgeon add-nms` inserts


def raw_head(proto: Any, node: Any = None) -> list[str]:
    """Names of the tensors an NMS node's boxes and scores come from, before the nodes add-nms added.

    Args:
        proto: an onnx.ModelProto.
        node: the NMS NodeProto (default: the first NMS node of the graph).

    Returns:
        ``[boxes, scores]`` tensor names (``boxes_raw``/``scores_raw`` where add-nms renamed the
        model's own outputs; one name when both come from one yolo head), then the other raw
        tensors add-nms decodes (RetinaFace landmarks), or ``[]`` when the graph has no NMS node.
    """
    nodes = list(proto.graph.node)
    node = node or next((n for n in nodes if n.op_type in NMS_OPS), None)
    if node is None:
        return []
    producer = {out: n for n in nodes for out in n.output}
    inputs = {v.name for v in graph_inputs(proto)}  # not constants
    names: list[str] = []
    for name in list(node.input)[:2]:
        start = _start_of_added(name, producer, inputs)
        if start not in names:  # yolo: boxes and scores both come from the one head
            names.append(start)
    if node.name.startswith(ADDED_PREFIX):  # what else add-nms decodes (RetinaFace landmarks)
        for n in nodes:
            if n.name.startswith(ADDED_PREFIX) and n.op_type != "Shape":
                for i in n.input:
                    if i and i not in names and _from_model(i, producer, inputs):
                        names.append(i)
    return names


def _start_of_added(name: str, producer: dict, inputs: set) -> str:
    """The first tensor (depth first, first inputs first) that the add-nms nodes behind ``name`` read from
    the model: a tensor of the model's own nodes or a graph input. Shape nodes are not followed:
    they read only the size of the image input (retinaface/ssd priors), never detections."""
    stack, seen = [name], set()
    while stack:
        tensor = stack.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        node = producer.get(tensor)
        if node is None or not node.name.startswith(ADDED_PREFIX):
            if _from_model(tensor, producer, inputs):
                return tensor
            continue
        if node.op_type != "Shape":
            stack.extend(reversed([i for i in node.input if i]))
    return name


def _from_model(name: str, producer: dict, inputs: set) -> bool:
    """A tensor of the model's own nodes or one of ``inputs``, the graph inputs that are not constants
    (not add-nms's)."""
    node = producer.get(name)
    if node is not None:
        return not node.name.startswith(ADDED_PREFIX)
    return name in inputs
