"""Plain numpy NMS: the reference that add-nms verification and the tests compare against.

Written for clarity, not speed: a greedy loop per image and class. Its rules are those of ONNX
Runtime's NonMaxSuppression, which the in-graph NMS runs on:

- a candidate needs ``score > score_thr``;
- candidates are visited by score, highest first, ties by lower anchor index;
- a candidate is dropped when its IoU with an already kept box of the same class (any class
  when class-agnostic) is ``> iou_thr``; IoU uses each box's min/max corners, and a pair whose
  union area is not positive never suppresses;
- kept detections of an image are ordered by score, ties by ``class * A + anchor``, and the
  first ``max_det`` are reported, padded with zeros (classes with -1).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from trtflow.vision.formats import DetectionConfig, decode_raw


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of ``box`` [4] with each of ``boxes`` [M, 4], corners in either order, in float64."""
    a = np.concatenate([np.minimum(box[:2], box[2:]), np.maximum(box[:2], box[2:])]).astype(np.float64)
    b = boxes.astype(np.float64)
    b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], axis=1)
    wh = np.clip(np.minimum(a[2:], b[:, 2:]) - np.maximum(a[:2], b[:, :2]), 0.0, None)
    inter = wh[:, 0] * wh[:, 1]
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return iou


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> np.ndarray:
    """Indices into ``boxes`` [M, 4] kept by greedy NMS, in visiting order (score desc, index asc)."""
    order = np.lexsort((np.arange(len(scores)), -scores.astype(np.float64)))
    kept: list[int] = []
    alive = np.ones(len(order), dtype=bool)
    for pos, idx in enumerate(order):
        if not alive[pos]:
            continue
        kept.append(int(idx))
        rest = order[pos + 1:]
        alive[pos + 1:] &= iou_one_to_many(boxes[idx], boxes[rest]) <= iou_thr
    return np.asarray(kept, dtype=np.int64)


def nms_image(boxes: np.ndarray, scores: np.ndarray, config: DetectionConfig) -> list[tuple[float, int, int, int]]:
    """Detections of one image as (score, flat key, class column, anchor), best first, at most max_det.

    Args:
        boxes: [A, 4] x1, y1, x2, y2.
        scores: [A, C] class scores.
    """
    num_anchors = boxes.shape[0]
    if config.class_agnostic:
        columns = scores.argmax(axis=1)
        groups = {0: (np.arange(num_anchors), scores.max(axis=1), columns)}
    else:
        groups = {c: (np.arange(num_anchors), scores[:, c], np.full(num_anchors, c)) for c in range(scores.shape[1])}
    found = []
    for group, (anchors, group_scores, columns) in groups.items():
        mask = group_scores > config.score_thr
        anchors, group_scores, columns = anchors[mask], group_scores[mask], columns[mask]
        for i in greedy_nms(boxes[anchors], group_scores, config.iou_thr):
            a = int(anchors[i])
            found.append((float(group_scores[i]), group * num_anchors + a, int(columns[i]), a))
    found.sort(key=lambda d: (-d[0], d[1]))
    return found[: config.max_det]


def reference_detections(
    outputs: Mapping[str, np.ndarray], config: DetectionConfig, input_size: Optional[Sequence[int]] = None
) -> dict[str, np.ndarray]:
    """Decode raw head outputs and run greedy NMS per image, all in numpy.

    Args:
        outputs: raw head outputs keyed by name.
        config: format, thresholds and names.
        input_size: (height, width) of the network input (retinaface / ssd).

    Returns:
        ``num_detections`` [N, 1] int32, ``boxes`` [N, K, 4] float32, ``scores`` [N, K] float32,
        ``classes`` [N, K] int32 (-1 where padded), and ``landmarks`` [N, K, P] when the format has
        them; K = max_det.
    """
    boxes, scores, landmarks = decode_raw({k: np.asarray(v) for k, v in outputs.items()}, config, input_size)
    n, k = boxes.shape[0], config.max_det
    out = {
        "num_detections": np.zeros((n, 1), np.int32),
        "boxes": np.zeros((n, k, 4), np.float32),
        "scores": np.zeros((n, k), np.float32),
        "classes": np.full((n, k), -1, np.int32),
    }
    if landmarks is not None:
        out["landmarks"] = np.zeros((n, k, landmarks.shape[-1]), np.float32)
    for i in range(n):
        found = nms_image(boxes[i], scores[i], config)
        out["num_detections"][i, 0] = len(found)
        for j, (score, _, column, anchor) in enumerate(found):
            out["scores"][i, j] = score
            out["classes"][i, j] = column + config.class_offset
            out["boxes"][i, j] = boxes[i, anchor]
            if landmarks is not None:
                out["landmarks"][i, j] = landmarks[i, anchor]
    return out
