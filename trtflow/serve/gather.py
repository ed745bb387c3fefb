"""Batch assembly on CUDA engines in the engine process of ``trtflow serve --workers``.

Why: the in-process batcher merges a batch with ``np.concatenate`` (one host copy of every
request), then the engine copies the merged batch again into its pinned staging buffer before
the upload. In the engine process the requests already sit in shared-memory slots, and those
arenas are page-locked once (``cudaHostRegister``), so each request's rows go straight from its
slot into one device tensor (an async H2D copy per request, no host copy at all), the engine
runs on that device tensor (torch in, torch out), and the batch outputs come back with one D2H
copy into a reusable pinned buffer.

CPU engines keep ``trtflow.serve.batcher._execute`` (``np.concatenate`` of the slot views).
torch is imported only here and only when a CUDA engine is served.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time

import numpy as np

from trtflow.serve.batcher import PIPELINE_DEPTH, runs, split

log = logging.getLogger(__name__)

PORTABLE = 1  # cudaHostRegisterPortable: page-locked for every CUDA context (instances on several GPUs)


def cuda_device(engine):
    """The engine's CUDA device (a ``torch.device``), or None for engines on the CPU."""
    device = getattr(engine, "device", None)
    return device if getattr(device, "type", None) == "cuda" else None


class Pinned:
    """Page-locks host memory blocks for the CUDA driver and unlocks them: the only place that
    calls ``cudaHostRegister`` / ``cudaHostUnregister``. A block that cannot be registered is
    still used (pageable copies: slower, still correct) and logged once."""

    def __init__(self):
        self._ptrs: dict[str, int] = {}
        self._lock = threading.Lock()

    def register(self, key: str, buffer) -> bool:
        import torch

        c = ctypes.c_char.from_buffer(buffer)
        ptr = ctypes.addressof(c)
        del c  # no export left behind: the shared memory can still be closed later
        err = torch.cuda.cudart().cudaHostRegister(ptr, len(buffer), PORTABLE)
        if int(err) != 0:
            log.warning("cudaHostRegister of %s (%d bytes) failed with %s; its copies stay pageable", key,
                        len(buffer), err)
            return False
        with self._lock:
            self._ptrs[key] = ptr
        return True

    def unregister(self, key: str) -> None:
        with self._lock:
            ptr = self._ptrs.pop(key, None)
        if ptr is not None:
            import torch

            torch.cuda.cudart().cudaHostUnregister(ptr)

    def close(self) -> None:
        for key in list(self._ptrs):
            self.unregister(key)


class CudaGather:
    """``execute`` for the ``Batcher`` of a model whose instances run on CUDA devices, pipelined:
    ``launch`` enqueues a batch (gather H2D, the engine, D2H into pinned buffers, an event) on the
    instance's stream and returns; ``finish`` waits for the event and splits the outputs. While
    the device runs batch i, the instance's thread enqueues batch i+1 and a second thread answers
    batch i-1. Stream order keeps the engine's static buffers (CUDA graphs) safe; each in-flight
    batch downloads into its own pinned buffers (a ``Staging`` per instance and pipeline position).
    """

    def __init__(self):
        self._streams: dict[int, object] = {}
        self._staging: dict[tuple, object] = {}
        self._turn: dict[int, int] = {}

    def launch(self, engine, batch: list, batched: bool) -> tuple:
        """Enqueue one batch; returns what ``finish`` takes. The batcher keeps at most
        ``PIPELINE_DEPTH`` batches of one instance between ``launch`` and the end of ``finish``."""
        import torch

        device = cuda_device(engine)
        key = id(engine)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = torch.cuda.Stream(device)
        turn = self._turn[key] = (self._turn.get(key, -1) + 1) % PIPELINE_DEPTH
        staging = self._staging.get((key, turn))
        if staging is None:  # once per instance and pipeline position
            from trtflow.backends.staging import Staging

            staging = self._staging[key, turn] = Staging(device, stream)
        rows = [item.rows for item in batch]
        t0 = time.perf_counter()
        with torch.cuda.device(device), torch.cuda.stream(stream):
            feed = self._gather([item.feed for item in batch], rows, device, batched)
            t1 = time.perf_counter()
            out = engine.infer(feed)
            host = {name: staging.download(name, value) for name, value in out.items()}
            landed = torch.cuda.Event(blocking=True)  # finish sleeps on it instead of spinning a core
            landed.record(stream)
        return host, landed, rows if batched else len(batch), t0, t1

    def finish(self, pending: tuple) -> tuple[list[dict], tuple[float, float, float]]:
        """Wait for a launched batch and split it per request (host copies: the pinned buffers
        serve a later batch)."""
        host, landed, rows, t0, t1 = pending
        landed.synchronize()
        t2 = time.perf_counter()
        out = {name: t.numpy().copy() for name, t in host.items()}
        results = split(out, rows) if isinstance(rows, list) else [out] * rows
        t3 = time.perf_counter()
        return results, ((t1 - t0) * 1e6, (t2 - t1) * 1e6, (t3 - t2) * 1e6)

    @staticmethod
    def _gather(feeds: list[dict], rows: list[int], device, batched: bool) -> dict:
        import torch

        merged = {}
        for name, first in feeds[0].items():
            if not batched:
                src = torch.from_numpy(_writable(first))
                merged[name] = torch.empty(src.shape, dtype=src.dtype, device=device).copy_(src, non_blocking=True)
                continue
            # consecutive slots: one copy
            parts = [torch.from_numpy(_writable(part)) for part in runs([feed[name] for feed in feeds])]
            dst = torch.empty((sum(rows),) + first.shape[1:], dtype=parts[0].dtype, device=device)
            start = 0
            for src in parts:
                n = src.shape[0]
                dst[start:start + n].copy_(src, non_blocking=True)
                start += n
            merged[name] = dst
        return merged


def _writable(arr: np.ndarray) -> np.ndarray:
    """torch.from_numpy warns on read-only arrays (inline requests unpickled from bytes)."""
    return arr if arr.flags.writeable else arr.copy()


def executors(models: list) -> dict:
    """``{model name: execute}`` for the models whose first instance runs on CUDA."""
    found = {}
    for model in models:
        if cuda_device(model.engines[0]) is not None:
            found[model.name] = CudaGather()
    return found
