"""Semantic segmentation: a per-pixel class map at the source size.

Three output kinds (``kind="auto"`` tells them apart by dtype and channels):

| kind          | engine output                   | mask                                   |
|---------------|---------------------------------|----------------------------------------|
| ``argmax``    | [N, 1, H, W] or [N, H, W] ints  | as is (argmax appended in the graph, as the TensorRT quickstart's FCN) |
| ``probability`` | [N, 1, H, W] floats           | ``p > threshold`` (PP-OCR's text map: 1 = text) |
| ``logits``    | [N, C, H, W] floats             | argmax over C                          |

The mask is mapped back to the frame by nearest neighbour through the frame's ``FrameMeta``
(letterbox padding dropped, crop/stretch undone; a map smaller than the network input, from a
head with an output stride, scaled up first), so ``mask.shape`` is the frame's (H, W). With
``resize="none"`` (the default for engines with dynamic H/W) frames run at their own size,
padded up to a multiple of ``stride``.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from trtflow.arrays import to_numpy
from trtflow.errors import UsageError
from trtflow.tasks.base import FrameMeta, number_option
from trtflow.tasks.detect import _resolve_size
from trtflow.tasks.prepare import Prep, PreparedTask
from trtflow.tasks.results import Segmentation, mask_stats

KINDS = ("auto", "argmax", "probability", "logits")
IMAGENET_RGB = Prep(mode="none", stride=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), pad_value=0.0)
# PP-OCR's DB text detector: BGR, /255, ImageNet mean/std, sides multiples of 32
PPOCR_PREP = Prep(mode="none", stride=32, order="bgr", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                  pad_value=0.0)


class SegmentTask(PreparedTask):
    """Per-pixel classes.

    Args:
        engine: input [N, 3, H, W]; output as in the module docstring.
        kind: "auto", "argmax", "probability" or "logits".
        threshold: probability maps: pixels above it are class 1 (default 0.3, DB's).
        labels: class names by id.
        input_size: network (height, width) when resizing (letterbox/stretch) or for fixed engines.
        resize: "none" (default for dynamic H/W engines), "letterbox" (default for fixed ones), "stretch".
        prep: the pixel layout (ImageNet mean/std on RGB by default).
        stride: "none" pads frames to a multiple of this.
        device: move numpy frames to this torch device for preprocessing.
    """

    name = "segment"

    def __init__(self, engine: Any, *, kind: str = "auto", threshold: float = 0.3,
                 labels: Optional[Sequence[str]] = None, input_size: Any = None, resize: Optional[str] = None,
                 prep: Optional[Prep] = None, stride: Optional[int] = None, input_name: Optional[str] = None,
                 device: Optional[str] = None):
        super().__init__(engine, input_name=input_name, labels=labels, device=device)
        if kind not in KINDS:
            raise UsageError(f"unknown segmentation output kind '{kind}'; choose one of: {', '.join(KINDS)}")
        self.output_name = engine.outputs[0].name
        self.auto = kind == "auto"
        self.kind = self._auto_kind() if self.auto else kind
        out = engine.outputs[0]
        if self.kind != "argmax" and not out.dtype.startswith(("float", "bfloat")):
            raise UsageError(f"segmentation kind {self.kind} reads scores, but the output '{out.name}' holds "
                             f"{out.dtype} class ids: give kind argmax (format, --format), or auto")
        if out.rank == 4 and isinstance(out.shape[1], int):  # a dynamic channel dim: checked per batch
            self._check_channels(out.shape[1])
        self.threshold = number_option("threshold", threshold, "the probability text/foreground pixels are above")
        base = prep or IMAGENET_RGB
        size = _resolve_size(self, input_size)
        mode = resize or ("letterbox" if self.fixed_size() is not None or input_size is not None else base.mode)
        stride = base.stride if stride is None else stride
        self.prep = Prep(mode, size, stride, base.order, base.scale, base.mean, base.std, base.pad_value,
                         base.crop_ratio)

    def _auto_kind(self) -> str:
        spec = self.engine.outputs[0]
        if not spec.dtype.startswith(("float", "bfloat")):
            return "argmax"
        channels = spec.shape[1] if spec.rank == 4 else 1
        return "probability" if channels == 1 else "logits"

    def _check_channels(self, channels: int) -> None:
        """Refuse a score kind that cannot read an output of ``channels`` channels."""
        if self.kind == "logits" and channels == 1:
            raise UsageError(f"segmentation kind logits takes the argmax over channels, but the output "
                             f"'{self.output_name}' has one channel (every pixel would be class 0): give kind "
                             "probability, or auto")
        if self.kind == "probability" and channels > 1:
            raise UsageError(f"segmentation kind probability thresholds a one-channel map, but the output "
                             f"'{self.output_name}' has {channels} channels (only the first would be read): give "
                             "kind logits (argmax over the channels), or auto")

    def finish(self, outputs: Mapping[str, Any], metas: Sequence[FrameMeta]) -> list[Segmentation]:
        y = outputs[self.output_name]
        kind = self.kind
        if kind != "argmax" and len(y.shape) == 4:  # the channels, where the engine left them dynamic
            if kind == "logits" and int(y.shape[1]) == 1 and self.auto:
                kind = "probability"  # one channel: a map thresholded, as auto reads a fixed one-channel output
            else:
                self._check_channels(int(y.shape[1]))
        if kind == "logits":
            y = y.argmax(1)
        y = to_numpy(y)
        if y.ndim == 4:
            y = y[:, 0]
        if kind == "probability":
            y = y > self.threshold
        y = y.astype(np.int32)
        results = []
        for i, meta in enumerate(metas):
            mask = to_frame(y[i], meta)
            results.append(Segmentation(mask, mask_stats(mask, self.labels), self.labels))
        return results


def to_frame(mask: np.ndarray, meta: FrameMeta) -> np.ndarray:
    """A network's [h, w] map -> the frame's [H, W] by nearest neighbour through ``meta``; a map
    smaller than the network input (a head with an output stride) is scaled to the input first."""
    ys, xs = _nearest_rows_cols(meta, mask.shape[:2])
    return np.ascontiguousarray(mask[ys, xs])


@functools.lru_cache(maxsize=64)
def _nearest_rows_cols(meta: FrameMeta, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The mask rows [H, 1] and columns [1, W] each frame pixel reads; frames of one size share ``meta``,
    so this runs once per frame size, not per frame."""
    h, w = meta.size
    ry, rx = shape[0] / meta.input_size[0], shape[1] / meta.input_size[1]  # map pixels per input pixel
    ys = np.floor(((np.arange(h) + 0.5) * meta.scale[1] + meta.pad[1]) * ry).astype(np.int64).clip(0, shape[0] - 1)
    xs = np.floor(((np.arange(w) + 0.5) * meta.scale[0] + meta.pad[0]) * rx).astype(np.int64).clip(0, shape[1] - 1)
    ys.flags.writeable = xs.flags.writeable = False  # shared by every call
    return ys[:, None], xs[None, :]
