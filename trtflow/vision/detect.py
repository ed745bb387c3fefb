"""Detection post-processing in torch, batched, on any device: decode + NMS after an engine.

For engines that cannot run NMS inside the graph (TensorRT-RTX parses ONNX NonMaxSuppression,
then fails the build: "has no runners that implement it"): cut the graph at the raw head
(``trtflow surgeon extract``), run the engine, then ``decode_detections`` on its outputs. It gives
the same detections as ``trtflow surgeon add-nms`` run in ONNX Runtime (same rules, see
``trtflow.vision.nms_ref``), without torchvision.

The NMS: candidates are the (anchor, class) pairs above ``score_thr`` (the best class per anchor
when class-agnostic), at most ``pre_nms_topk`` per image, ordered by score (ties: lower
``class * A + anchor`` first). With S[i, j] = "candidate i precedes j, same class, IoU > iou_thr",
greedy NMS keeps j iff no kept i has S[i, j]. That recurrence is solved by iterating
``keep = valid & ~any_i(keep[i] & S[i, :])`` from ``keep = valid`` until it stops changing: each
pass fixes at least one more position, and its fixed point is the greedy answer. Cost per image:
O(K^2) memory for the IoU matrix (K = pre_nms_topk; 1000 -> 4 MB) and O(d K^2) work, d the
longest suppression chain (a few passes in practice, K at most); every image of the batch runs in
the same tensor ops.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional, Sequence

from trtflow.arrays import Family, to_torch
from trtflow.deps import require
from trtflow.errors import UsageError
from trtflow.spec import is_count
from trtflow.vision.formats import DetectionConfig, decode_raw

log = logging.getLogger(__name__)

PRE_NMS_TOPK = 1000


def decode_detections(
    outputs: Mapping[str, Any],
    format: str = "yolov8",
    score_thr: float = 0.25,
    iou_thr: float = 0.45,
    max_det: int = 100,
    class_agnostic: bool = False,
    input_size: Optional[Sequence[int]] = None,
    priors: Any = None,
    names: Optional[Mapping[str, str]] = None,
    variances: tuple[float, float] = (0.1, 0.2),
    pre_nms_topk: int = PRE_NMS_TOPK,
    check_format: bool = True,
) -> dict[str, Any]:
    """Decode raw detection-head outputs and run batched NMS.

    Args:
        outputs: raw head outputs keyed by name (torch tensors on any device, or numpy arrays).
        format: "yolov8", "yolov5", "boxes-scores", "retinaface" or "ssd" (see trtflow.vision.formats).
        score_thr: candidates need a score strictly above this.
        iou_thr: suppress a candidate whose IoU with a kept box of its class is above this.
        max_det: detections per image; outputs are padded to this many.
        class_agnostic: NMS across classes, each anchor taking its best class.
        input_size: (height, width) of the network input; needed by retinaface and ssd.
        priors: retinaface / ssd priors: a preset ("retinaface", "ssd300"), a PriorConfig, a .npy
            path or an [A, 4] array; None takes the format's preset.
        names: raw output name per role ("head"; "boxes", "scores"; "loc", "conf", "landmarks")
            when the outputs are not found by name or order.
        variances: retinaface / ssd center and size variances.
        pre_nms_topk: most candidates per image entering NMS (the in-graph NMS has no such cap:
            the two agree whenever an image has at most this many candidates above score_thr).
        check_format: refuse outputs that do not fit ``format`` (shapes, score ranges, prior
            count; see ``trtflow.vision.head_fit``); costs one host sync per check on CUDA tensors.

    Returns:
        ``num_detections`` [N, 1] int32, ``boxes`` [N, K, 4] float32 (x1, y1, x2, y2), ``scores``
        [N, K] float32, ``classes`` [N, K] int32 (-1 where padded) and, for retinaface,
        ``landmarks`` [N, K, 10]; K = max_det, sorted by score. numpy in, numpy out; torch
        tensors stay on their device.

    Raises:
        UsageError: an unknown format, outputs that do not fit it (the message names the format
            they look like), or a missing input_size.
    """
    torch = require("torch", "decode_detections")
    if not isinstance(outputs, Mapping):
        raise UsageError(
            f"decode_detections takes the raw head outputs keyed by name (engine.infer's result), got a "
            f"{type(outputs).__name__}; pass e.g. {{'output0': array}}"
        )
    if not outputs:
        raise UsageError("decode_detections got no outputs; pass the raw head outputs keyed by name")
    if not is_count(pre_nms_topk):
        raise UsageError(f"pre_nms_topk is {pre_nms_topk!r}; give a positive whole number of candidates")
    config = DetectionConfig(format, score_thr, iou_thr, max_det, class_agnostic, dict(names or {}),
                             tuple(variances), priors)
    family = Family.of(next(iter(outputs.values())))
    device = family.device if family.kind != "numpy" else "cpu"
    raw = {k: to_torch(v, device).float() for k, v in outputs.items()}
    with torch.no_grad():
        if check_format:
            from trtflow.vision.head_fit import check_head

            check_head(config, raw, input_size)
        boxes, scores, landmarks = decode_raw(raw, config, input_size)
        result = batched_nms(boxes, scores, config, landmarks, pre_nms_topk)
    return {k: family.wrap(v) for k, v in result.items()}


def pairwise_iou(boxes):
    """IoU matrix ``[N, K, K]`` of ``boxes`` [N, K, 4] (corners in either order; 0 where the union is empty)."""
    torch = require("torch", "decode_detections")
    lo = torch.minimum(boxes[..., :2], boxes[..., 2:])
    hi = torch.maximum(boxes[..., :2], boxes[..., 2:])
    area = (hi - lo).prod(-1)
    inter = (torch.minimum(hi[:, :, None], hi[:, None]) - torch.maximum(lo[:, :, None], lo[:, None])).clamp(min=0).prod(-1)
    union = area[:, :, None] + area[:, None, :] - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)), torch.zeros_like(union))


def batched_nms(boxes, scores, config: DetectionConfig, landmarks=None, pre_nms_topk: int = PRE_NMS_TOPK) -> dict:
    """NMS on decoded ``boxes`` [N, A, 4] and ``scores`` [N, A, C] torch tensors; see the module docstring."""
    torch = require("torch", "decode_detections")
    n, num_anchors, num_cols = scores.shape
    dev = scores.device
    if config.class_agnostic:
        best = scores.argmax(dim=2)  # first maximum on ties, like ONNX ArgMax
        flat = scores.gather(2, best[..., None])[..., 0]  # [N, A]; key = anchor
    else:
        flat = scores.permute(0, 2, 1).reshape(n, num_cols * num_anchors)  # key = column * A + anchor
    above = flat > config.score_thr
    masked = torch.where(above, flat, torch.full_like(flat, float("-inf")))
    # only as many candidate slots as the busiest image needs (one host sync)
    k = max(1, min(pre_nms_topk, int(above.sum(1).max()) if above.numel() else 0))
    k = min(k, flat.shape[1])  # a head without anchors has no candidate slot at all
    cand_scores, keys = torch.sort(masked, dim=1, descending=True, stable=True)
    cand_scores, keys = cand_scores[:, :k], keys[:, :k]
    valid = cand_scores > float("-inf")
    anchor = keys % num_anchors
    column = best.gather(1, anchor) if config.class_agnostic else keys // num_anchors
    group = torch.zeros_like(column) if config.class_agnostic else column
    cand_boxes = boxes.gather(1, anchor[..., None].expand(-1, -1, 4))
    earlier = torch.ones(k, k, dtype=torch.bool, device=dev).triu(1)  # [i, j]: i precedes j
    suppresses = (pairwise_iou(cand_boxes) > config.iou_thr) & earlier & (group[:, :, None] == group[:, None, :])
    keep = valid
    for _ in range(k):
        new = valid & ~(suppresses & keep[:, :, None]).any(dim=1)
        if torch.equal(new, keep):
            break
        keep = new
    # kept candidates first, still in score order; then the first max_det of them
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices
    take = min(config.max_det, k)
    order = order[:, :take]
    count = keep.sum(1, keepdim=True).clamp(max=config.max_det)
    live = torch.arange(take, device=dev)[None] < count
    pad = config.max_det - take

    def pick(values, fill):
        got = values.gather(1, order if values.dim() == 2 else order[..., None].expand(-1, -1, values.shape[-1]))
        mask = live if values.dim() == 2 else live[..., None]
        got = torch.where(mask, got, torch.full_like(got, fill))
        if pad:
            shape = (n, pad) + tuple(got.shape[2:])
            got = torch.cat([got, torch.full(shape, fill, dtype=got.dtype, device=dev)], dim=1)
        return got

    out = {
        "num_detections": count.to(torch.int32),
        "boxes": pick(cand_boxes, 0.0),
        "scores": pick(torch.where(valid, cand_scores, torch.zeros_like(cand_scores)), 0.0),
        "classes": pick((column + config.class_offset).to(torch.int32), -1),
    }
    if landmarks is not None:
        cand_points = landmarks.gather(1, anchor[..., None].expand(-1, -1, landmarks.shape[-1]))
        out["landmarks"] = pick(cand_points, 0.0)
    return out
