"""The ONNX subgraphs ``add-nms`` appends to a decoded detection head: standard NonMaxSuppression
with a per-image top-K table, or one ``EfficientNMS_TRT`` plugin node (TensorRT only)."""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from trtflow.errors import GraphError
from trtflow.graph.builder import GraphArray, GraphBuilder
from trtflow.vision.formats import PRIOR_FORMATS, DetectionConfig
from trtflow.vision.priors import PRESETS, PriorConfig, load_priors

OUTPUTS = ("num_detections", "boxes", "scores", "classes", "landmarks")
LOWEST = float(np.finfo(np.float32).min)  # score of an empty table cell


def image_input(graph) -> Any:
    """The graph's first 4-D (NCHW image) input; GraphError when it has none."""
    for tensor in graph.inputs:
        if tensor.shape is not None and len(tensor.shape) == 4:
            return tensor
    raise GraphError(
        f"retinaface/ssd decoding reads the input size from the NCHW image input (priors, pixel scale), "
        f"but no input is 4-D (inputs: {[(t.name, t.shape) for t in graph.inputs]}); "
        "use --format boxes-scores on boxes already decoded, or decode after the engine with decode_detections"
    )


def priors_of(b: GraphBuilder, config: DetectionConfig, height: GraphArray, width: GraphArray) -> GraphArray:
    """The anchors of ``config.prior_spec``: built in the graph from a preset or PriorConfig, else a constant."""
    from trtflow.graph.priors import graph_priors

    spec = config.prior_spec
    if isinstance(spec, str) and spec in PRESETS:
        spec = PRESETS[spec]
    if isinstance(spec, PriorConfig):
        return graph_priors(b, height, width, spec)
    array = load_priors(spec) if isinstance(spec, (str, os.PathLike)) else np.asarray(spec, np.float32)
    return b.const(array)


def onnx_nms(b: GraphBuilder, boxes: GraphArray, scores: GraphArray, landmarks: Optional[GraphArray],
             config: DetectionConfig) -> dict[str, GraphArray]:
    """NonMaxSuppression + top-K gathers on decoded boxes [N, A, 4] and scores [N, A, C]."""
    i64 = np.int64
    k = config.max_det
    nms_scores = b.permute(scores, (0, 2, 1))  # [N, C, A]
    if config.class_agnostic:
        best = b.op("ArgMax", [scores], {"axis": 2, "keepdims": 0}, dtype=i64)  # [N, A]
        nms_scores = b.reduce("ReduceMax", nms_scores, [1], keepdims=True)  # [N, 1, A]
    selected = b.op("NonMaxSuppression", [boxes, nms_scores, b.const([k], i64), b.const([config.iou_thr]),
                                          b.const([config.score_thr])], dtype=i64)  # [M, 3]: image, column, anchor
    num_anchors = b.dim(scores, 1)
    image, column, anchor = (b.slice(selected, 1, i, i + 1) for i in range(3))  # [M, 1] each
    picked = b.op("GatherND", [nms_scores, selected])  # [M]
    # one row per image: the kept scores at column * A + anchor, K spare cells so TopK(K) always fits
    width = b.dim(nms_scores, 1) * num_anchors + b.const([k], i64)
    empty = b.op("ConstantOfShape", [b.cat([b.dim(scores, 0), width], 0)],
                 {"value": b.gs.Constant(b.name("lowest"), np.array([LOWEST], np.float32))})
    table = b.op("ScatterND", [empty, b.cat([image, column * num_anchors + anchor], 1), picked])
    top, flat = b.op("TopK", [table, b.const([k], i64)], {"axis": 1, "largest": 1, "sorted": 1},
                     outputs=2, output_dtypes=[np.float32, i64])  # [N, K]; ties: lower index first
    valid = b.op("Greater", [top, b.const(LOWEST)], dtype=np.bool_)
    anchor_k = b.op("Mod", [flat, num_anchors], dtype=i64)
    column_k = b.op("Div", [flat, num_anchors], dtype=i64)
    if config.class_agnostic:
        column_k = b.op("GatherElements", [best, anchor_k], {"axis": 1}, dtype=i64)
    batch = b.reshape(b.dim(scores, 0), np.zeros(0, i64))
    rows = anchor_k + b.reshape(b.op("Range", [b.const(0, i64), batch, b.const(1, i64)], dtype=i64) * num_anchors,
                                [-1, 1])  # [N, K] index into the flattened [N*A] anchors
    valid3 = b.unsqueeze(valid, [2])
    classes = b.cast(column_k + b.const(config.class_offset, i64), np.int32)
    out = {
        "num_detections": b.reduce("ReduceSum", b.cast(valid, np.int32), [1], keepdims=True),
        "boxes": b.where(valid3, b.op("Gather", [b.reshape(boxes, [-1, 4]), rows], {"axis": 0}), 0.0),
        "scores": b.where(valid, top, 0.0),
        "classes": b.where(valid, classes, b.const(-1, np.int32)),
    }
    if landmarks is not None:
        flat_lm = b.reshape(landmarks, b.cat([b.const([-1], i64), b.dim(landmarks, 2)], 0))
        out["landmarks"] = b.where(valid3, b.op("Gather", [flat_lm, rows], {"axis": 0}), 0.0)
    return out


def efficient_nms(b: GraphBuilder, boxes: GraphArray, scores: GraphArray, config: DetectionConfig) -> dict:
    """One ``EfficientNMS_TRT`` node: the first four of OUTPUTS (no landmarks)."""
    attrs = {
        "plugin_version": "1",
        "background_class": 0 if config.format in PRIOR_FORMATS else -1,
        "box_coding": 0,
        "iou_threshold": float(config.iou_thr),
        "score_threshold": float(config.score_thr),
        "max_output_boxes": int(config.max_det),
        "score_activation": 0,
        "class_agnostic": int(config.class_agnostic),
    }
    outs = b.op("EfficientNMS_TRT", [boxes, scores], attrs, outputs=4,
                output_dtypes=[np.int32, np.float32, np.float32, np.int32])
    return dict(zip(OUTPUTS[:4], outs))
