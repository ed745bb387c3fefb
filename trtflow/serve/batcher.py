"""Dynamic batching (Triton's dynamic batcher): a bounded queue per model, batches formed when an
engine instance is free, one thread per instance so the event loop never waits on inference.

Each instance has a worker coroutine. When it is free it takes the oldest queued request, adds
queued requests with the same non-batch shapes up to ``max_batch`` rows, waits up to
``delay_us`` for more when the batch is neither full nor a preferred size, and runs the batch in
its own thread: concatenate, ``engine.infer``, split the outputs back per request (views). On
CUDA devices the engine process pipelines them: the next batch is copied to the device while the
current one computes.

Per request the event loop does little: no future and no timer of its own (``submit`` takes a
callback, called for the whole batch in one turn; one timer per batcher answers 503 to the requests
older than the timeout, oldest first).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from trtflow.errors import EngineError
from trtflow.serve.ipc import ALIGN
from trtflow.serve.metrics import ModelStats
from trtflow.serve.model import ServedModel
from trtflow.serve.protocol import ProtocolError

log = logging.getLogger(__name__)

PIPELINE_DEPTH = 3  # batches in flight per instance with a pipelined ``execute`` (launch / finish)


class _Item:
    """One queued request: its feed and rows, and ``done(result, exc)``, called once."""

    __slots__ = ("feed", "rows", "done", "queued", "settled")

    def __init__(self, feed: dict, rows: int, done):
        self.feed, self.rows, self.done = feed, rows, done
        self.queued = time.perf_counter()
        self.settled = False


class Batcher:
    """Queue and instances of one model. Create and use it inside a running event loop.

    Args:
        model: the served model (its engines are the instances).
        stats: where counters go (``/metrics``).
        execute: runs one batch in an instance's thread: ``execute(engine, items, batched) ->
            (results, (input_us, infer_us, output_us))``; default ``_execute`` (concatenate, infer,
            split). The engine process of ``--workers`` passes ``trtflow.serve.gather``'s for CUDA.
            An ``execute`` with ``launch(engine, items, batched) -> pending`` and ``finish(pending)
            -> (results, times)`` is pipelined: ``launch`` enqueues a batch on the device in the
            instance's thread, ``finish`` waits for it and splits it in a second thread, and the
            instance takes its next batch meanwhile (``PIPELINE_DEPTH`` batches in flight).
    """

    def __init__(self, model: ServedModel, stats: ModelStats | None = None, execute=None):
        self.model = model
        self._execute = execute or _execute
        self.config = model.config
        self.stats = stats or ModelStats()
        self._queues: dict[tuple, collections.deque] = {}
        self._queued = 0
        self._busy = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._live: collections.deque[_Item] = collections.deque()  # unsettled requests, oldest first
        self._sweep_at: asyncio.TimerHandle | None = None
        self._pools = [ThreadPoolExecutor(1, thread_name_prefix=f"trtflow-{model.name}-{i}")
                       for i in range(len(model.engines))]
        self._launch = getattr(self._execute, "launch", None)  # set: a pipelined execute
        self._finishers = [ThreadPoolExecutor(1, thread_name_prefix=f"trtflow-{model.name}-{i}-finish")
                           for i in range(len(model.engines))] if self._launch is not None else []
        self._workers = [asyncio.ensure_future(self._worker(i)) for i in range(len(model.engines))]

    @property
    def queued(self) -> int:
        return self._queued

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Queue one request and wait for its outputs.

        Raises:
            ProtocolError: 400 for inputs the model refuses, 503 when the queue is full, the
                server is draining or the request timed out; EngineError when the engine failed.
        """
        future = asyncio.get_running_loop().create_future()

        def done(result, exc) -> None:
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

        item = self.submit(inputs, done)
        future.add_done_callback(lambda f: _cancelled(item) if f.cancelled() else None)
        return await future

    def submit(self, inputs: dict[str, np.ndarray], done) -> _Item:
        """Queue one request; ``done(outputs, None)`` or ``done(None, error)`` is called once, on
        the event loop (the errors ``infer`` raises); requests of one batch are answered together.

        Raises:
            ProtocolError: at once, for what ``infer`` refuses before queueing (400, 503).
        """
        feed, rows, key = self.model.prepare(inputs)
        if self._closing:
            raise ProtocolError(f"model '{self.model.name}' is shutting down; retry on another server", 503)
        if self._queued >= self.config.max_queue:
            raise ProtocolError(
                f"model '{self.model.name}' has {self._queued} requests queued (the limit, --max-queue); retry later", 503)
        item = _Item(feed, rows, done)
        self._live.append(item)
        if self._sweep_at is None:  # one timer for all requests: they expire in the order they came
            self._sweep_at = asyncio.get_running_loop().call_later(self.config.timeout_s, self._sweep)
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = collections.deque()
        q.append(item)
        self._queued += 1
        self.stats.pending = self._queued
        self._idle.clear()
        self._wake.set()
        return item

    async def drain(self) -> None:
        """Refuse new requests, let queued and running ones finish, stop the instance threads."""
        self._closing = True
        while self._queued or self._busy:
            self._idle.clear()
            await self._idle.wait()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._sweep_at is not None:
            self._sweep_at.cancel()
            self._sweep_at = None
        for pool in self._pools + self._finishers:
            pool.shutdown(wait=True)

    def close(self) -> None:
        """Stop at once: cancel the workers, fail what is queued or running (503)."""
        self._closing = True
        for task in self._workers:
            task.cancel()
        if self._sweep_at is not None:
            self._sweep_at.cancel()
        for item in self._live:  # the timer that would have answered a running request is gone
            _settle(item, exc=ProtocolError(f"model '{self.model.name}' was stopped", 503))
        self._live.clear()
        self._queues.clear()
        self._queued = 0
        for pool in self._pools + self._finishers:
            pool.shutdown(wait=False)

    # -- internals -------------------------------------------------------------------------------
    def _sweep(self) -> None:
        """Answer 503 to the requests older than the timeout (queued or running), then wait for
        the next oldest one's deadline."""
        self._sweep_at = None
        live, timeout = self._live, self.config.timeout_s
        now = time.perf_counter()
        while live:
            head = live[0]
            if not head.settled:
                if now - head.queued < timeout:
                    break
                _settle(head, exc=ProtocolError(
                    f"request timeout expired: no answer from model '{self.model.name}' within {timeout:g} s", 503))
            live.popleft()
        if live:
            self._sweep_at = asyncio.get_running_loop().call_later(
                max(live[0].queued + timeout - now, 0.0), self._sweep)

    def _oldest(self) -> collections.deque | None:
        best = None
        for key, q in list(self._queues.items()):
            while q and q[0].settled:  # timed out while queued
                q.popleft()
                self._queued -= 1
            if not q:
                del self._queues[key]
            elif best is None or q[0].queued < best[0].queued:
                best = q
        self.stats.pending = self._queued
        return best

    def _take(self, q: collections.deque) -> list[_Item]:
        """The oldest requests up to max_batch rows; with preferred sizes, the longest run of them
        whose rows are a preferred size (Triton's rule), the rest stays queued in order."""
        limit = self.config.max_batch or 1
        batch, rows, sizes = [], 0, []
        while q and rows + q[0].rows <= limit:
            item = q.popleft()
            self._queued -= 1
            if item.settled:
                continue
            batch.append(item)
            rows += item.rows
            sizes.append(rows)
        if self.config.preferred and rows not in self.config.preferred:
            cut = max((i + 1 for i, n in enumerate(sizes) if n in self.config.preferred), default=len(batch))
            for item in reversed(batch[cut:]):
                q.appendleft(item)
                self._queued += 1
            batch = batch[:cut]
        if not q:
            self._queues = {k: v for k, v in self._queues.items() if v}
        self.stats.pending = self._queued
        return batch

    def _ready(self, q: collections.deque) -> bool:
        """Dispatch now: the batch is full or preferred, or the oldest request waited long enough."""
        limit = self.config.max_batch or 1
        rows = sum(item.rows for item in q)
        if rows >= limit or rows in self.config.preferred or (self.config.preferred and rows > self.config.preferred[-1]):
            return True
        return (time.perf_counter() - q[0].queued) * 1e6 >= self.config.delay_us

    async def _next(self) -> list[_Item]:
        """Wait for the next batch: the oldest queue's requests once it is ready to dispatch."""
        while True:
            q = self._oldest()
            if q is None:
                if not self._busy:
                    self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.config.delay_us and not self._ready(q):
                wait = self.config.delay_us / 1e6 - (time.perf_counter() - q[0].queued)
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), max(wait, 0))
                except asyncio.TimeoutError:
                    pass
                continue
            batch = self._take(q)
            if batch:
                return batch

    async def _worker(self, index: int) -> None:
        if self._launch is not None:
            return await self._pipelined(index)
        loop = asyncio.get_running_loop()
        engine, pool = self.model.engines[index], self._pools[index]
        while True:
            batch = await self._next()
            self._busy += 1
            start = time.perf_counter()
            try:
                results, times = await loop.run_in_executor(pool, self._execute, engine, batch, self.model.batched)
            except Exception as exc:  # EngineError and the like: every request of the batch fails
                self._finished(batch, start, exc=exc)
            else:
                self._finished(batch, start, results, times)

    async def _pipelined(self, index: int) -> None:
        """The worker of a pipelined ``execute``: enqueue a batch, then take the next while the
        device runs it (``PIPELINE_DEPTH`` batches in flight)."""
        loop = asyncio.get_running_loop()
        engine, pool = self.model.engines[index], self._pools[index]
        free = asyncio.Semaphore(PIPELINE_DEPTH)
        while True:
            await free.acquire()
            batch = await self._next()
            self._busy += 1
            start = time.perf_counter()
            try:
                pending = await loop.run_in_executor(pool, self._launch, engine, batch, self.model.batched)
            except Exception as exc:
                self._finished(batch, start, exc=exc)
                free.release()
                continue
            done = loop.run_in_executor(self._finishers[index], self._execute.finish, pending)
            done.add_done_callback(functools.partial(self._landed, batch, start, free))

    def _landed(self, batch: list[_Item], start: float, free: asyncio.Semaphore, done: asyncio.Future) -> None:
        """A pipelined batch is done: free its place first (the worker launches the next batch
        before this one's requests are answered, in the next loop step), then answer them."""
        free.release()
        stopped = done.cancelled()
        exc = ProtocolError(f"model '{self.model.name}' was stopped", 503) if stopped else done.exception()
        results, times = done.result() if exc is None else (None, ())
        asyncio.get_running_loop().call_soon(self._finished, batch, start, results, times, exc)

    def _finished(self, batch: list[_Item], start: float, results: list | None = None, times: tuple = (),
                  exc: BaseException | None = None) -> None:
        """Answer a batch's requests (each its result, or all the batch's error), count it."""
        self._busy -= 1
        if exc is not None:
            log.error("model '%s' failed on a batch of %d requests: %s", self.model.name, len(batch), exc)
            for item in batch:
                _settle(item, exc=exc)
        else:
            self.stats.batch(sum(item.rows for item in batch), *times)
            for item, result in zip(batch, results):
                _settle(item, result)
        self.stats.add(queue_duration_us=sum((start - item.queued) * 1e6 for item in batch))
        live = self._live
        while live and live[0].settled:
            live.popleft()
        if not self._queued and not self._busy:
            self._idle.set()


def _settle(item: _Item, result: dict | None = None, exc: BaseException | None = None) -> None:
    if item.settled:
        return
    item.settled = True
    try:
        item.done(result, exc)
    except Exception:  # noqa: BLE001 - one caller's failure must not stop the batcher
        log.exception("answering a request failed")


def _cancelled(item: _Item) -> None:
    """The caller went away (its task was cancelled): skip the request if still queued."""
    item.settled = True


def _execute(engine, batch: list[_Item], batched: bool) -> tuple[list[dict], tuple[float, float, float]]:
    """Runs in the instance's thread: merge, infer, split; times in microseconds."""
    t0 = time.perf_counter()
    feed = merge([item.feed for item in batch])
    t1 = time.perf_counter()
    out = engine.infer(feed)
    t2 = time.perf_counter()
    out = {name: np.asarray(value) for name, value in out.items()}
    results = split(out, [item.rows for item in batch]) if batched else [out] * len(batch)
    t3 = time.perf_counter()
    return results, ((t1 - t0) * 1e6, (t2 - t1) * 1e6, (t3 - t2) * 1e6)


def merge(feeds: list[dict]) -> dict:
    """The feeds of one batch as one feed: concatenated along dim 0 (a single feed as is; requests
    in consecutive shared-memory slots as one view of them, no copy)."""
    if len(feeds) == 1:
        return feeds[0]
    out = {}
    for name in feeds[0]:
        parts = runs([feed[name] for feed in feeds])
        out[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return out


def runs(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """``arrays`` (in order) with each run of them that lies back to back in one buffer (requests
    in consecutive slots of a shared-memory arena: views of one 1-D uint8 array) merged into one
    view along dim 0; concatenating the result equals concatenating ``arrays``."""
    out, run = [], None  # run: [base, base address, start address, end address, first array, rows]
    for arr in arrays:
        base = arr.base
        # slots are ALIGN-aligned: an array of another size cannot be a run
        if (arr.nbytes % ALIGN or not isinstance(base, np.ndarray) or base.dtype != np.uint8 or base.ndim != 1
                or not arr.ndim or not arr.flags.c_contiguous):
            if run is not None:
                out.append(_view(run))
                run = None
            out.append(arr)
            continue
        start = arr.__array_interface__["data"][0]
        if (run is not None and base is run[0] and start == run[3] and arr.dtype == run[4].dtype
                and arr.shape[1:] == run[4].shape[1:]):
            run[3] = start + arr.nbytes
            run[5] += arr.shape[0]
            continue
        if run is not None:
            out.append(_view(run))
        run = [base, base.__array_interface__["data"][0], start, start + arr.nbytes, arr, arr.shape[0]]
    if run is not None:
        out.append(_view(run))
    return out


def _view(run: list) -> np.ndarray:
    base, origin, start, _, first, rows = run
    if rows == first.shape[0]:
        return first
    return np.ndarray((rows,) + first.shape[1:], first.dtype, base, start - origin)


def split(outputs: dict, rows: list[int]) -> list[dict]:
    """Outputs of a merged batch -> each request's rows of them (views; the outputs as is for one)."""
    if len(rows) == 1:
        return [outputs]
    total = sum(rows)
    for name, value in outputs.items():
        got = value.shape[0] if getattr(value, "ndim", 0) else None
        if got != total:
            raise EngineError(
                f"output '{name}' has shape {list(getattr(value, 'shape', ()))} for a batch of {total} rows from "
                f"{len(rows)} requests: its dim 0 is not the batch, so it cannot be split per request; serve "
                "this model with --max-batch 0")
    if all(n == 1 for n in rows):  # every output has dim 0 (checked above)
        # batch-1 requests (the usual case): the row views made by numpy's iteration, not slicing
        names = list(outputs)
        columns = [list(outputs[name][:, None]) for name in names]
        return [dict(zip(names, row)) for row in zip(*columns)]
    results, start = [], 0
    for n in rows:
        results.append({name: value[start:start + n] for name, value in outputs.items()})
        start += n
    return results
