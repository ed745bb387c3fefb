"""The server: served models, their batchers and counters, the HTTP and gRPC listeners, drain.

``serve(models, options)`` runs until SIGTERM/SIGINT, then drains: the ready endpoints answer 503,
new inference requests are refused with 503, queued and running requests finish, then the
listeners close. ``BackgroundServer`` runs the same server in a thread (tests, notebooks).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from trtflow.errors import UsageError
from trtflow.serve import metrics
from trtflow.serve.batcher import Batcher
from trtflow.serve.model import ServedModel, instance_kind
from trtflow.serve.protocol import ProtocolError

log = logging.getLogger(__name__)

EXTENSIONS = ["classification", "binary_tensor_data", "model_repository", "statistics"]
DRAINING = "the server is shutting down; retry on another server"
BATCH_PARTS = ("compute_input", "compute_infer", "compute_output")  # the times of a batch_stats entry


@dataclass(frozen=True)
class ServeOptions:
    """Where and how to listen.

    Attributes:
        host: bind address (loopback by default; a wider bind must be asked for).
        http_port, grpc_port: 0 picks a free port; None turns the listener off.
        max_body: request body limit in bytes (413 above it).
        drain_timeout_s: how long a drain waits for running requests.
        kind: the instance kind reported in the model config (KIND_CPU or KIND_GPU) by a server whose
            engines run in another process (``--workers`` front ends); one with its engines reports
            theirs (``instance_kind``).
        reuse_port: bind with SO_REUSEPORT so several server processes share the ports
            (the kernel spreads connections over them).
        switch_interval_s: the interpreter's thread switch interval while ``serve`` runs. The
            default 5 ms lets the busy event loop hold the GIL for up to 5 ms each time an
            instance thread wants it back after a CUDA call or copy (several times per batch);
            0.2 ms keeps the instances fed.
        idle_timeout_s: an HTTP connection on which the client sends nothing for this long
            while the server waits for it is closed: before a request, or partway through a
            binary infer request (a request being answered does not count); connections
            aiohttp answers get it as their keep-alive timeout, and a request body that stops
            coming there is answered 408 before the connection is closed. 75 s: nginx's
            keep-alive default.
    """

    host: str = "127.0.0.1"
    http_port: int | None = 8000
    grpc_port: int | None = 8001
    max_body: int = 64 << 20
    drain_timeout_s: float = 30.0
    kind: str = "KIND_CPU"
    reuse_port: bool = False
    switch_interval_s: float | None = 0.0002
    idle_timeout_s: float = 75.0


class Server:
    """Models, batchers and counters behind both protocols. Create inside a running event loop."""

    def __init__(self, models: list[ServedModel], options: ServeOptions = ServeOptions(), execute: dict | None = None):
        from trtflow import __version__

        self.version = __version__
        self.options = options
        self.max_body = options.max_body
        engines = models and all(isinstance(m, ServedModel) for m in models)
        self.kind = instance_kind(models) if engines else options.kind  # what the engines run on, where they are here
        self.models = {m.name: m for m in models}
        self.stats = {m.name: metrics.ModelStats() for m in models}
        self.batchers = self._batchers(models, execute or {})
        self.last_inference = {m.name: 0 for m in models}
        self.draining = False
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self._runner = None
        self._grpc = None

    def _batchers(self, models: list[ServedModel], execute: dict) -> dict[str, Batcher]:
        return {m.name: Batcher(m, self.stats[m.name], execute.get(m.name)) for m in models}

    # -- used by both protocols ------------------------------------------------------------------
    def model(self, name: str, version: str | None = None) -> ServedModel:
        """The served model, or a 404 ProtocolError naming the models there are."""
        model = self.models.get(name)
        if model is None:
            raise ProtocolError(f"unknown model '{name}'; this server serves {sorted(self.models)}", 404)
        if version not in (None, "", model.version):
            raise ProtocolError(f"model '{name}' has no version '{version}'; it serves version {model.version}", 404)
        return model

    def submit(self, name: str, inputs: dict[str, np.ndarray], done) -> None:
        """``infer`` without a coroutine (the engine process's path): ``done(outputs, error)`` is
        called on the event loop once the request is answered, counted as ``infer`` counts it."""
        stats = self.stats[name]
        start = time.perf_counter()
        stats.inflight += 1

        def finished(result, exc) -> None:
            stats.inflight -= 1
            if exc is not None:
                stats.failure((time.perf_counter() - start) * 1e6)
                done(None, exc)
                return
            stats.success((time.perf_counter() - start) * 1e6)
            self.last_inference[name] = int(time.time() * 1000)
            done(result, None)

        try:
            if self.draining:
                raise ProtocolError(DRAINING, 503)
            self.batchers[name].submit(inputs, finished)
        except BaseException as exc:
            finished(None, exc)

    async def infer(self, name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one request through the model's batcher, counting success, failure and duration."""
        stats = self.stats[name]
        start = time.perf_counter()
        stats.inflight += 1
        try:
            if self.draining:
                raise ProtocolError(DRAINING, 503)
            out = await self.batchers[name].infer(inputs)
        except BaseException:
            stats.failure((time.perf_counter() - start) * 1e6)
            raise
        finally:
            stats.inflight -= 1
        stats.success((time.perf_counter() - start) * 1e6)
        self.last_inference[name] = int(time.time() * 1000)
        return out

    def reserve(self, name: str, layout: list[tuple]) -> tuple[list[memoryview], dict[str, np.ndarray]]:
        """Where a request's binary inputs (``layout``: (name, dtype, shape)) are read to: here
        fresh arrays; returns their bytes as memoryviews and the ticket for ``infer_reserved``."""
        arrays = {n: np.empty(shape, dtype) for n, dtype, shape in layout}
        return [memoryview(a).cast("B") for a in arrays.values()], arrays

    def infer_reserved(self, name: str, ticket):
        """``infer`` of the inputs read into ``reserve``'s buffers (an awaitable)."""
        return self.infer(name, ticket)

    def release(self, ticket) -> None:
        """Give back what ``reserve`` took when the request is not submitted."""

    def metadata(self) -> dict:
        return {"name": "trtflow", "version": self.version, "extensions": EXTENSIONS}

    def repository_index(self) -> list[dict]:
        return [{"name": n, "version": m.version, "state": "READY" if not self.draining else "UNAVAILABLE"}
                for n, m in self.models.items()]

    def statistics(self, name: str | None = None, version: str | None = None) -> dict:
        """Triton's statistics extension (durations in ns); 404 for a model or version not served."""
        names = [self.model(name, version).name] if name else list(self.models)
        out = []
        for n in names:
            s = self.stats[n]
            v, runs = s.totals()  # one copy: the counts and batch_stats agree

            def entry(count_key: str, us_key: str) -> dict:
                return {"count": int(v[count_key]), "ns": int(v[us_key] * 1000)}

            batches = [{"batch_size": size, **{part: {"count": runs[0], "ns": int(us * 1000)}  # each size executed
                                               for part, us in zip(BATCH_PARTS, runs[1:])}}
                       for size, runs in runs]
            out.append({
                "name": n, "version": self.models[n].version, "last_inference": self.last_inference[n],
                "inference_count": int(v["nv_inference_count"]), "execution_count": int(v["nv_inference_exec_count"]),
                "inference_stats": {
                    "success": entry("nv_inference_request_success", "nv_inference_request_duration_us"),
                    "fail": {"count": int(v["nv_inference_request_failure"]), "ns": int(s.failure_us * 1000)},
                    "queue": entry("nv_inference_request_success", "nv_inference_queue_duration_us"),
                    "compute_input": entry("nv_inference_exec_count", "nv_inference_compute_input_duration_us"),
                    "compute_infer": entry("nv_inference_exec_count", "nv_inference_compute_infer_duration_us"),
                    "compute_output": entry("nv_inference_exec_count", "nv_inference_compute_output_duration_us"),
                    "cache_hit": {"count": 0, "ns": 0}, "cache_miss": {"count": 0, "ns": 0},
                },
                "batch_stats": batches,
            })
        return {"model_stats": out}

    def metrics_text(self) -> str:
        return metrics.render(self.stats)

    async def refresh_stats(self) -> None:
        """Bring ``stats`` up to date before ``statistics``/``metrics_text`` (a front end asks the
        engine process; here they are live already)."""

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the listeners (HTTP with aiohttp, gRPC with grpc.aio); on failure close what opened."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the batchers' workers and the listeners at once (no drain)."""
        for batcher in self.batchers.values():
            batcher.close()
        if self._grpc is not None:
            await self._grpc.stop(grace=None)
        if self._runner is not None:
            await self._runner.close()

    async def _start(self) -> None:
        opts = self.options
        if opts.http_port is not None:
            from trtflow.serve.fasthttp import Listener
            from trtflow.serve.http import make_app, web

            runner = web.AppRunner(make_app(self), access_log=None, handle_signals=False,
                                   shutdown_timeout=opts.drain_timeout_s, keepalive_timeout=opts.idle_timeout_s)
            await runner.setup()
            self._runner = Listener(self, runner, opts.idle_timeout_s)
            self.http_port = await self._runner.start(opts.host, opts.http_port, opts.reuse_port)
        if opts.grpc_port is not None:
            from trtflow.serve.grpc_service import start_grpc

            self._grpc, self.grpc_port = await start_grpc(self, opts.host, opts.grpc_port, opts.reuse_port)
        log.info("serving %s on %s (HTTP %s, gRPC %s)", sorted(self.models), opts.host, self.http_port, self.grpc_port)

    async def drain(self) -> None:
        """Refuse new requests (503), finish the queued and running ones, close the listeners."""
        if self.draining:
            return
        self.draining = True
        log.info("draining: finishing %d queued requests", sum(b.queued for b in self.batchers.values()))
        try:
            await asyncio.wait_for(asyncio.gather(*(b.drain() for b in self.batchers.values())),
                                   self.options.drain_timeout_s)
        except asyncio.TimeoutError:
            log.warning("drain timed out after %g s; closing with requests still running", self.options.drain_timeout_s)
        await asyncio.sleep(0.05)  # let the last responses leave the sockets
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        if self._runner is not None:
            await self._runner.close()

    async def serve_forever(self, stop: asyncio.Event | None = None) -> None:
        """Start, run until SIGTERM/SIGINT (or ``stop`` is set), then drain."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        await self.drain()


def serve(models: list[ServedModel], options: ServeOptions = ServeOptions(), on_ready=None) -> None:
    """Serve until SIGTERM/SIGINT, then drain. ``on_ready(server)`` runs once the listeners are open.

    Runs on uvloop when it is installed (a faster event loop; the protocol code is the same).
    """

    async def main() -> None:
        server = Server(models, options)
        stop = asyncio.Event()
        task = asyncio.ensure_future(server.serve_forever(stop))
        if await listening(server, task) and on_ready is not None:
            on_ready(server)
        await task

    if options.switch_interval_s:
        sys.setswitchinterval(options.switch_interval_s)
    run_loop(main)


async def listening(server: Server, task: asyncio.Future) -> bool:
    """Wait until every listener ``server.options`` asks for is open, or its serving ``task``
    ended (failed to bind); True when listening."""
    options = server.options
    while not task.done() and ((options.http_port is not None and server.http_port is None)
                               or (options.grpc_port is not None and server.grpc_port is None)):
        await asyncio.sleep(0.01)
    return not task.done()


def listen_error(options: ServeOptions, exc: OSError) -> UsageError:
    """The one-line error for listeners that cannot bind (a port in use, a host not here)."""
    return UsageError(f"cannot listen on {options.host} (HTTP {options.http_port}, gRPC {options.grpc_port}): "
                      f"{exc.strerror or exc}; pick free ports with --http-port/--grpc-port")


def run_loop(main) -> None:
    """Run ``main()`` (a coroutine function) to completion, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        loop = uvloop.new_event_loop()
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()


class BackgroundServer:
    """A server on its own event loop in a daemon thread; a context manager that drains on exit.

    Example:
        with BackgroundServer([ServedModel("m", [engine])], ServeOptions(http_port=0, grpc_port=0)) as s:
            url = f"127.0.0.1:{s.http_port}"
    """

    def __init__(self, models: list[ServedModel], options: ServeOptions = ServeOptions(http_port=0, grpc_port=0)):
        self._models, self._options = models, options
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.server: Server | None = None
        self._thread = threading.Thread(target=self._main, name="trtflow-serve", daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.server = Server(self._models, self._options)
            try:
                await self.server.start()
            finally:
                self._ready.set()
            await self._stop.wait()
            await self.server.drain()

        try:
            asyncio.run(run())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    @property
    def http_port(self) -> int | None:
        return self.server.http_port

    @property
    def grpc_port(self) -> int | None:
        return self.server.grpc_port

    def start(self) -> "BackgroundServer":
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        """Drain and stop; returns when the loop has finished."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(self._options.drain_timeout_s + 5)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
