"""Framework-free logic of the BMF modules: batch frames through a task, emit them in order.

``BatchRunner`` collects frames with an opaque token each (BMF's VideoFrame, for its pts), runs
a batch when ``batch`` frames are waiting, and ``flush()`` runs the partial batch at the end of
the stream. Before results leave, the current CUDA stream of the outputs' device is synchronized
(once per batch, when an output is a CUDA tensor), so a consumer on another thread never reads a
tensor the GPU is still writing on that stream.

``EngineTask`` runs any engine with no task-specific processing: the image input is the
frame resized to that input's (H, W) as 0..1 RGB (optionally normalized; the 0..255 pixels on a
uint8 or wider integer input), every other input is fed a constant given in the options, each
input with its own shape (the published BMF TensorRT demo sets only the first input's shape; a
multi-input engine then runs with unset shapes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from trtflow.arrays import is_torch, to_numpy
from trtflow.errors import EngineError, InputShapeError, UsageError
from trtflow.tasks.base import FrameMeta, Task, check_frame, whole_option
from trtflow.tasks.prepare import Prep, check_raw_pixels, feed_of, prepare_frames
from trtflow.tasks.results import _copy

log = logging.getLogger(__name__)


@dataclass
class Emitted:
    """One frame leaving the runner: its token, the image to send on (drawn or upscaled; None
    to send the input frame unchanged) and the task's result."""

    token: Any
    image: Any
    result: Any


class BatchRunner:
    """Batch frames through a task.

    Args:
        task: a ``trtflow.tasks`` Task (``make_task(...)``) or an ``EngineTask``.
        batch: frames per engine call (the last batch of a stream may be smaller).
        draw: send ``result.draw(frame)`` downstream instead of the input frame.

    Attributes:
        eof: the end of the stream was seen.
        eof_sent: the EOF packets went out (set by the framework glue).
        batches, frames, syncs: counters (engine calls, frames run, stream synchronizations).
    """

    def __init__(self, task: Task, batch: int = 1, draw: bool = True):
        if batch < 1:
            raise UsageError(f"batch is {batch}; give at least 1 frame per batch")
        self.task = task
        self.batch = int(batch)
        self.draw = bool(draw)
        self.pending: list[tuple[Any, Any]] = []
        self.eof = False
        self.eof_sent = False
        self.batches = self.frames = self.syncs = 0

    def push(self, frame: Any, token: Any) -> list[Emitted]:
        """Queue one RGB HWC uint8 frame; returns the emitted frames when a batch ran.

        Raises:
            InputShapeError: the frame is not a non-empty H x W x 3 array or tensor.
            InputDtypeError: its pixels are not uint8.
            (The frames queued before stay queued.)
        """
        _check_frame(frame)
        self.pending.append((frame, token))
        if len(self.pending) >= self.batch:
            return self._run()
        return []

    def flush(self) -> list[Emitted]:
        """Run whatever is waiting (the partial batch at the end of a stream)."""
        return self._run() if self.pending else []

    def _run(self) -> list[Emitted]:
        items, self.pending = self.pending[: self.batch], self.pending[self.batch:]
        frames = [f for f, _ in items]
        feed, metas = self.task.prepare(frames)
        outputs = self.task.infer(feed)
        self._sync(outputs)
        results = self.task.finish(outputs, metas)
        self.batches += 1
        self.frames += len(items)
        out = [Emitted(tok, r.draw(f) if self.draw else None, r) for (f, tok), r in zip(items, results)]
        return out + (self._run() if len(self.pending) >= self.batch else [])

    def _sync(self, outputs: Mapping[str, Any]) -> None:
        for value in outputs.values():
            if is_torch(value) and value.device.type == "cuda":
                import torch

                torch.cuda.current_stream(value.device).synchronize()
                self.syncs += 1
                return


def _check_frame(frame: Any) -> None:
    if not hasattr(frame, "shape") or not hasattr(frame, "dtype"):
        raise InputShapeError(f"a frame is an H x W x 3 RGB uint8 array or tensor, got a {type(frame).__name__}")
    check_frame(frame)


@dataclass
class Tensors:
    """Raw engine outputs of one frame (``EngineTask``): name -> array."""

    outputs: dict

    def to_dict(self) -> dict:
        out = {}
        for name, value in self.outputs.items():
            arr = to_numpy(value)
            item = {"shape": list(arr.shape), "dtype": arr.dtype.name}
            if arr.size <= 64:
                item["values"] = arr.tolist()
            out[name] = item
        return {"outputs": out}

    def draw(self, frame: Any) -> np.ndarray:
        return _copy(frame)


class EngineTask(Task):
    """Any engine, fed frames as 0..1 RGB on its image input (0..255 on an integer one) and
    constants on the others.

    Args:
        engine: the loaded engine.
        input_shapes: input name -> full shape (batch first), one per input; dynamic inputs need
            one. The image input's batch entry is the largest batch.
        inputs: input name -> constant value for the non-image inputs, either one item (tiled over
            the batch) or a whole batch (sliced).
        image_input: the input fed with frames (default: the first rank-4 input).
        mean, std: per-channel normalization after scaling to 0..1 (float image inputs only).
    """

    name = "engine"

    def __init__(self, engine: Any, *, input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
                 inputs: Optional[Mapping[str, Any]] = None, image_input: Optional[str] = None,
                 mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
                 device: Optional[str] = None):
        super().__init__(engine, input_name=image_input, device=device)
        names = [s.name for s in engine.inputs]
        if self.input_name not in names:
            raise UsageError(f"image_input '{self.input_name}' is not an input of the engine; its inputs are {names}")
        if self.input_spec.rank != 4:
            raise UsageError(f"image_input '{self.input_name}' has rank {self.input_spec.rank}; frames go to a rank 4 "
                             f"(N, 3, H, W) input")
        shapes = {k: _dims(k, v) for k, v in (input_shapes or {}).items()}
        unknown = sorted(set(shapes) - set(names))
        if unknown:
            raise UsageError(f"input_shapes names {unknown}, which the engine does not have; its inputs are {names}")
        unknown = sorted(set(inputs or {}) - set(names))
        if unknown:
            raise UsageError(f"inputs names {unknown}, which the engine does not have; its inputs are {names}")
        if self.input_name in (inputs or {}):
            raise UsageError(f"inputs gives a value for '{self.input_name}', the image input the frames go to; "
                             f"drop it (or name another image_input)")
        self.shapes = {}
        for spec in engine.inputs:
            shape = shapes.get(spec.name) or (tuple(spec.shape) if not spec.is_dynamic else None)
            if shape is None:
                raise UsageError(f"input '{spec.name}' has dynamic shape {spec.describe_shape()}: give its shape in "
                                 f"input_shapes (every input needs one, not only the first)")
            if len(shape) != spec.rank:
                raise UsageError(f"input_shapes['{spec.name}'] is {shape}; the engine's input has rank {spec.rank}")
            self.shapes[spec.name] = shape
        self.constants = {}
        for spec in engine.inputs:
            if spec.name == self.input_name:
                continue
            if not inputs or spec.name not in inputs:
                raise UsageError(f"input '{spec.name}' is not the image input '{self.input_name}'; give its value "
                                 f"in inputs={{'{spec.name}': ...}} (shape {self.shapes[spec.name][1:]} per frame)")
            try:
                value = np.asarray(inputs[spec.name], dtype=spec.dtype)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"the value of input '{spec.name}' is not {spec.dtype} ({exc})") from None
            per_item = self.shapes[spec.name][1:]
            if value.shape != per_item and value.shape[1:] != per_item:  # fails here, not at the first batch
                raise UsageError(f"the value of input '{spec.name}' has shape {value.shape}; give one item of shape "
                                 f"{per_item} or a batch of them")
            self.constants[spec.name] = value
        self._batched: dict = {}  # (frames, device) -> the constants' feed entries
        _, c, h, w = self.shapes[self.input_name]
        if c != 3:
            raise UsageError(f"input '{self.input_name}' has shape {self.shapes[self.input_name]}; frames fill 3 "
                             f"channels (RGB): give an (N, 3, H, W) shape")
        dtype = self.input_spec.dtype
        if dtype not in _FLOATS and dtype not in _PIXEL_INTS:
            raise UsageError(f"input '{self.input_name}' is {dtype}, which cannot hold frames (0..1 floats or "
                             f"0..255 integers): give an image input of a float type, or uint8")
        # 0..1 on a float input; the 0..255 pixels on an integer one (0..1 floats would be cast to 0)
        scale = 1 / 255 if dtype in _FLOATS else 1.0
        self.prep = Prep("stretch", (h, w), scale=scale, mean=_per_channel("mean", mean),
                         std=_per_channel("std", std))  # Prep refuses std 0
        if dtype in _PIXEL_INTS:  # refused here, not at the first batch
            check_raw_pixels(self.prep, dtype, "drop mean/std (the model normalizes)")

    @property
    def max_batch(self) -> int:
        return self.shapes[self.input_name][0]

    def prepare(self, frames: Any) -> tuple[dict[str, Any], list[FrameMeta]]:
        x, metas, numpy_in = prepare_frames(frames, self.prep, self.input_spec.dtype, self.device)
        image = feed_of(x, numpy_in)
        key = (len(metas), None if numpy_in else image.device)
        constants = self._batched.get(key)
        if constants is None:  # once per batch size and device, not per batch
            constants = self._batched[key] = {name: self._batch_of(name, value, len(metas), None if numpy_in else image)
                                              for name, value in self.constants.items()}
        return {self.input_name: image, **constants}, metas

    def _batch_of(self, name: str, value: np.ndarray, n: int, like: Any) -> Any:
        """The constant of input ``name`` for a batch of ``n`` frames (numpy, or a tensor on ``like``'s device)."""
        per_item = self.shapes[name][1:]
        if value.shape == per_item:
            value = np.broadcast_to(value, (n, *per_item))
        elif value.shape[0] >= n:  # a batch of items (the constructor checked the shape)
            value = value[:n]
        else:
            raise UsageError(f"the value of input '{name}' has {value.shape[0]} items, too few for a batch of {n} "
                             f"frames; give one item of shape {per_item} (repeated) or at least {n}")
        value = np.ascontiguousarray(value)
        return value if like is None else _like(value, like)

    def finish(self, outputs: Mapping[str, Any], metas: Sequence[FrameMeta]) -> list[Tensors]:
        """Each frame's rows of the outputs (dim 0 is the batch).

        Raises:
            EngineError: an output whose dim 0 is not the batch (a scalar, a flattened tensor).
        """
        n = len(metas)
        for name, value in outputs.items():
            shape = tuple(getattr(value, "shape", ()))
            if not shape or shape[0] != n:
                raise EngineError(f"output '{name}' has shape {shape} for a batch of {n} frame{'s' * (n != 1)}: its dim 0 "
                                  "is not the batch, so it cannot be given per frame; export the model with the batch "
                                  "as the first dim of every output")
        return [Tensors({k: v[i] for k, v in outputs.items()}) for i in range(n)]


_FLOATS = ("float16", "float32", "float64", "bfloat16")
_PIXEL_INTS = ("uint8", "int16", "int32", "int64")  # types 0..255 fits in that torch has (no uint16/32/64 tensors)


def _dims(name: str, dims: Any) -> tuple[int, ...]:
    """``input_shapes[name]`` as a tuple of positive ints (8.0 is 8; 8.7 is refused, not truncated)."""
    try:
        if isinstance(dims, str):
            raise TypeError(dims)
        return tuple(whole_option(name, d, 1, "a size") for d in dims)
    except (TypeError, UsageError):  # not a list, or a size that is not a whole number >= 1 (inf, NaN, 8.7, True)
        raise UsageError(f"input_shapes['{name}'] is {dims!r}; give a list of positive ints, "
                         "e.g. [8, 3, 480, 640]") from None


def _per_channel(name: str, values: Any) -> tuple[float, ...]:
    """``mean`` or ``std``: three numbers (R, G, B)."""
    try:
        out = tuple(float(v) for v in values) if not isinstance(values, str) else ()
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3:
        raise UsageError(f"{name} is {values!r}; give three numbers, one per channel (R, G, B)")
    return out


def _like(value: np.ndarray, ref: Any) -> Any:
    import torch

    return torch.from_numpy(value).to(ref.device)
