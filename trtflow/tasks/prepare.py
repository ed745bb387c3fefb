"""Frames -> a batched network input, on the frames' device, with torch (``trtflow.vision.preprocess``).

``Prep`` says how a model wants its pixels: the resize mode, channel order, scale, mean and std.
``prepare_frames`` applies it to a list of RGB HWC uint8 frames (numpy or torch, any sizes) and
returns an NCHW tensor plus one ``FrameMeta`` per frame for mapping results back.

Resize modes:

| mode        | network input                                     | FrameMeta                 |
|-------------|---------------------------------------------------|---------------------------|
| letterbox   | keep the aspect ratio, pad to ``size``            | one scale, (left, top) pad |
| stretch     | resize to ``size`` ignoring the aspect ratio      | scale per axis, no pad    |
| crop        | shorter side to ``size / crop_ratio``, center crop | scale, negative pad       |
| none        | the frame as is, padded bottom/right to the batch's largest frame and a multiple of ``stride`` | identity |
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from trtflow.deps import require
from trtflow.errors import UsageError
from trtflow.spec import is_count
from trtflow.tasks.base import RESIZE_MODES, FrameMeta, Task, frames_list
from trtflow.vision.preprocess import as_tensor, hw_size, letterbox, normalize, resize


@dataclass(frozen=True)
class Prep:
    """How a model wants its input pixels.

    Attributes:
        mode: "letterbox", "stretch", "crop" or "none" (see the module docstring).
        size: network (height, width); unused by "none".
        stride: "none" pads height and width up to a multiple of this.
        order: "rgb" or "bgr", the channel order the model reads.
        scale: multiplies the 0..255 pixel values first (1/255 gives 0..1).
        mean: subtracted per channel after scaling (in the model's channel order).
        std: divides per channel after the mean.
        pad_value: fill of padded pixels, in 0..255 units (before scale/mean).
        crop_ratio: "crop" resizes the shorter side to ``size / crop_ratio`` (224/256 for ImageNet).
    """

    mode: str = "letterbox"
    size: Optional[tuple[int, int]] = None
    stride: int = 1
    order: str = "rgb"
    scale: float = 1 / 255
    mean: Sequence[float] = (0.0, 0.0, 0.0)
    std: Sequence[float] = (1.0, 1.0, 1.0)
    pad_value: float = 114.0
    crop_ratio: float = 0.875

    def __post_init__(self):
        if self.mode not in RESIZE_MODES:
            raise UsageError(f"unknown resize mode '{self.mode}'; choose one of: {', '.join(RESIZE_MODES)}")
        if self.order not in ("rgb", "bgr"):
            raise UsageError(f"channel order '{self.order}': give 'rgb' or 'bgr'")
        if not is_count(self.stride):
            raise UsageError(f"stride {self.stride!r}: give a whole number of pixels, at least 1, that frame sides "
                             "are padded up to a multiple of")
        if not self.crop_ratio > 0:
            raise UsageError(f"crop_ratio {self.crop_ratio!r}: give the crop's share of the resized shorter side, "
                             "above 0 (0.875 for ImageNet)")
        if not all(float(s) != 0 for s in self.std):
            raise UsageError(f"std {tuple(self.std)}: a channel's std divides its values; give non-zero values")


def as_size(size: Any) -> Optional[tuple[int, int]]:
    """A task's input size: ``hw_size`` (``640`` -> (640, 640); ``(480, 640)`` or ``"480x640"`` ->
    (480, 640)); None stays None."""
    return None if size is None else hw_size(size, "input size")


def prepare_frames(frames: Any, prep: Prep, dtype: str = "float32", device: Optional[str] = None,
                   fixed: Optional[tuple[Optional[int], Optional[int]]] = None):
    """Frames -> (NCHW tensor in the model's layout, metas, numpy_in).

    Args:
        frames: RGB HWC uint8 frames: a list (sizes may differ), an N x H x W x 3 array or tensor.
        prep: how the model wants its input.
        dtype: the engine input's dtype name; an integer one (uint8) gets the pixel values rounded,
            so ``prep`` must not scale them (``Prep(scale=1.0)``, no mean/std).
        device: move numpy frames to this torch device first (e.g. "cuda"); torch frames stay where they are.
        fixed: the engine's (height, width) (``Task.fixed_dims()``), each its fixed size or None where it
            takes any, or None for no check.

    Returns:
        (torch NCHW tensor, list of FrameMeta, True when the frames were numpy arrays and no device was given).

    Raises:
        UsageError: no input size for a resizing mode, an integer ``dtype`` with scaling ``prep``, or resize
            "none" with frames that do not pad to ``fixed``.
    """
    torch = require("torch", "task preprocessing")
    from trtflow.arrays import torch_dtype

    if prep.mode != "none" and prep.size is None:
        raise UsageError(f"resize '{prep.mode}' needs an input size (height, width); give input_size=")
    items = frames_list(frames)
    numpy_in = isinstance(items[0], np.ndarray) and device is None
    tensors = [as_tensor(f, device) for f in items]  # read-only numpy frames: one copy, straight to device
    if prep.mode == "none":
        target = _none_target(tensors, prep.stride)
        if fixed is not None and any(f is not None and f != t for f, t in zip(fixed, target)):
            h, w = max(int(t.shape[0]) for t in tensors), max(int(t.shape[1]) for t in tensors)
            size = " x ".join("any" if f is None else str(f) for f in fixed)
            raise UsageError(f"resize 'none' runs frames at their own size: {h} x {w} (the batch's largest), padded to "
                             f"a multiple of {prep.stride}, is {target[0]} x {target[1]}, but the engine's input is "
                             f"fixed at {size}. Give resize 'letterbox' or 'stretch' (--resize) to "
                             "fit frames to it, or frames that pad to exactly that size")
    groups = _same_size_groups(tensors)
    out: list = [None] * len(tensors)
    metas = [None] * len(tensors)
    for idx in groups:
        batch = torch.stack([tensors[i] for i in idx]) if len(idx) > 1 else tensors[idx[0]][None]
        x = batch.permute(0, 3, 1, 2).float()
        if prep.mode == "none":
            x, meta = _pad_to(x, target, prep.pad_value)
        else:
            x, meta = _PLACE[prep.mode](x, prep)
        for j, i in enumerate(idx):
            out[i] = x[j]
            metas[i] = meta
    if len(groups) > 1:  # one group (frames of one size) is already the batch, in order
        x = torch.stack(out)
    if prep.order == "bgr":
        x = x.flip(1)
    want = torch_dtype(dtype)
    if not want.is_floating_point:  # an engine reading raw pixels (uint8): 0..255, rounded, no scaling
        check_raw_pixels(prep, dtype)
        info = torch.iinfo(want)
        return x.round().clamp(info.min, info.max).to(want).contiguous(), metas, numpy_in
    x = _normalize(x, prep)
    x = x.to(want).contiguous()
    return x, metas, numpy_in


def check_raw_pixels(prep: Prep, dtype: str, fix: str = "give prep=Prep(scale=1.0) (no mean/std) for this model") -> None:
    """Refuse a ``prep`` that scales the pixels for an integer ``dtype`` input, which gets the 0..255
    pixels rounded (scaled or normalized values would be cast away); ``fix`` says what to change.

    Raises:
        UsageError: a scale other than 1, or a mean/std.
    """
    if prep.scale != 1 or any(prep.mean) or any(s != 1 for s in prep.std):
        raise UsageError(f"the engine's image input is {dtype} (raw pixel values, 0..255), but the preprocessing "
                         f"scales them (scale {prep.scale:.4g}, mean {tuple(prep.mean)}, std {tuple(prep.std)}) to "
                         f"values {dtype} cannot hold; {fix}")


def _same_size_groups(tensors: list) -> list[list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(i)
    return list(groups.values())


def _none_target(tensors: list, stride: int) -> tuple[int, int]:
    h = max(int(t.shape[0]) for t in tensors)
    w = max(int(t.shape[1]) for t in tensors)
    return math.ceil(h / stride) * stride, math.ceil(w / stride) * stride


def _pad_to(x, target: tuple[int, int], value: float):
    import torch.nn.functional as F

    h, w = int(x.shape[2]), int(x.shape[3])
    th, tw = target
    if (th, tw) != (h, w):
        x = F.pad(x, (0, tw - w, 0, th - h), value=value)
    return x, FrameMeta((h, w), (th, tw))


def _letterbox(x, prep: Prep):
    h, w = int(x.shape[2]), int(x.shape[3])
    out, box = letterbox(x, prep.size, pad_value=prep.pad_value)
    return out, FrameMeta((h, w), tuple(prep.size), (box.scale, box.scale), (float(box.pad[0]), float(box.pad[1])))


def _stretch(x, prep: Prep):
    h, w = int(x.shape[2]), int(x.shape[3])
    th, tw = prep.size
    return resize(x, (th, tw)), FrameMeta((h, w), (th, tw), (tw / w, th / h), (0.0, 0.0))


def _crop(x, prep: Prep):
    h, w = int(x.shape[2]), int(x.shape[3])
    ch, cw = prep.size
    short = int(round(min(ch, cw) / prep.crop_ratio))
    if h <= w:  # torchvision's rounding, as resize_shorter_side
        nh, nw = short, int(short * w / h)
    else:
        nh, nw = int(short * h / w), short
    nh, nw = max(nh, ch), max(nw, cw)
    top, left = int(round((nh - ch) / 2.0)), int(round((nw - cw) / 2.0))
    # the window of resize(x, (nh, nw)) at (top, left), from the source pixels under it only: a 16 x 4000
    # frame would otherwise become a 256 x 64000 image first
    rows, cols = _taps(h, nh, top, ch, x.device), _taps(w, nw, left, cw, x.device)
    x = x[:, :, rows.span, cols.span]
    x = x.index_select(2, rows.low) * rows.w_low[:, None] + x.index_select(2, rows.high) * rows.w_high[:, None]
    out = x.index_select(3, cols.low) * cols.w_low + x.index_select(3, cols.high) * cols.w_high
    return out, FrameMeta((h, w), (ch, cw), (nw / w, nh / h), (-float(left), -float(top)))


class _Taps(NamedTuple):
    span: slice  # the source pixels read
    low: Any  # per output, its low and high source index in ``span``
    high: Any
    w_low: Any  # their weights
    w_high: Any


@functools.lru_cache(maxsize=64)
def _taps(size_in: int, size_out: int, start: int, count: int, device: Any) -> _Taps:
    """What outputs ``start .. start + count - 1`` of a bilinear resize from ``size_in`` to ``size_out``
    pixels read (half-pixel centres, edges clamped, no antialiasing, as ``resize``). Made once per
    frame size and device, so a stream copies nothing to the device per batch."""
    import torch

    scale = np.float32(size_in) / np.float32(size_out)  # in float32, as torch's bilinear kernels
    pos = np.maximum(scale * (np.arange(start, start + count, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
    low = np.floor(pos).astype(np.int64)
    high = np.minimum(low + 1, size_in - 1)
    span = slice(int(low[0]), int(high[-1]) + 1)
    w_high = (pos - low).astype(np.float32)
    tensors = (low - span.start, high - span.start, np.float32(1) - w_high, w_high)
    return _Taps(span, *(torch.as_tensor(a, device=device) for a in tensors))


_PLACE = {"letterbox": _letterbox, "stretch": _stretch, "crop": _crop}


def _normalize(x, prep: Prep):
    if prep.scale != 1:
        x = x * prep.scale
    if any(prep.mean) or any(s != 1 for s in prep.std):
        x = normalize(x, tuple(map(float, prep.mean)), tuple(map(float, prep.std)))
    return x


def feed_of(x, numpy_in: bool) -> Any:
    """The prepared tensor in the caller's family: numpy when the frames were numpy."""
    return x.numpy() if numpy_in else x


class PreparedTask(Task):
    """A task whose frames ``self.prep`` (a ``Prep`` its constructor sets) turns into its one image input."""

    prep: Prep

    def prepare(self, frames: Any) -> tuple[dict[str, Any], list[FrameMeta]]:
        """Frames -> the feed and their metas.

        Raises:
            UsageError: resize "none" gives an input of another size than the engine's fixed one.
        """
        x, metas, numpy_in = prepare_frames(frames, self.prep, self.input_spec.dtype, self.device, self.fixed_dims())
        return {self.input_name: feed_of(x, numpy_in)}, metas
