"""Pinned host staging and stream bookkeeping for engines that run on a CUDA device.

Engine-agnostic (the torch and TensorRT engines share it): host arrays are copied into
reusable page-locked buffers, then to reusable device buffers asynchronously on one stream;
device outputs come back the same way. Buffers are keyed by (name, shape, dtype), so a warm
shape allocates nothing on the device or in pinned memory. An event per pinned buffer keeps
a new host write from overwriting a copy still in flight.

``PinnedRing`` is the same idea for pipelines: a ring of pinned slots that a producer fills
(a decoder, a camera) while earlier slots are still being uploaded.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import numpy as np

from trtflow.arrays import to_torch

log = logging.getLogger(__name__)

MAX_BUFFERS = 32  # staged (name, shape, dtype) entries kept per direction before the oldest is dropped


class _Slot:
    """One pinned host buffer, its device twin, and the event of its last copy."""

    __slots__ = ("host", "host_np", "device", "event")

    def __init__(self, shape: tuple[int, ...], dtype, device):
        import torch

        self.host = torch.empty(shape, dtype=dtype, pin_memory=True)
        self.host_np = self.host.numpy() if dtype != torch.bfloat16 else None
        self.device = torch.empty(shape, dtype=dtype, device=device) if device is not None else None
        self.event = torch.cuda.Event()
        self.event.record(torch.cuda.current_stream(device))


class Staging:
    """Reusable pinned buffers for host <-> device copies on one stream.

    Args:
        device: the CUDA device ("cuda:0", an index or a ``torch.device``).
        stream: the stream the copies run on (default: a new stream on ``device``).
    """

    def __init__(self, device: Any, stream: Any = None):
        import torch

        self.device = torch.device(device if not isinstance(device, int) else f"cuda:{device}")
        self.stream = stream if stream is not None else torch.cuda.Stream(self.device)
        self._up: OrderedDict[tuple, _Slot] = OrderedDict()
        self._down: OrderedDict[tuple, _Slot] = OrderedDict()

    def _slot(self, table: OrderedDict, key: tuple, shape, dtype, device) -> _Slot:
        slot = table.get(key)
        if slot is None:
            if len(table) >= MAX_BUFFERS:
                _, old = table.popitem(last=False)
                old.event.synchronize()
            slot = table[key] = _Slot(tuple(shape), dtype, device)
            log.debug("staging buffer %s %s %s", key[0], tuple(shape), dtype)
        return slot

    def upload(self, name: str, array: Any):
        """Copy a host array (numpy or CPU tensor) to a device tensor, asynchronously on ``stream``.

        Returns:
            A device tensor owned by this staging, overwritten by the next upload of the same
            (name, shape, dtype): run its consumers on ``stream`` so they come first.
        """
        src = to_torch(array)
        slot = self._slot(self._up, (name, src.shape, src.dtype), src.shape, src.dtype, self.device)
        slot.event.synchronize()  # the previous upload from this buffer has left it
        if slot.host_np is not None and isinstance(array, np.ndarray):
            np.copyto(slot.host_np, array, casting="no")
        else:
            slot.host.copy_(src)
        _copy_on(self.stream, slot.device, slot.host)
        slot.event.record(self.stream)
        return slot.device

    def download(self, name: str, tensor: Any):
        """Start an async copy of a device tensor into a pinned buffer on ``stream``.

        A bfloat16 tensor comes back as float32 (numpy has no bfloat16): it is converted on the
        device first, one allocation per call.

        Returns:
            The pinned host tensor; read it only after ``stream`` is synchronized
            (``finish`` does that and returns numpy copies).
        """
        import torch

        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        slot = self._slot(self._down, (name, tensor.shape, tensor.dtype), tensor.shape, tensor.dtype, None)
        slot.event.synchronize()
        _copy_on(self.stream, slot.host, tensor)
        slot.event.record(self.stream)
        return slot.host

    def finish(self, pinned: dict[str, Any]) -> dict[str, np.ndarray]:
        """Wait for the stream, then return numpy copies of downloaded pinned tensors (by name)."""
        self.stream.synchronize()
        return {name: t.numpy().copy() for name, t in pinned.items()}


class PinnedRing:
    """A ring of pinned host slots of one shape and dtype, each uploaded to its own device buffer.

    A producer writes slot ``i % n`` (``host(i)`` waits until that slot's last upload finished),
    then ``upload(i, stream)`` starts the host-to-device copy on ``stream`` and returns the device
    tensor. With ``n >= 2`` the upload of the next batch overlaps the compute of the current one.

    Args:
        shape: shape of one slot, e.g. ``(64, 480, 640, 3)``.
        dtype: a torch dtype.
        device: the CUDA device.
        n: number of slots.
    """

    def __init__(self, shape: tuple[int, ...], dtype: Any, device: Any, n: int = 3):
        import torch

        self.device = torch.device(device if not isinstance(device, int) else f"cuda:{device}")
        self.slots = [_Slot(tuple(shape), dtype, self.device) for _ in range(n)]
        self.consumed = [torch.cuda.Event() for _ in range(n)]

    def __len__(self) -> int:
        return len(self.slots)

    def host(self, i: int):
        """The pinned host tensor of slot ``i % n``, once its previous upload has completed."""
        slot = self.slots[i % len(self.slots)]
        slot.event.synchronize()
        return slot.host

    def upload(self, i: int, stream: Any):
        """Start the copy of slot ``i % n`` to its device buffer on ``stream``; return that buffer.

        The copy waits until the previous consumer of the device buffer (marked with
        ``release(i, consumer_stream)``) is done with it.
        """
        k = i % len(self.slots)
        slot = self.slots[k]
        stream.wait_event(self.consumed[k])
        _copy_on(stream, slot.device, slot.host)
        slot.event.record(stream)
        return slot.device

    def ready(self, i: int, stream: Any) -> None:
        """Make ``stream`` wait for slot ``i``'s upload before it reads the device buffer."""
        stream.wait_event(self.slots[i % len(self.slots)].event)

    def release(self, i: int, stream: Any) -> None:
        """Mark slot ``i``'s device buffer free once ``stream`` reaches this point."""
        self.consumed[i % len(self.slots)].record(stream)


def _copy_on(stream, dst, src) -> None:
    import torch

    with torch.cuda.stream(stream):
        dst.copy_(src, non_blocking=True)
