"""A front-end process of ``trtflow serve --workers W``: the HTTP and gRPC protocol work only (no
engine, no CUDA), inference forwarded to the engine process.

``FrontServer`` is a ``Server`` whose models are ``ModelInfo`` (metadata and config answered
here) and whose ``infer`` copies the request's tensors into a slot of this front end's
shared-memory arena and sends the slot to the engine process (``EngineClient``); requests that
do not fit a slot travel inline. ``/metrics`` and the statistics extension show the engine
process's counters (all front ends together), fetched on each scrape.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np

from trtflow.errors import EngineError
from trtflow.serve import ipc
from trtflow.serve.protocol import ProtocolError
from trtflow.serve.server import DRAINING, Server, ServeOptions, listen_error, listening, run_loop

log = logging.getLogger(__name__)

GONE = "the engine process of this server is gone; retry on another server"


class EngineClient:
    """Requests to the engine process over one Unix-socket connection, answers matched by id.

    Args:
        arena: this front end's slots (None: every request inline).
    """

    def __init__(self, arena: ipc.Arena | None):
        self.arena = arena
        self.pending: dict[int, tuple[asyncio.Future, int | None]] = {}
        self.lost = asyncio.Event()
        self._next = 0
        self._channel: ipc.Channel | None = None

    async def connect(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        _, self._channel = await loop.create_unix_connection(lambda: ipc.Channel(self._on_message, self._on_close), path)
        if self.arena is not None:
            self._channel.send(("hello", self.arena.name, self.arena.slot_bytes, self.arena.slots))

    def _send(self, slot: int | None, kind: str, *args) -> asyncio.Future:
        """Send ``(kind, id, *args)``; the future of its answer. ``slot`` is given back with it."""
        if self.lost.is_set():
            if slot is not None:
                self.arena.give(slot)
            raise ProtocolError(GONE, 503)
        self._next += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self._next] = (future, slot)
        self._channel.send((kind, self._next, *args))
        return future

    async def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request's outputs; errors as the in-process server raises them."""
        arena = self.arena
        slot = arena.take() if arena is not None and arena.fits(inputs) else None
        if slot is not None:
            try:
                specs = arena.put(slot, inputs)
            except BaseException:
                arena.give(slot)
                raise
            return await self.infer_slot(model, slot, specs)
        return await self._send(None, "inline", model, dict(inputs))

    def infer_slot(self, model: str, slot: int, specs: list[tuple]) -> asyncio.Future:
        """The outputs of a request whose inputs are in ``slot`` already (``specs`` as ``Arena.put``
        returns them); the slot is given back when the answer comes."""
        return self._send(slot, "infer", model, slot, specs)

    async def stats(self) -> dict:
        return await self._send(None, "stats")

    def _on_message(self, msg: tuple) -> None:
        try:
            self._answer(msg)
        except Exception:  # noqa: BLE001 - keep the connection for the other requests
            log.exception("bad answer from the engine process")

    def _answer(self, msg: tuple) -> None:
        entry = self.pending.pop(msg[1], None)
        if entry is None:
            return
        future, slot = entry
        if slot is not None:
            self.arena.give(slot)  # the engine process is done with the slot once it answered
        if future.done():  # the caller went away (client disconnected)
            return
        if msg[0] == "err":
            status, message = msg[2], msg[3]
            future.set_exception(EngineError(message) if status == 500 else ProtocolError(message, status))
        elif msg[0] == "ok":
            future.set_result(ipc.unpack(msg[2]))
        else:
            future.set_result(msg[2])

    def _on_close(self) -> None:
        self.lost.set()
        for future, _ in self.pending.values():
            if not future.done():
                future.set_exception(ProtocolError(GONE, 503))
        self.pending.clear()


class FrontServer(Server):
    """The protocol side of the server; inference goes to the engine process through ``client``."""

    def __init__(self, infos: list, options: ServeOptions, client: EngineClient):
        super().__init__(infos, options)
        self.client = client

    def _batchers(self, models: list, execute: dict) -> dict:
        return {}  # the batchers live in the engine process

    async def infer(self, name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.draining:
            raise ProtocolError(DRAINING, 503)
        return await self.client.infer(name, inputs)

    def reserve(self, name: str, layout: list[tuple]):
        """A free slot of the arena, laid out as ``Arena.put`` does, when the inputs fit one
        (the socket is read straight into shared memory); else fresh arrays."""
        arena = self.client.arena
        reserved = arena.reserve(layout) if arena is not None else None
        if reserved is None:
            return super().reserve(name, layout)
        views, slot, specs = reserved
        return views, (slot, specs)

    def infer_reserved(self, name: str, ticket):
        if isinstance(ticket, dict):
            return self.infer(name, ticket)
        if self.draining:
            self.release(ticket)
            raise ProtocolError(DRAINING, 503)
        return self.client.infer_slot(name, *ticket)

    def release(self, ticket) -> None:
        if not isinstance(ticket, dict):
            self.client.arena.give(ticket[0])

    async def refresh_stats(self) -> None:
        """The engine process's counters for every model (requests of all front ends)."""
        for name, snap in (await self.client.stats()).items():
            self.stats[name].update(snap)
            self.last_inference[name] = snap["last_inference"]

    async def drain(self) -> None:
        """Refuse new requests (503), wait for this front end's open requests, close the listeners."""
        if self.draining:
            return
        self.draining = True
        deadline = time.perf_counter() + self.options.drain_timeout_s
        while self.client.pending and not self.client.lost.is_set() and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # let the last responses leave the sockets
        await self.close()


@dataclass(frozen=True)
class FrontEndSpec:
    """What a front-end process needs (picklable)."""

    index: int
    infos: list
    options: ServeOptions
    path: str  # the engine process's Unix socket
    arena: tuple | None  # (name, slot_bytes, slots), None: every request inline


def frontend_main(spec: FrontEndSpec, queue, setup=None) -> None:
    """Entry point of a front-end process: serve until SIGTERM/SIGINT (drain) or until the engine
    process is gone (exit 1). Reports ``("ready", index, http_port, grpc_port, pid)`` or
    ``("error", message, exit_code)`` on ``queue``."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if setup is not None:
        setup()
    lost = []  # no switch-interval change here: no instance thread competes with the event loop

    async def main() -> None:
        arena = ipc.Arena.attach(*spec.arena) if spec.arena else None
        client = EngineClient(arena)
        watch = None
        try:
            try:
                await client.connect(spec.path)
            except OSError as exc:
                raise RuntimeError(f"cannot reach the engine process at {spec.path}: {exc}") from None
            server = FrontServer(spec.infos, spec.options, client)
            stop = asyncio.Event()
            task = asyncio.ensure_future(server.serve_forever(stop))
            watch = asyncio.ensure_future(client.lost.wait())
            if await listening(server, task):
                queue.put(("ready", spec.index, server.http_port, server.grpc_port, os.getpid()))

            def on_lost(w: asyncio.Future) -> None:
                if not w.cancelled():
                    lost.append(True)
                    stop.set()

            watch.add_done_callback(on_lost)
            await task
        finally:
            if watch is not None:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
            if arena is not None:
                arena.close()

    try:
        run_loop(main)
    except OSError as exc:
        error = listen_error(spec.options, exc)
        queue.put(("error", str(error), error.exit_code))
        return
    except Exception as exc:  # noqa: BLE001 - the parent prints it as one line
        queue.put(("error", f"front end {spec.index} failed: {type(exc).__name__}: {exc}", 1))
        return
    if lost:
        print(f"trtflow serve: front end {spec.index}: {GONE}", file=sys.stderr, flush=True)
        raise SystemExit(1)
