"""The raw detection head behind an NMS node: the tensors to cut at for engines without NMS."""

from __future__ import annotations

from typing import Any

NMS_OPS = ("NonMaxSuppression", "EfficientNMS_TRT", "BatchedNMS_TRT", "BatchedNMSDynamic_TRT")
ADDED_PREFIX = "nms/"  # nodes `trtflow surgeon add-nms` inserts


def raw_head(proto: Any, node: Any = None) -> list[str]:
    """Names of the tensors an NMS node's boxes and scores come from, before the nodes add-nms added.

    Args:
        proto: an onnx.ModelProto.
        node: the NMS NodeProto (default: the first NMS node of the graph).

    Returns:
        ``[boxes, scores]`` tensor names (``boxes_raw``/``scores_raw`` where add-nms renamed the
        model's own outputs), or ``[]`` when the graph has no NMS node.
    """
    nodes = list(proto.graph.node)
    node = node or next((n for n in nodes if n.op_type in NMS_OPS), None)
    if node is None:
        return []
    producer = {out: n for n in nodes for out in n.output}
    names = []
    for name in list(node.input)[:2]:
        seen = set()
        while name in producer and producer[name].name.startswith(ADDED_PREFIX) and name not in seen:
            seen.add(name)
            inputs = [i for i in producer[name].input if i and i in producer or _is_graph_input(proto, i)]
            if not inputs:
                break
            name = inputs[0]
        names.append(name)
    return names


def _is_graph_input(proto: Any, name: str) -> bool:
    return any(i.name == name for i in proto.graph.input)
