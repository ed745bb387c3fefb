"""``trtflow surgeon add-nms``: decode a detection head and append NMS in standard ONNX ops.

The new outputs follow EfficientNMS's layout, K = max_det, sorted by score per image:
``num_detections`` [N, 1] int32, ``boxes`` [N, K, 4] float32 (x1, y1, x2, y2), ``scores``
[N, K] float32, ``classes`` [N, K] int32, plus ``landmarks`` [N, K, 10] for RetinaFace. Rows past
num_detections are padding: zeros, and class -1.

The graph: decode (``trtflow.vision.formats``, priors built from the input's shape) ->
NonMaxSuppression (per class, or on the best class per anchor) -> the selected scores scattered
into a per-image table ``[N, C*A + K]`` -> TopK(K) -> gathers of boxes, classes and landmarks
(``trtflow.edits.nms_graph``).
ONNX Runtime runs it; batch and H/W stay dynamic. ``--plugin efficientnms`` emits an
``EfficientNMS_TRT`` node instead (TensorRT only; deprecated since TensorRT 10.12).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from trtflow.deps import require
from trtflow.edits import fields
from trtflow.edits.nms_graph import OUTPUTS, efficient_nms, image_input, onnx_nms, priors_of
from trtflow.edits.registry import Edit, register
from trtflow.edits.verify import VerifyConfig
from trtflow.errors import GraphError, MismatchError, UsageError
from trtflow.graph.builder import GraphBuilder
from trtflow.graph.ir import export_graph, onnx_opset
from trtflow.progress import Progress, report as progress_of
from trtflow.vision.formats import PRIOR_FORMATS, DetectionConfig, resolve_roles, split_head

log = logging.getLogger(__name__)

PLUGINS = ("none", "efficientnms")
BOX_ATOL, BOX_RTOL = 1e-4, 1e-5  # verification: |after - reference| <= atol + rtol * |reference|
PLUGIN_NOTE = (
    "EfficientNMS_TRT is a TensorRT plugin: ONNX Runtime cannot run it, so add-nms was not verified. "
    "It is deprecated since TensorRT 10.12 and TensorRT-RTX has no plugins; the default (--plugin none, "
    "standard NonMaxSuppression) runs in ONNX Runtime and TensorRT."
)


BOXES_ROLE = {"yolov8": "head", "yolov5": "head", "boxes-scores": "boxes", "retinaface": "loc", "ssd": "loc"}


@dataclass(frozen=True)
class NmsOptions:
    """Options of the ``add-nms`` edit.

    Attributes:
        format: layout of the raw head outputs, one of ``FORMATS``.
        score_thr: keep scores above this.
        iou_thr: suppress boxes whose IoU with a kept box is above this.
        max_det: detections per image; the outputs are padded to it.
        class_agnostic: NMS across classes on each anchor's best class.
        boxes: raw output with the boxes (the yolo head; loc for retinaface/ssd); None: found by name/order.
        scores: raw output with the scores (conf for retinaface/ssd).
        landmarks: raw RetinaFace landmarks output.
        priors: retinaface/ssd priors: a preset name (computed in the graph from the input size),
            a .npy path or an [A, 4] array of normalized cx, cy, w, h; None: the format's preset.
        variances: retinaface/ssd center and size variances.
        plugin: "none" (standard NonMaxSuppression) or "efficientnms" (an EfficientNMS_TRT node).
        check_format: refuse a head that does not fit ``format`` (``trtflow.vision.head_fit``), judged
            on one ONNX Runtime run of the model (the verification inputs, else random ones), or on
            the static output shapes when ONNX Runtime cannot run it.
    """

    format: str
    score_thr: float = 0.25
    iou_thr: float = 0.45
    max_det: int = 100
    class_agnostic: bool = False
    boxes: str | None = None
    scores: str | None = None
    landmarks: str | None = None
    priors: Any = None
    variances: tuple[float, float] = (0.1, 0.2)
    plugin: str = "none"
    check_format: bool = True

    def __post_init__(self):
        if self.plugin not in PLUGINS:
            raise UsageError(f"unknown --plugin '{self.plugin}'; choose one of: {', '.join(PLUGINS)}")
        fields.set_field(self, "score_thr", fields.number(self.score_thr, "score_thr"))
        fields.set_field(self, "iou_thr", fields.number(self.iou_thr, "iou_thr", 0, 1))
        fields.set_field(self, "max_det", fields.number(self.max_det, "max_det", 1, integer=True))
        fields.set_field(self, "class_agnostic", fields.boolean(self.class_agnostic, "class_agnostic"))
        fields.set_field(self, "check_format", fields.boolean(self.check_format, "check_format"))
        for name in ("boxes", "scores", "landmarks"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise UsageError(f"{name} {value!r}: expected the name of a raw model output")
        variances = self.variances if not isinstance(self.variances, str) else ()
        if len(variances) != 2:
            raise UsageError(f"variances {self.variances!r}: expected two numbers, e.g. (0.1, 0.2)")
        fields.set_field(self, "variances", tuple(fields.number(v, "variances", 0, low_open=True) for v in variances))
        self.detection_config()  # checks the format and the output roles

    def detection_config(self) -> DetectionConfig:
        """The ``DetectionConfig`` (shared with ``decode_detections``) of these options."""
        scores_role = "scores" if self.format == "boxes-scores" else "conf"
        names = {role: value for role, value in ((BOXES_ROLE.get(self.format, "loc"), self.boxes),
                                                 (scores_role, self.scores), ("landmarks", self.landmarks)) if value}
        return DetectionConfig(self.format, self.score_thr, self.iou_thr, self.max_det, self.class_agnostic,
                               names, self.variances, self.priors)

    @classmethod
    def from_detection(cls, config: DetectionConfig, plugin: str = "none", check_format: bool = True) -> "NmsOptions":
        """The add-nms options that decode and filter like ``config``."""
        names = dict(config.names)
        return cls(config.format, config.score_thr, config.iou_thr, config.max_det, config.class_agnostic,
                   boxes=names.get(BOXES_ROLE[config.format]), scores=names.get("scores", names.get("conf")),
                   landmarks=names.get("landmarks"), priors=config.priors, variances=tuple(config.variances),
                   plugin=plugin, check_format=check_format)


def _check_format(proto, graph, config: DetectionConfig, verify_config: VerifyConfig | None) -> str:
    """Refuse a head that does not fit ``config.format``; returns what the check looked at.

    The raw outputs of one ONNX Runtime run (the given verification inputs, else random ones)
    are checked; a model ONNX Runtime cannot run is checked on its static output shapes.
    """
    from trtflow.backends.onnxruntime.runner import OrtEngine
    from trtflow.edits.verify import build_feeds
    from trtflow.errors import TrtflowError
    from trtflow.vision.head_fit import check_head

    verify_config = verify_config or VerifyConfig()
    try:
        label, feed = build_feeds(proto, None, verify_config)[0]
    except UsageError:
        if verify_config.inputs or verify_config.shapes:
            raise
        label, feed = _labelled_feeds(proto, None)[0]  # dynamic dims: 256 where nothing is given
    image = next((k for k, v in feed.items() if getattr(v, "ndim", 0) == 4), None)
    size = feed[image].shape[2:] if image is not None else None
    try:
        with OrtEngine(proto) as engine:
            raw = engine.infer(feed)
    except (TrtflowError, MemoryError) as exc:
        log.info("add-nms: checking --format on the static output shapes (ONNX Runtime did not run the "
                 "model: %s)", str(exc).splitlines()[0])
        dims = next((t.shape for t in graph.inputs if t.name == image), None) or ()
        static = tuple(dims[2:4]) if len(dims) == 4 and all(isinstance(d, int) for d in dims[2:4]) else None
        check_head(config, {t.name: t.shape for t in graph.outputs}, static)
        return "static output shapes"
    check_head(config, raw, size)
    return f"raw outputs on {label}"


def add_nms(model, options: NmsOptions | DetectionConfig, verify_config: VerifyConfig | None = None) -> tuple[Any, dict]:
    """Decode a detection head and append NMS to an ONNX model.

    Args:
        model: path, bytes or onnx.ModelProto ending at the raw head outputs.
        options: format, thresholds, output names, priors and plugin; a ``DetectionConfig`` (the
            one ``decode_detections`` takes) means the standard NonMaxSuppression graph.
        verify_config: its inputs and shapes feed the format check's run (None: random inputs).

    Returns:
        (new model, report dict).

    Raises:
        UsageError: an unknown plugin or format, output names that do not fit the format, a head
            that does not fit it (the message names the format it looks like), or a model input
            named like one of the outputs add-nms writes.
        GraphError: the model's opset is below 11, or the graph cannot be rewritten.
    """
    import onnx

    from trtflow.graph.io import load_onnx

    gs = require("onnx_graphsurgeon", "add-nms")
    if isinstance(options, DetectionConfig):
        options = NmsOptions.from_detection(options)
    elif not isinstance(options, NmsOptions):
        raise UsageError(f"add_nms takes NmsOptions or a DetectionConfig, not {type(options).__name__}")
    config, plugin = options.detection_config(), options.plugin
    proto = load_onnx(model)
    opset = onnx_opset(proto)
    if opset < 11:
        raise GraphError(f"add-nms needs ONNX opset >= 11 (NonMaxSuppression, Range); the model has opset {opset}. "
                         "Re-export it with opset 11 or newer.")
    graph = gs.import_onnx(proto)
    tensors = graph.tensors()
    checked = _check_format(proto, graph, config, verify_config) if options.check_format else None
    roles = resolve_roles(config, [t.name for t in graph.outputs])
    raw_tensors = {role: tensors[name] for role, name in roles.items()}
    extra = [t for t in graph.outputs if t.name not in roles.values()]  # outputs besides the head stay
    taken = [name for name in OUTPUTS if name in {t.name for t in graph.inputs}]
    if taken:  # an input renamed to free the name would change what callers feed
        raise UsageError(f"the model has input(s) {taken}, named like the outputs add-nms writes ({', '.join(OUTPUTS)}); "
                         "rename them first: trtflow surgeon rename --rename-input "
                         + " --rename-input ".join(f"{n}={n}_in" for n in taken))
    for name in OUTPUTS:  # free the new output names (boxes-scores models often use them)
        if name in tensors:
            tensors[name].name = f"{name}_raw"
    b = GraphBuilder(graph, opset)
    raw = {role: b.wrap(t, np.float32) for role, t in raw_tensors.items()}
    priors = scale_xy = None
    if config.format in PRIOR_FORMATS:
        from trtflow.graph.priors import input_hw

        height, width = input_hw(b, b.wrap(image_input(graph)))
        priors = priors_of(b, config, height, width)
        scale_xy = b.cat([width, height], 0)
    landmark_dim = raw["landmarks"].shape[-1] if "landmarks" in raw and raw["landmarks"].shape else None
    count = landmark_dim // 2 if isinstance(landmark_dim, int) else 5
    boxes, scores, landmarks = split_head(raw, config, priors, scale_xy, landmark_count=count)
    report: dict = {"edit": "add-nms", "format": config.format, "plugin": plugin, "raw_outputs": roles,
                    "max_det": config.max_det, "score_thr": config.score_thr, "iou_thr": config.iou_thr,
                    "class_agnostic": config.class_agnostic, "class_offset": config.class_offset,
                    "format_checked_on": checked}
    if plugin == "efficientnms":
        log.warning("EfficientNMS_TRT is deprecated since TensorRT 10.12 and runs only in TensorRT 10; "
                    "ONNX Runtime cannot run the result")
        plugin_scores = raw["conf"] if config.format in PRIOR_FORMATS else scores
        outs = efficient_nms(b, boxes, plugin_scores, config)
        if landmarks is not None:
            report["warning"] = "landmarks dropped: EfficientNMS_TRT returns no indices to gather them with"
            log.warning(report["warning"])
    else:
        outs = onnx_nms(b, boxes, scores, landmarks, config)
    head = next(iter(raw_tensors.values()))  # not graph.outputs[0]: an output kept beside the head may come first
    batch = head.shape[0] if head.shape else "N"
    shapes = {"num_detections": [batch, 1], "boxes": [batch, config.max_det, 4], "scores": [batch, config.max_det],
              "classes": [batch, config.max_det],
              "landmarks": [batch, config.max_det, landmark_dim if isinstance(landmark_dim, int) else 2 * count]}
    graph.outputs = []
    for name, array in outs.items():
        array.tensor.name = name
        array.tensor.shape = shapes[name]
        graph.outputs.append(array.tensor)
    graph.outputs.extend(extra)
    new = export_graph(graph, like=proto)  # cleanup, toposort; ir_version and metadata of the model
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


# ------------------------------------------------------------------ verification


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


def verify_nms(before, after, options: NmsOptions, verify_config: VerifyConfig | None = None, feeds=None,
               progress: Progress | None = None) -> dict:
    """ONNX Runtime detections of ``after`` vs the numpy reference NMS on ``before``'s raw outputs.

    Args:
        before: the model ending at the raw head.
        after: the model with add-nms.
        options: add-nms's options.
        verify_config: its ``atol``/``rtol`` (unset: 1e-4 and 1e-5); the feeds come in ``feeds``.
        feeds: ``(label, feed)`` pairs or feed dicts for ``before``; None: one random feed.
        progress: told before each feed runs.

    Counts and classes must be equal; boxes, scores and landmarks within
    ``|a - b| <= atol + rtol * |reference|``.

    Raises:
        MismatchError: a count, class or value out of tolerance; the report is attached.
    """
    from trtflow.compare.core import Tolerances, compare_outputs
    from trtflow.backends.onnxruntime.runner import OrtEngine
    from trtflow.vision.head_fit import check_head
    from trtflow.vision.nms_ref import reference_detections

    if options.plugin != "none":
        return {"passed": None, "skipped": PLUGIN_NOTE, "runs": []}
    config = options.detection_config()
    verify_config = (verify_config or VerifyConfig()).resolved(BOX_ATOL, BOX_RTOL)
    atol, rtol = verify_config.atol, verify_config.rtol
    progress = progress_of(progress)
    exact = {"num_detections": 0, "classes": 0}
    tol = Tolerances(atol, rtol, per_output_atol={**verify_config.per_output_atol, **exact},
                     per_output_rtol={**verify_config.per_output_rtol, **exact})  # --atol boxes=X; counts exact
    report: dict = {"passed": True, "reference": "numpy NMS on the raw outputs of the input model",
                    "atol": atol, "rtol": rtol, "counts_and_classes": "exact", "detections_compared": 0,
                    "runs": []}
    with OrtEngine(before) as raw_engine, OrtEngine(after) as nms_engine:
        image = next((s.name for s in raw_engine.inputs if len(s.shape) == 4), None)
        labelled = _labelled_feeds(before, feeds)
        for k, (label, feed) in enumerate(labelled):
            progress(f"add-nms: verifying on {label}", k, len(labelled))
            size = feed[image].shape[2:] if image is not None else None
            raw = raw_engine.infer(feed)
            if options.check_format:  # the given inputs too: a head that fits no format decodes to garbage
                check_head(config, raw, size)
            reference = reference_detections(raw, config, size)
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
              options=NmsOptions, apply=add_nms, verify=verify_nms, atol=BOX_ATOL, rtol=BOX_RTOL,
              wants=("verify_config",)))
