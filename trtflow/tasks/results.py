"""Per-frame results of the tasks: JSON fields (``to_dict``) and drawing (``draw``).

Every result is in source-frame pixels. ``to_dict()`` gives the task's JSON fields (a video
JSONL record adds ``stream``, ``frame`` and ``pts`` around them); ``draw(frame)`` returns a new
RGB uint8 image (the frame is not modified).

| result          | ``to_dict()``                                                                  |
|-----------------|--------------------------------------------------------------------------------|
| Detections      | ``{"detections": [{"box": [x1, y1, x2, y2], "score", "class", "label", "landmarks"?: [[x, y] * 5]}]}`` |
| Upscaled        | ``{"sr": {"size": [H, W], "scale": 2.0}}``                                     |
| Classification  | ``{"topk": [{"class", "label", "score"}]}``                                    |
| Segmentation    | ``{"segmentation": {"size": [H, W], "classes": [{"class", "label", "pixels", "fraction"}]}}`` |
| Custom          | whatever the user's function returned                                          |
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from trtflow.deps import require

BOX_COLOR = (0, 255, 0)
POINT_COLOR = (255, 0, 0)


@functools.lru_cache(maxsize=16)
def _palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours (class 0 black), the same for every call (made once per ``n``, read-only)."""
    rng = np.random.default_rng(12345)
    colors = rng.integers(40, 256, size=(max(n, 1), 3), dtype=np.int64).astype(np.uint8)
    colors[0] = 0
    colors.flags.writeable = False
    return colors


def _text(image: np.ndarray, text: str, org: tuple[int, int], color=(255, 255, 255)) -> None:
    cv2 = require("cv2", "drawing results")
    scale = max(0.4, min(image.shape[:2]) / 720)
    thick = max(1, int(round(scale * 1.5)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x, y = int(org[0]), int(max(org[1], th + base))
    cv2.rectangle(image, (x, y - th - base), (x + tw, y + base // 2), (0, 0, 0), -1)
    cv2.putText(image, text, (x, y - base // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def to_host(images: list) -> list[np.ndarray]:
    """Frames or images (numpy, or torch on any device) -> numpy, CUDA ones in one copy for the
    whole list: stacked on their GPU (concatenated, when their sizes differ), copied into pinned
    host memory, then the GPU's current stream is synchronized. CPU tensors are shared, not copied."""
    if all(isinstance(image, np.ndarray) for image in images):
        return images
    import torch

    tensors = [torch.as_tensor(image) for image in images]
    if not tensors[0].is_cuda:
        return [t.numpy() for t in tensors]
    if len({tuple(t.shape) for t in tensors}) == 1:
        on_gpu = torch.stack(tensors)
    else:  # frames of several sizes: still one copy
        on_gpu = torch.cat([t.reshape(-1) for t in tensors])
    host = torch.empty(on_gpu.shape, dtype=on_gpu.dtype, pin_memory=True)
    host.copy_(on_gpu, non_blocking=True)
    torch.cuda.current_stream(on_gpu.device).synchronize()
    flat, out, start = host.numpy().reshape(-1), [], 0
    for t in tensors:
        out.append(flat[start:start + t.numel()].reshape(tuple(t.shape)))
        start += t.numel()
    return out


def _copy(frame: Any) -> np.ndarray:
    from trtflow.arrays import to_numpy

    return np.array(to_numpy(frame), order="C")  # one copy, C-contiguous


@dataclass
class Detections:
    """Boxes found in one frame.

    Attributes:
        boxes: [K, 4] float32 x1, y1, x2, y2 in source pixels.
        scores: [K] float32.
        classes: [K] int32 class ids.
        labels: K names (None where unknown).
        landmarks: [K, P, 2] float32 points (5 per face for RetinaFace), or None.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    labels: list = field(default_factory=list)
    landmarks: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to_dict(self) -> dict:
        boxes, scores, classes = self.boxes.tolist(), self.scores.tolist(), self.classes.tolist()  # Python numbers once
        landmarks = self.landmarks.tolist() if self.landmarks is not None else None
        items = []
        for i in range(len(self)):
            item = {
                "box": [round(v, 2) for v in boxes[i]],
                "score": round(scores[i], 4),
                "class": int(classes[i]),
                "label": self.labels[i] if i < len(self.labels) else None,
            }
            if landmarks is not None:
                item["landmarks"] = [[round(x, 2), round(y, 2)] for x, y in landmarks[i]]
            items.append(item)
        return {"detections": items}

    def draw(self, frame: Any) -> np.ndarray:
        cv2 = require("cv2", "drawing results")
        image = _copy(frame)
        thick = max(1, min(image.shape[:2]) // 240)
        for i in range(len(self)):
            if not np.isfinite(self.boxes[i]).all():  # a model's NaN/inf box: reported by to_dict, not drawable
                continue
            x1, y1, x2, y2 = (int(round(float(v))) for v in self.boxes[i])
            cv2.rectangle(image, (x1, y1), (x2, y2), BOX_COLOR, thick)
            name = self.labels[i] if i < len(self.labels) and self.labels[i] else str(int(self.classes[i]))
            _text(image, f"{name} {float(self.scores[i]):.2f}", (x1, y1))
            if self.landmarks is not None:
                for x, y in self.landmarks[i]:
                    if np.isfinite(x) and np.isfinite(y):
                        cv2.circle(image, (int(round(float(x))), int(round(float(y)))), thick + 1, POINT_COLOR, -1)
        return image


@dataclass
class Upscaled:
    """A super-resolved frame: ``image`` is RGB uint8, exactly ``scale`` times the source size."""

    image: np.ndarray
    scale: float = 2.0

    def to_dict(self) -> dict:
        return {"sr": {"size": [int(self.image.shape[0]), int(self.image.shape[1])], "scale": self.scale}}

    def draw(self, frame: Any = None) -> np.ndarray:
        """The upscaled image (the source frame is not needed)."""
        from trtflow.arrays import to_numpy

        return np.ascontiguousarray(to_numpy(self.image))


@dataclass
class Classification:
    """The best classes of one frame: ``topk`` is a list of {"class", "label", "score"}, best first."""

    topk: list

    @property
    def label(self) -> Optional[str]:
        return self.topk[0]["label"] if self.topk else None

    def to_dict(self) -> dict:
        return {"topk": [dict(item) for item in self.topk]}

    def draw(self, frame: Any) -> np.ndarray:
        image = _copy(frame)
        y = 0
        for item in self.topk[:3]:
            name = item["label"] if item["label"] is not None else str(item["class"])
            _text(image, f"{name} {item['score']:.2f}", (4, y))
            y += max(18, int(image.shape[0] / 20))
        return image


@dataclass
class Segmentation:
    """A per-pixel class map of one frame.

    Attributes:
        mask: [H, W] int32 class ids at the source size (binary 0/1 for probability-map models).
        stats: per-class pixel counts and fractions (see ``mask_stats``).
        labels: class names by id, or None.
    """

    mask: np.ndarray
    stats: dict
    labels: Optional[list] = None

    def to_dict(self) -> dict:
        return {"segmentation": self.stats}

    def draw(self, frame: Any, alpha: float = 0.5) -> np.ndarray:
        image = _copy(frame)
        mask = np.asarray(self.mask)
        colors = _palette(int(mask.max()) + 1 if mask.size else 1)
        on = mask > 0  # only the labelled pixels are blended
        image[on] = (image[on].astype(np.float32) * (1 - alpha) + colors[mask[on]].astype(np.float32) * alpha).astype(np.uint8)
        return image


def mask_stats(mask: np.ndarray, labels: Optional[list] = None) -> dict:
    """``{"size": [H, W], "classes": [{"class", "label", "pixels", "fraction"}]}`` for the classes present."""
    mask = np.asarray(mask)
    ids, counts = np.unique(mask, return_counts=True)
    total = max(int(mask.size), 1)
    classes = []
    for c, n in zip(ids.tolist(), counts.tolist()):
        label = labels[c] if labels is not None and 0 <= c < len(labels) else None
        classes.append({"class": int(c), "label": label, "pixels": int(n), "fraction": round(n / total, 5)})
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "classes": classes}


@dataclass
class Custom:
    """What a ``post="MODULE:FUNCTION"`` function returned for one frame (a JSON-able dict)."""

    fields: dict

    def to_dict(self) -> dict:
        return dict(self.fields)

    def draw(self, frame: Any) -> np.ndarray:
        return _copy(frame)
