"""The Task contract: frames in, a batched feed out; engine outputs in, one result per frame out.

A task owns an engine and the two halves around it::

    feed, metas = task.prepare(frames)      # frames: RGB HWC uint8, numpy or torch (any device)
    outputs = task.infer(feed)              # engine.infer, split/padded to the engine's batch range
    results = task.finish(outputs, metas)   # one Result per frame, in source-frame pixels

``prepare`` and ``finish`` never touch the engine, so a pipeline can run them on other threads
than ``infer``. Numpy frames give a numpy feed (the engine's outputs are numpy); torch frames
give a torch feed on the frames' device (preprocessing runs there). ``device="cuda"`` moves numpy
frames to the GPU first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from trtflow.errors import InputDtypeError, InputShapeError, UsageError

log = logging.getLogger(__name__)

RESIZE_MODES = ("letterbox", "stretch", "crop", "none")


@dataclass(frozen=True)
class FrameMeta:
    """Where one source frame went in the network input.

    A source pixel (x, y) lands at ``(x * scale[0] + pad[0], y * scale[1] + pad[1])`` of the
    network input; ``to_source`` inverts it.

    Attributes:
        size: (height, width) of the source frame.
        input_size: (height, width) of the network input the frame was placed in.
        scale: (sx, sy) network pixels per source pixel (equal for letterbox).
        pad: (left, top) offset in network pixels (negative for a center crop).
    """

    size: tuple[int, int]
    input_size: tuple[int, int]
    scale: tuple[float, float] = (1.0, 1.0)
    pad: tuple[float, float] = (0.0, 0.0)

    def to_source(self, points: np.ndarray, clip: bool = True) -> np.ndarray:
        """Map ``(..., 2k)`` interleaved x, y coordinates (boxes x1y1x2y2, landmarks) to source pixels."""
        pts = np.asarray(points, dtype=np.float32).copy()
        pts[..., 0::2] = (pts[..., 0::2] - self.pad[0]) / self.scale[0]
        pts[..., 1::2] = (pts[..., 1::2] - self.pad[1]) / self.scale[1]
        if clip:
            h, w = self.size
            pts[..., 0::2] = pts[..., 0::2].clip(0, w)
            pts[..., 1::2] = pts[..., 1::2].clip(0, h)
        return pts

    def to_dict(self) -> dict:
        return {"size": list(self.size), "input_size": list(self.input_size), "scale": list(self.scale),
                "pad": list(self.pad)}


@dataclass(frozen=True)
class BatchDims:
    """The engine input a task feeds: its name and (C, H, W); H or W is None where the task
    sizes the input per batch (``resize="none"``: the frames' own size)."""

    name: str
    chw: tuple[Optional[int], Optional[int], Optional[int]]
    dtype: str = "float32"


class Task(ABC):
    """Base of every task. Subclasses set ``name`` and implement ``prepare`` and ``finish``.

    Attributes:
        name: "face", "detect", "sr", "classify", "segment" or "custom".
        engine: the trtflow ``Engine`` it runs.
        input_name: the engine input the frames go to.
        labels: class names by class id (given as a list, or a text file with one name per line), or None.
    """

    name = "base"

    def __init__(self, engine: Any, *, input_name: Optional[str] = None, labels: Optional[Sequence[str]] = None,
                 device: Optional[str] = None):
        self.engine = engine
        self.input_name = input_name or _image_input(engine)
        self.labels = read_labels(labels)  # a list, or a text file with one name per line
        self.device = check_device(device)

    # -- the contract -----------------------------------------------------------------------
    @property
    def batch_dims(self) -> BatchDims:
        spec = self.input_spec
        dims = tuple(d if isinstance(d, int) else None for d in spec.shape[1:])
        prep = getattr(self, "prep", None)
        if prep is not None and prep.mode != "none" and prep.size is not None:
            dims = (dims[0], *prep.size)
        return BatchDims(self.input_name, dims, spec.dtype)

    @abstractmethod
    def prepare(self, frames: Any) -> tuple[dict[str, Any], list[FrameMeta]]:
        """RGB HWC uint8 frames -> (feed keyed by engine input name, one FrameMeta per frame)."""

    @abstractmethod
    def finish(self, outputs: Mapping[str, Any], metas: Sequence[FrameMeta]) -> list:
        """Engine outputs of one prepared batch -> one Result per frame, in source pixels."""

    def infer(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        """``engine.infer(feed)``, run in chunks when the feed's batch is above the engine's
        largest batch, and padded up when the engine has a fixed batch larger than the feed."""
        first = feed[self.input_name]
        n = int(first.shape[0])
        lo, hi = self.batch_range
        if lo <= n <= hi:
            return self.engine.infer(feed)
        parts = []
        for start in range(0, n, hi):
            chunk = {k: v[start:start + hi] for k, v in feed.items()}
            m = int(chunk[self.input_name].shape[0])
            if m < lo:
                chunk = {k: _pad_batch(v, lo) for k, v in chunk.items()}
            out = self.engine.infer(chunk)
            parts.append({k: v[:m] for k, v in out.items()})
        return {k: _concat([p[k] for p in parts]) for k in parts[0]}

    def predict(self, frames: Any) -> list:
        """prepare -> infer -> finish in one call."""
        feed, metas = self.prepare(frames)
        return self.finish(self.infer(feed), metas)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} engine={self.engine.name} input={self.input_name}>"

    # -- helpers for subclasses ---------------------------------------------------------------
    @property
    def input_spec(self):
        for spec in self.engine.inputs:
            if spec.name == self.input_name:
                return spec
        raise UsageError(f"the engine has no input '{self.input_name}'; its inputs are "
                         f"{[s.name for s in self.engine.inputs]}")

    @property
    def batch_range(self) -> tuple[int, int]:
        """Smallest and largest batch the engine takes (fixed batch: both equal)."""
        spec = self.input_spec
        if spec.bounds is not None:
            return int(spec.bounds.min[0]), int(spec.bounds.max[0])
        if isinstance(spec.shape[0], int):
            return spec.shape[0], spec.shape[0]
        return 1, 1 << 30

    def fixed_size(self) -> Optional[tuple[int, int]]:
        """The engine's static (H, W) when both are fixed, else None."""
        h, w = self.fixed_dims()
        return (h, w) if h is not None and w is not None else None

    def fixed_dims(self) -> tuple[Optional[int], Optional[int]]:
        """The engine's (H, W), each its static size or None where it takes any."""
        return tuple(d if isinstance(d, int) else None for d in self.input_spec.shape[-2:])

    def label(self, cls: int) -> Optional[str]:
        if self.labels is not None and 0 <= cls < len(self.labels):
            return self.labels[cls]
        return None


def check_device(device: Any) -> Any:
    """``device`` (a torch device name for preprocessing, or None) when tensors can be made there.

    Raises:
        UsageError: not a torch device, or one this machine does not have (CUDA without a GPU).
    """
    if device is None or str(device) == "cpu":
        return device
    from trtflow.deps import require

    torch = require("torch", "preprocessing on a device")
    try:
        torch.empty(0, device=torch.device(device))
    except (RuntimeError, AssertionError, TypeError) as exc:  # torch: unknown name, no CUDA, bad ordinal
        raise UsageError(f"device '{device}' cannot run preprocessing here ({str(exc).splitlines()[0]}); give an "
                         "available one (cpu, cuda, cuda:N), or drop it (--device) to preprocess where the frames "
                         "are") from None
    return device


def whole_option(name: str, value: Any, minimum: Optional[int], what: str) -> int:
    """A task option that counts something (pixels, classes): ``value`` as an int when it is a whole
    number (2, 2.0, "2") of at least ``minimum`` (None: any).

    Raises:
        UsageError: a fraction, a non-number, or below ``minimum``.
    """
    try:
        whole = float(value).is_integer() and not isinstance(value, (bool, np.bool_))
    except (TypeError, ValueError):
        whole = False
    if not whole or minimum is not None and int(float(value)) < minimum:
        least = f", at least {minimum}" if minimum is not None else ""
        raise UsageError(f"{name} {value!r}: give {what} as a whole number{least}")
    return int(float(value))


def number_option(name: str, value: Any, what: str, low: Optional[float] = None,
                  high: Optional[float] = None) -> float:
    """A task option that is a number (a threshold): ``value`` as a float, not NaN, within [low, high].

    Raises:
        UsageError: a non-number, NaN, or outside the range.
    """
    try:
        number = float(value) if not isinstance(value, (bool, np.bool_)) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number) or low is not None and number < low or high is not None and number > high:
        span = (f" in [{low}, {high}]" if low is not None and high is not None else
                f" of at least {low}" if low is not None else f" of at most {high}" if high is not None else "")
        raise UsageError(f"{name} {value!r}: give {what} as a number{span}")
    return number


def _image_input(engine: Any) -> str:
    """The engine's image input: the first rank-4 input (the only input for most models)."""
    for spec in engine.inputs:
        if spec.rank == 4:
            return spec.name
    raise UsageError(f"no image input (rank 4, N x C x H x W) among the engine's inputs "
                     f"{[(s.name, s.shape) for s in engine.inputs]}; name it with input_name=")


def frames_list(frames: Any) -> list:
    """A list of HWC frames from a list, an (N, H, W, C) array/tensor or one (H, W, C) frame."""
    if isinstance(frames, (list, tuple)):
        out = list(frames)
    elif hasattr(frames, "shape") and len(frames.shape) == 4:
        out = [frames[i] for i in range(frames.shape[0])]
    elif hasattr(frames, "shape") and len(frames.shape) == 3:
        out = [frames]
    else:
        raise UsageError(f"frames must be a list of HxWx3 uint8 images or an N x H x W x 3 array, got {type(frames).__name__}")
    if not out:
        raise UsageError("prepare() got no frames")
    for i, f in enumerate(out):
        if not hasattr(f, "shape") or not hasattr(f, "dtype"):
            raise UsageError(f"frame {i} is a {type(f).__name__}; a frame is a numpy array or a torch tensor "
                             "(H x W x 3, RGB uint8). trtflow.Predictor.predict also reads paths and PIL images")
        check_frame(f, f"frame {i}")
    return out


def check_frame(frame: Any, name: str = "the frame") -> None:
    """Refuse an array or tensor that is not a non-empty H x W x 3 uint8 frame.

    Raises:
        InputShapeError: not H x W x 3, or no pixels.
        InputDtypeError: not uint8.
    """
    shape = tuple(frame.shape)
    if len(shape) != 3 or shape[-1] != 3:
        raise InputShapeError(f"{name} has shape {shape}; expected H x W x 3 (RGB, uint8)")
    if shape[0] < 1 or shape[1] < 1:
        raise InputShapeError(f"{name} has shape {shape}: no pixels; give frames of at least 1 x 1")
    dtype = str(frame.dtype).replace("torch.", "")
    if dtype != "uint8":
        raise InputDtypeError(f"{name} has dtype {dtype}; tasks take RGB uint8 frames (0..255). Convert "
                              "it first (0..1 floats: scale by 255 and cast to uint8), or pass it to "
                              "trtflow.Predictor.predict, which converts 16-bit, float (0..1) and grey images")


def _pad_batch(x: Any, n: int) -> Any:
    """Repeat the last item so the batch has ``n`` items."""
    m = int(x.shape[0])
    if isinstance(x, np.ndarray):
        return np.concatenate([x, np.repeat(x[-1:], n - m, axis=0)])
    import torch

    return torch.cat([x, x[-1:].expand(n - m, *x.shape[1:])])


def _concat(parts: list) -> Any:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import torch

    return torch.cat(parts)


def read_labels(labels: Any) -> Optional[list]:
    """Class names from a list (or another sequence: a tuple, a numpy array), or a UTF-8 text file
    with one name per line (blank lines skipped)."""
    if labels is None:
        return None
    if not isinstance(labels, (str, bytes, os.PathLike)):
        try:
            return list(labels)
        except TypeError:
            raise UsageError(f"labels {labels!r}: give a list of class names or a text file with one per line") from None
    path = Path(os.fsdecode(labels))
    if not path.is_file():
        raise UsageError(f"labels file not found: {path}; give a text file with one class name per line")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"labels file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                         "save it as UTF-8") from None
    return [line.strip() for line in text.splitlines() if line.strip()]
