"""One lane per engine instance of a video run: the task (and its engine), the device frames go
to, a CUDA stream for upload and preprocessing, one for inference, pinned host buffers, and
per-worker streams for post-processing. Every stream is a non-blocking torch stream, so inference
never queues behind another stage's work (nor behind the legacy default stream, which other
threads may use). One GPU: one lane. ``--gpus 0,1``: one lane per GPU, and the pipeline sends each
batch to the least-loaded lane (``trtflow.backends.devices.LeastLoaded``).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

import numpy as np


class Lane:
    """A task and the device state that feeds it.

    Args:
        index: the lane's number (thread names, messages).
        task: a task (``prepare``, ``infer``, ``finish``, ``engine``).
        device: where frames go before preprocessing ("cuda:1", "cpu"); None: the task's device,
            else the engine's GPU when it runs on one, else the frames stay where they are.
        batch: frames per batch (size of the pinned buffers).
    """

    def __init__(self, index: int, task: Any, device: Any = None, batch: int = 8):
        self.index = index
        self.task = task
        self.batch = batch
        self.device = _device_of(device or getattr(task, "device", None) or _engine_gpu(task))
        self._pinned: dict = {}
        self._stream = None
        self._infer_stream = None
        self._post_streams: dict = {}
        self._lock = threading.Lock()

    @property
    def cuda(self) -> bool:
        return self.device is not None and self.device.type == "cuda"

    def upload(self, images: list) -> list:
        """numpy frames -> one pinned host batch -> the device (non-blocking, then synced)."""
        import torch

        if not isinstance(images[0], np.ndarray):
            return [img.to(self.device) for img in images]
        n, shape = len(images), images[0].shape
        buf = self._pinned.get(shape)
        if buf is None or buf.shape[0] < n:
            buf = torch.empty((max(n, self.batch), *shape), dtype=torch.uint8, pin_memory=self.cuda)
            self._pinned[shape] = buf
        np.stack(images, out=buf.numpy()[:n])
        stream = self.side_stream()
        if stream is None:
            return list(buf[:n].to(self.device))
        with torch.cuda.stream(stream):
            dev = buf[:n].to(self.device, non_blocking=True)
        stream.synchronize()
        return list(dev)

    def side_stream(self):
        """The lane's stream for upload and preprocessing (None off CUDA)."""
        if not self.cuda:
            return None
        if self._stream is None:
            import torch

            self._stream = torch.cuda.Stream(device=self.device)
        return self._stream

    def infer_stream(self):
        """The lane's stream for inference (None off CUDA), at the highest priority: the GPU
        schedules its kernels ahead of preprocessing and post-processing kernels waiting beside them."""
        if not self.cuda:
            return None
        with self._lock:
            if self._infer_stream is None:
                import torch

                # torch maps a priority beyond the GPU's range to the nearest valid one: the highest
                self._infer_stream = torch.cuda.Stream(device=self.device, priority=-100)
            return self._infer_stream

    def post_stream(self, worker: int):
        """A stream of this lane's GPU for post-processing worker ``worker`` (None off CUDA): its
        copy to the host does not queue behind the next inference."""
        if not self.cuda:
            return None
        with self._lock:
            if worker not in self._post_streams:
                import torch

                self._post_streams[worker] = torch.cuda.Stream(device=self.device)
            return self._post_streams[worker]

    def on_stream(self, fn: Callable, *args: Any, stream: Any = False):
        """``fn(*args)`` on ``stream`` (default: the side stream), synced before returning."""
        stream = self.side_stream() if stream is False else stream
        if stream is None:
            return fn(*args)
        import torch

        with torch.cuda.stream(stream):
            result = fn(*args)
        stream.synchronize()
        return result

    def set_current(self) -> None:
        """Make the lane's GPU the calling thread's current CUDA device."""
        if self.cuda:
            import torch

            torch.cuda.set_device(self.device)


def _device_of(device: Any):
    if device is None or str(device) == "cpu":
        return None
    from trtflow.tasks.base import check_device

    check_device(device)
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:  # torch.cuda.set_device needs an index
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _engine_gpu(task: Any) -> Optional[str]:
    """The engine's CUDA device when it runs on one (frames then go there before preprocessing)."""
    device = getattr(getattr(task, "engine", None), "device", None)
    return str(device) if device is not None and str(device).startswith("cuda") else None
