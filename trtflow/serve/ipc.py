"""What front-end processes and the engine process of ``trtflow serve --workers`` share: framed
messages over a Unix socket and shared-memory arenas of fixed-size request slots.

Messages are tuples; the messages one side sends in one turn of its event loop travel as one
frame (a pickled list behind an 8-byte length): under load one ``recv`` and one ``pickle.loads``
carry a whole batch of requests or answers. Small except for the inline fallback:

| from      | message                                         | answer                                  |
|-----------|-------------------------------------------------|-----------------------------------------|
| front end | ``("hello", arena_name, slot_bytes, slots)``     | none                                    |
| front end | ``("infer", id, model, slot, [(name, offset, shape, dtype), ...])`` | ``("ok", id, pack(outputs))`` or ``("err", id, status, message)`` |
| front end | ``("inline", id, model, {name: array})``         | the same                                |
| front end | ``("stats", id)``                               | ``("stats", id, {model: snapshot})``    |

A request's tensors are copied once into a slot of its front end's arena (offset within the slot,
64-byte aligned); the engine process reads them in place (numpy views). Outputs come back inline
(classification and detection outputs are small). The slot is freed when the answer arrives.
Tensors that do not fit a slot (or no free slot, or BYTES tensors) travel inline, pickled.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import math
import os
import pickle
from multiprocessing import shared_memory
from typing import Callable, Iterable

import numpy as np

from trtflow.errors import EngineError
from trtflow.feeds import array_bytes

log = logging.getLogger(__name__)

ALIGN = 64
HEADER = 8  # bytes of a frame's length: the messages of one turn can pass 4 GiB together


def aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class Channel(asyncio.Protocol):
    """One Unix-socket connection that carries framed, pickled lists of messages both ways.

    Args:
        on_message: called with each message, in order, on the event loop.
        on_close: called once when the connection is lost.
    """

    def __init__(self, on_message: Callable, on_close: Callable | None = None):
        self.on_message, self.on_close = on_message, on_close
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._out: list = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, end = 0, len(buf)
        view = memoryview(buf)
        try:
            while end - pos >= HEADER:
                n = int.from_bytes(view[pos:pos + HEADER], "little")
                if end - pos - HEADER < n:
                    break
                msgs = pickle.loads(view[pos + HEADER:pos + HEADER + n])
                pos += HEADER + n
                for msg in msgs:
                    self.on_message(msg)
        finally:
            view.release()
            if pos:
                del buf[:pos]

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self.on_close is not None:
            self.on_close()

    def send(self, msg) -> bool:
        """Queue one message; False when the connection is gone.

        Messages queued in one turn of the event loop leave as one frame in one write at its
        end: under load one system call, one wake-up of the other process and one pickle carry
        many of them.
        """
        if self.transport is None or self.transport.is_closing():
            return False
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(msg)
        return True

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is None or self.transport.is_closing():
            return
        try:
            payload = pickle.dumps(out, protocol=5)
        except Exception:  # noqa: BLE001 - one message that cannot be pickled: send the others
            log.exception("a message could not be pickled; it is dropped")
            out = [m for m in out if _picklable(m)]
            payload = pickle.dumps(out, protocol=5)
        self.transport.writelines((len(payload).to_bytes(HEADER, "little"), payload))


def _picklable(msg) -> bool:
    try:
        pickle.dumps(msg, protocol=5)
    except Exception:  # noqa: BLE001
        return False
    return True


def pack(outputs: dict[str, np.ndarray]) -> list[tuple]:
    """Outputs as (name, shape, dtype, bytes): unpickled several times faster than numpy arrays.
    Arrays of other dtypes (object, structured) are pickled here, shape None, so an output that
    cannot be pickled fails its own request instead of the frame it would travel in.

    Raises:
        EngineError: an output cannot be pickled.
    """
    packed = []
    for name, arr in outputs.items():
        if type(arr) is not np.ndarray:
            arr = np.asarray(arr)
        code = _CODES.get(arr.dtype)
        if code is None:
            code = _CODES[arr.dtype] = arr.dtype.str if arr.dtype.kind in "biufc" else ""
        if code:
            packed.append((name, arr.shape, code, arr.tobytes()))
        else:
            try:
                packed.append((name, None, None, pickle.dumps(arr, protocol=5)))
            except Exception as exc:  # noqa: BLE001 - objects pickle can't take: this request's error
                raise EngineError(f"output '{name}' cannot be sent to the front end: {type(exc).__name__}: {exc}") from exc
    return packed


_CODES: dict = {}  # dtype -> its str for ``pack`` ("" for dtypes pickled whole): dtype.str is slow


def unpack(packed: list[tuple]) -> dict[str, np.ndarray]:
    """``pack``'s inverse (read-only arrays over the received bytes)."""
    return {name: np.frombuffer(raw, dtype).reshape(shape) if shape is not None else pickle.loads(raw)
            for name, shape, dtype, raw in packed}


def slot_bytes(models: Iterable, rows: int = 1, default: int = 1 << 20, cap: int = 64 << 20) -> int:
    """Slot size for requests of ``rows`` rows of any of ``models`` (``ModelInfo``): the largest
    model's inputs, each 64-byte aligned. Dims unknown before a request (dynamic non-batch dims
    without bounds) make that model count ``default`` bytes. At most ``cap``."""
    best = 0
    for model in models:
        total = 0
        for spec in model.inputs:
            dims = list(spec.shape)
            if model.batched and dims:
                dims = dims[1:]
                n = rows
            else:
                n = 1
            if spec.bounds is not None:
                hi = list(spec.bounds.max)[1 if model.batched else 0:]
                dims = [d if isinstance(d, int) else h for d, h in zip(dims, hi)]
            if spec.dtype in ("string", "object") or not all(isinstance(d, int) for d in dims):
                total = default
                break
            total += aligned(array_bytes([n, *dims], spec.dtype))
        best = max(best, total)
    return min(aligned(best or default), cap)


def shm_room() -> int | None:
    """Free bytes of /dev/shm (where POSIX shared memory lives on Linux), None when unknown."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class Arena:
    """A shared-memory block of ``slots`` slots of ``slot_bytes`` each.

    The serving parent creates one per front end (``create``) and unlinks it at exit; the front
    end and the engine process attach by name. ``array`` is a uint8 view of the whole block.
    """

    def __init__(self, shm: shared_memory.SharedMemory, slot_bytes: int, slots: int, owner: bool = False):
        self.shm, self.slot_bytes, self.slots, self.owner = shm, slot_bytes, slots, owner
        self.name = shm.name
        self.array = np.frombuffer(shm.buf, np.uint8, count=slot_bytes * slots)
        self._dtypes: dict[str, np.dtype] = {}
        self.free = collections.deque(range(slots))  # first freed, first reused: see ``take``

    @classmethod
    def create(cls, slot_bytes: int, slots: int) -> "Arena":
        return cls(shared_memory.SharedMemory(create=True, size=max(1, slot_bytes * slots)), slot_bytes, slots, True)

    @classmethod
    def attach(cls, name: str, slot_bytes: int, slots: int) -> "Arena":
        return cls(shared_memory.SharedMemory(name=name), slot_bytes, slots)

    def take(self) -> int | None:
        """A free slot, or None when all are in use.

        Slots are reused in the order they were freed (answers come back in batch order), so
        requests arriving one after another mostly get consecutive slots: the engine process
        copies such runs as one block (``trtflow.serve.batcher.runs``)."""
        return self.free.popleft() if self.free else None

    def give(self, slot: int) -> None:
        self.free.append(slot)

    def put(self, slot: int, inputs: dict[str, np.ndarray]) -> list[tuple]:
        """Copy each input into ``slot``; returns their (name, offset, shape, dtype) for the message."""
        base, off, specs = slot * self.slot_bytes, 0, []
        for name, arr in inputs.items():
            n = arr.nbytes
            dst = self.array[base + off:base + off + n].view(arr.dtype).reshape(arr.shape)
            np.copyto(dst, arr, casting="no")
            specs.append((name, off, arr.shape, arr.dtype.str))
            off += aligned(n)
        return specs

    def reserve(self, layout: list[tuple]) -> tuple[list[memoryview], int, list[tuple]] | None:
        """A free slot laid out for inputs of ``layout`` ((name, dtype, shape)) as ``put`` lays
        them out: memoryviews to write their bytes to, the slot, and the specs for the message.
        None when they do not fit a slot or no slot is free."""
        if not self.free:
            return None
        sizes = [math.prod(shape) * dtype.itemsize for _, dtype, shape in layout]
        if sum(map(aligned, sizes)) > self.slot_bytes:
            return None
        slot = self.free.popleft()
        base, off, views, specs = slot * self.slot_bytes, 0, [], []
        for (name, dtype, shape), size in zip(layout, sizes):
            views.append(memoryview(self.array[base + off:base + off + size]))
            specs.append((name, off, shape, dtype.str))
            off += aligned(size)
        return views, slot, specs

    def fits(self, inputs: dict[str, np.ndarray]) -> bool:
        """True when ``inputs`` fit one slot and are fixed-size numeric tensors."""
        total = 0
        for arr in inputs.values():
            if arr.dtype.kind not in "biufc":  # "b": bool
                return False
            total += aligned(arr.nbytes)
        return total <= self.slot_bytes

    def views(self, slot: int, specs: list[tuple]) -> dict[str, np.ndarray]:
        """The inputs of ``slot`` as numpy views (no copy)."""
        base, array, dtypes = slot * self.slot_bytes, self.array, self._dtypes
        out = {}
        for name, off, shape, code in specs:
            dtype = dtypes.get(code)
            if dtype is None:
                dtype = dtypes[code] = np.dtype(code)
            out[name] = np.ndarray(shape, dtype, array, base + off)
        return out

    def close(self) -> None:
        """Drop the views and detach (and unlink, for the creator)."""
        self.array = None
        try:
            self.shm.close()
        except BufferError:  # views held by reference cycles (exception tracebacks): collect them
            gc.collect()
            try:
                self.shm.close()
            except BufferError:  # still in use: the mapping goes with the process
                log.debug("shared memory %s still has views; left mapped", self.name)
                self.shm.close = lambda: None  # keep SharedMemory.__del__ quiet
        if self.owner:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass
