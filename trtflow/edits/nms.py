"""``trtflow surgeon add-nms``: decode a detection head and append NMS in standard ONNX ops.

The new outputs follow EfficientNMS's layout, K = max_det, sorted by score per image:
``num_detections`` [N, 1] int32, ``boxes`` [N, K, 4] float32 (x1, y1, x2, y2), ``scores``
[N, K] float32, ``classes`` [N, K] int32, plus ``landmarks`` [N, K, 10] for RetinaFace. Rows past
num_detections are padding: zeros, and class -1.

The graph: decode (``trtflow.vision.formats``, priors built from the input's shape) ->
NonMaxSuppression (per class, or on the best class per anchor) -> the selected scores scattered
into a per-image table ``[N, C*A + K]`` -> TopK(K) -> gathers of boxes, classes and landmarks.
ONNX Runtime runs it; batch and H/W stay dynamic. ``--plugin efficientnms`` emits an
``EfficientNMS_TRT`` node instead (TensorRT only; deprecated since TensorRT 10.12).
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Mapping, Optional

import numpy as np

from trtflow.deps import require
from trtflow.errors import GraphError, MismatchError, UsageError
from trtflow.graph.builder import GraphArray, GraphBuilder
from trtflow.edits.registry import Edit, register
from trtflow.vision.formats import FORMATS, PRIOR_FORMATS, DetectionConfig, resolve_roles, split_head
from trtflow.vision.priors import PRESETS, PriorConfig, load_priors

log = logging.getLogger(__name__)

OUTPUTS = ("num_detections", "boxes", "scores", "classes", "landmarks")
LOWEST = float(np.finfo(np.float32).min)  # score of an empty table cell
PLUGINS = ("none", "efficientnms")
BOX_ATOL, BOX_RTOL = 1e-4, 1e-5  # verification: |after - reference| <= atol + rtol * |reference|
PLUGIN_NOTE = (
    "EfficientNMS_TRT is a TensorRT plugin: ONNX Runtime cannot run it, so add-nms was not verified. "
    "It is deprecated since TensorRT 10.12 and TensorRT-RTX has no plugins; the default (--plugin none, "
    "standard NonMaxSuppression) runs in ONNX Runtime and TensorRT."
)


def _image_input(graph) -> Any:
    for tensor in graph.inputs:
        if tensor.shape is not None and len(tensor.shape) == 4:
            return tensor
    raise GraphError(
        f"retinaface/ssd decoding reads the input size from the NCHW image input (priors, pixel scale), "
        f"but no input is 4-D (inputs: {[(t.name, t.shape) for t in graph.inputs]}); "
        "use --format boxes-scores on boxes already decoded, or decode after the engine with decode_detections"
    )


def _priors(b: GraphBuilder, config: DetectionConfig, height: GraphArray, width: GraphArray) -> GraphArray:
    from trtflow.graph.priors import graph_priors

    spec = config.prior_spec
    if isinstance(spec, str) and spec in PRESETS:
        spec = PRESETS[spec]
    if isinstance(spec, PriorConfig):
        return graph_priors(b, height, width, spec)
    array = load_priors(spec) if isinstance(spec, (str, os.PathLike)) else np.asarray(spec, np.float32)
    return b.const(array)


def _nms(b: GraphBuilder, boxes: GraphArray, scores: GraphArray, landmarks: Optional[GraphArray],
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


def _efficient_nms(b: GraphBuilder, boxes: GraphArray, scores: GraphArray, config: DetectionConfig) -> dict:
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


def add_nms(model, config: DetectionConfig, plugin: str = "none") -> tuple[Any, dict]:
    """Decode a detection head and append NMS to an ONNX model.

    Args:
        model: path, bytes or onnx.ModelProto ending at the raw head outputs.
        config: format, thresholds, output names and priors.
        plugin: "none" (standard NonMaxSuppression) or "efficientnms" (EfficientNMS_TRT node).

    Returns:
        (new model, report dict).

    Raises:
        UsageError: an unknown plugin or format, or output names that do not fit the format.
        GraphError: the model's opset is below 11, or the graph cannot be rewritten.
    """
    import onnx

    from trtflow.graph.io import load_onnx

    gs = require("onnx_graphsurgeon", "add-nms")
    if plugin not in PLUGINS:
        raise UsageError(f"unknown --plugin '{plugin}'; choose one of: {', '.join(PLUGINS)}")
    proto = load_onnx(model)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11:
        raise GraphError(f"add-nms needs ONNX opset >= 11 (NonMaxSuppression, Range); the model has opset {opset}. "
                         "Re-export it with opset 11 or newer.")
    graph = gs.import_onnx(proto)
    tensors = graph.tensors()
    roles = resolve_roles(config, [t.name for t in graph.outputs])
    raw_tensors = {role: tensors[name] for role, name in roles.items()}
    extra = [t for t in graph.outputs if t.name not in roles.values()]  # outputs besides the head stay
    for name in OUTPUTS:  # free the new output names (boxes-scores models often use them)
        if name in tensors:
            tensors[name].name = f"{name}_raw"
    b = GraphBuilder(graph, opset)
    raw = {role: b.wrap(t, np.float32) for role, t in raw_tensors.items()}
    priors = scale_xy = None
    if config.format in PRIOR_FORMATS:
        from trtflow.graph.priors import input_hw

        height, width = input_hw(b, b.wrap(_image_input(graph)))
        priors = _priors(b, config, height, width)
        scale_xy = b.cat([width, height], 0)
    landmark_dim = raw["landmarks"].shape[-1] if "landmarks" in raw and raw["landmarks"].shape else None
    count = landmark_dim // 2 if isinstance(landmark_dim, int) else 5
    boxes, scores, landmarks = split_head(raw, config, priors, scale_xy, landmark_count=count)
    report: dict = {"edit": "add-nms", "format": config.format, "plugin": plugin, "raw_outputs": roles,
                    "max_det": config.max_det, "score_thr": config.score_thr, "iou_thr": config.iou_thr,
                    "class_agnostic": config.class_agnostic, "class_offset": config.class_offset}
    if plugin == "efficientnms":
        log.warning("EfficientNMS_TRT is deprecated since TensorRT 10.12 and runs only in TensorRT 10; "
                    "ONNX Runtime cannot run the result")
        plugin_scores = raw["conf"] if config.format in PRIOR_FORMATS else scores
        outs = _efficient_nms(b, boxes, plugin_scores, config)
        if landmarks is not None:
            report["warning"] = "landmarks dropped: EfficientNMS_TRT returns no indices to gather them with"
            log.warning(report["warning"])
    else:
        outs = _nms(b, boxes, scores, landmarks, config)
    batch = graph.outputs[0].shape[0] if graph.outputs[0].shape else "N"
    shapes = {"num_detections": [batch, 1], "boxes": [batch, config.max_det, 4], "scores": [batch, config.max_det],
              "classes": [batch, config.max_det],
              "landmarks": [batch, config.max_det, landmark_dim if isinstance(landmark_dim, int) else 2 * count]}
    graph.outputs = []
    for name, array in outs.items():
        array.tensor.name = name
        array.tensor.shape = shapes[name]
        graph.outputs.append(array.tensor)
    graph.outputs.extend(extra)
    graph.cleanup().toposort()
    new = gs.export_onnx(graph)
    new.ir_version = proto.ir_version
    if plugin == "none":
        try:
            onnx.checker.check_model(new)
        except onnx.checker.ValidationError as exc:
            raise GraphError(f"add-nms produced an invalid ONNX graph: {exc}") from None
    else:
        report["verification"] = PLUGIN_NOTE
    report["outputs"] = list(outs)
    if extra:
        report["kept_outputs"] = [t.name for t in extra]
    return new, report


# ------------------------------------------------------------------ CLI and verification


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=FORMATS, help="layout of the raw head outputs")
    parser.add_argument("--score-thr", type=float, default=0.25, help="keep scores above this (default: %(default)s)")
    parser.add_argument("--iou-thr", type=float, default=0.45, help="suppress IoU above this (default: %(default)s)")
    parser.add_argument("--max-det", type=int, default=100, help="detections per image, outputs padded to it (default: %(default)s)")
    parser.add_argument("--class-agnostic", action="store_true", help="NMS across classes on each anchor's best class")
    parser.add_argument("--boxes", metavar="NAME", help="raw output with the boxes (yolo head, loc for retinaface/ssd)")
    parser.add_argument("--scores", metavar="NAME", help="raw output with the scores (conf for retinaface/ssd)")
    parser.add_argument("--landmarks", metavar="NAME", help="raw RetinaFace landmarks output")
    parser.add_argument("--priors", metavar="PRESET|FILE.npy",
                        help=f"retinaface/ssd priors: {', '.join(PRESETS)} (computed in the graph from the input size) "
                             "or a .npy [A, 4] of normalized cx,cy,w,h (fixed input size); default: the format's preset")
    parser.add_argument("--variances", default="0.1,0.2", help="retinaface/ssd center,size variances (default: %(default)s)")
    parser.add_argument("--plugin", choices=PLUGINS, default="none",
                        help="none: standard NonMaxSuppression; efficientnms: EfficientNMS_TRT node (TensorRT 10 only)")


def config_from_args(args: argparse.Namespace) -> DetectionConfig:
    """The DetectionConfig described by add-nms's command-line options."""
    boxes_role = {"yolov8": "head", "yolov5": "head", "boxes-scores": "boxes"}.get(args.format, "loc")
    scores_role = "scores" if args.format == "boxes-scores" else "conf"
    names = {}
    for role, value in ((boxes_role, args.boxes), (scores_role, args.scores), ("landmarks", args.landmarks)):
        if value:
            names[role] = value
    try:
        variances = tuple(float(v) for v in str(args.variances).split(","))
    except ValueError:
        variances = ()
    if len(variances) != 2:
        raise UsageError(f"--variances '{args.variances}': expected two numbers, e.g. 0.1,0.2")
    return DetectionConfig(args.format, args.score_thr, args.iou_thr, args.max_det, args.class_agnostic,
                           names, variances, args.priors)


def apply(proto, args: argparse.Namespace) -> tuple[Any, dict]:
    return add_nms(proto, config_from_args(args), args.plugin)


def _labelled_feeds(proto, feeds) -> list[tuple[str, dict]]:
    """``(label, feed)`` pairs from the framework's list, plain dicts, or None (one random feed)."""
    if feeds is None:
        from trtflow.feeds import random_feed
        from trtflow.graph.io import onnx_specs

        specs, _ = onnx_specs(proto)
        shapes = {s.name: tuple(d if isinstance(d, int) else (1 if i == 0 else 256) for i, d in enumerate(s.shape))
                  for s in specs}
        return [("random(seed=0)", random_feed(specs, shapes, seed=0))]
    if isinstance(feeds, Mapping):
        feeds = [feeds]
    return [f if isinstance(f, tuple) else (f"feed {i}", f) for i, f in enumerate(feeds)]


def verify(before, after, args: argparse.Namespace, feeds=None) -> dict:
    """ONNX Runtime detections of ``after`` vs the numpy reference NMS on ``before``'s raw outputs.

    Args:
        before: the model ending at the raw head.
        after: the model with add-nms.
        args: add-nms's options.
        feeds: ``(label, feed)`` pairs or feed dicts for ``before``; None: one random feed.

    Counts and classes must be equal; boxes, scores and landmarks within
    ``|a - b| <= atol + rtol * |reference|`` (``args.atol``/``args.rtol``, default 1e-4 and 1e-5).

    Raises:
        MismatchError: a count, class or value out of tolerance; the report is attached.
    """
    from trtflow.compare.core import Tolerances, compare_outputs
    from trtflow.backends.onnxruntime.runner import OrtEngine
    from trtflow.vision.nms_ref import reference_detections

    if getattr(args, "plugin", "none") != "none":
        return {"passed": None, "skipped": PLUGIN_NOTE, "runs": []}
    config = config_from_args(args)
    atol, rtol = getattr(args, "atol", None), getattr(args, "rtol", None)  # the surgeon's --atol/--rtol
    atol, rtol = BOX_ATOL if atol is None else atol, BOX_RTOL if rtol is None else rtol
    exact = {"num_detections": 0, "classes": 0}
    tol = Tolerances(atol, rtol, per_output_atol=exact, per_output_rtol=exact)
    report: dict = {"passed": True, "reference": "numpy NMS on the raw outputs of the input model",
                    "atol": atol, "rtol": rtol, "counts_and_classes": "exact", "detections_compared": 0,
                    "runs": []}
    with OrtEngine(before) as raw_engine, OrtEngine(after) as nms_engine:
        image = next((s.name for s in raw_engine.inputs if len(s.shape) == 4), None)
        for label, feed in _labelled_feeds(before, feeds):
            size = feed[image].shape[2:] if image is not None else None
            reference = reference_detections(raw_engine.infer(feed), config, size)
            diffs = compare_outputs(reference, nms_engine.infer(feed), tol)
            count = int(reference["num_detections"].sum())
            report["detections_compared"] += count
            report["runs"].append({"feed": label, "detections": count, "outputs": [d.to_dict() for d in diffs]})
            failed = [d for d in diffs if not d.passed]
            if failed:
                report["passed"] = False
                names = ", ".join(f"{d.name} (max error {d.max_abs:.3g}{'; ' + d.note if d.note else ''})" for d in failed)
                raise MismatchError(
                    f"add-nms: on feed {label} the new outputs differ from the numpy reference NMS on the raw "
                    f"outputs: {names}. Check --format and the raw output names "
                    f"({resolve_roles(config, [s.name for s in raw_engine.outputs])}).", report)
    report["max_box_error"] = max((d["max_abs"] for r in report["runs"] for d in r["outputs"] if d["name"] == "boxes"),
                                  default=0.0)
    return report


register(Edit(name="add-nms", help="decode a detection head and append NMS (ONNX NonMaxSuppression)",
              add_arguments=add_arguments, apply=apply, verify=verify, atol=BOX_ATOL, rtol=BOX_RTOL))
