"""The engine process of ``trtflow serve --workers W``: loads the models once, owns their engine
instances and batchers (``Server`` without listeners), and answers the front ends' messages
(``trtflow.serve.ipc``) on a Unix socket.

Each front end connects once and names its shared-memory arena; a request arrives as a slot and
the offsets of its tensors, becomes numpy views into the slot (no copy) and goes through
``Server.infer`` (the dynamic batcher: requests of all front ends are batched together). On CUDA
engines the batch is gathered from the slots straight to the device (``trtflow.serve.gather``,
arenas page-locked once). Answers go back inline; errors as (status, message).

SIGINT is ignored (the parent decides). The process stops, draining what is queued or running,
once every front end that connected has gone (they drain first), or on SIGTERM when none is
connected (a SIGTERM to the whole process group waits for the front ends, up to the drain timeout).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import sys

from trtflow.errors import TrtflowError
from trtflow.serve import gather, ipc, protocol
from trtflow.serve.server import Server, ServeOptions, run_loop

log = logging.getLogger(__name__)


def device_name(engine) -> str:
    """Where an instance runs: "cuda:1", or "cpu". An engine on a GPU without an index (ONNX
    Runtime's CUDA provider with ``gpu`` None) runs on GPU 0, the provider's default."""
    device = getattr(engine, "device", None)
    if device is not None:
        return str(device)
    gpu = getattr(engine, "gpu", None)
    if gpu is not None:
        return f"cuda:{gpu}"
    return "cuda:0" if engine.on_gpu else "cpu"


def engine_main(load, options: ServeOptions, path: str, queue, setup=None) -> None:
    """Entry point of the engine process (spawned by ``trtflow.serve.workers``).

    Args:
        load: a picklable callable returning the ``ServedModel`` list (the models load here).
        options: the server's options (drain timeout, kind, switch interval).
        path: the Unix socket to listen on.
        queue: where ``("ready", infos, kind, devices, pid)`` or ``("error", message, exit_code)`` go.
        setup: a picklable callable run first (logging).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if setup is not None:
        setup()
    try:
        models = load()
    except TrtflowError as exc:
        queue.put(("error", str(exc), exc.exit_code))
        return
    except Exception as exc:  # noqa: BLE001 - the parent prints it as one line
        queue.put(("error", f"loading the models failed: {type(exc).__name__}: {exc}", 1))
        return
    try:
        if options.switch_interval_s:
            sys.setswitchinterval(options.switch_interval_s)
        run_loop(lambda: _serve(models, options, path, queue))
    finally:
        for model in models:
            model.close()


async def _serve(models: list, options: ServeOptions, path: str, queue) -> None:
    execute = gather.executors(models)
    server = Server(models, ServeOptions(http_port=None, grpc_port=None, drain_timeout_s=options.drain_timeout_s),
                    execute=execute)
    hub = Hub(server, gather.Pinned() if execute else None)
    loop = asyncio.get_running_loop()
    listener = await loop.create_unix_server(hub.connection, path)
    loop.add_signal_handler(signal.SIGTERM, hub.terminate, options.drain_timeout_s + 5)
    parent = os.getppid()

    def orphaned() -> None:  # the serving parent died (SIGKILL): stop, and the front ends follow
        if os.getppid() != parent:
            log.error("the serving parent process has gone; stopping")
            hub.stop.set()
        else:
            loop.call_later(1.0, orphaned)

    loop.call_later(1.0, orphaned)
    devices = {m.name: [device_name(e) for e in m.engines] for m in models}
    queue.put(("ready", [m.info() for m in models], server.kind, devices, os.getpid()))
    await hub.stop.wait()
    await server.drain()
    listener.close()
    hub.close()


class Hub:
    """The front ends' connections to one engine process."""

    def __init__(self, server: Server, pinned: gather.Pinned | None):
        self.server, self.pinned = server, pinned
        self.peers: set[Peer] = set()
        self.connected = 0
        self.stop = asyncio.Event()

    def connection(self) -> ipc.Channel:
        peer = Peer(self)
        self.peers.add(peer)
        self.connected += 1
        return peer.channel

    def terminate(self, grace_s: float) -> None:
        """SIGTERM: stop once the front ends (which drain on the same signal) have gone, at the
        latest after ``grace_s``: a process-group SIGTERM reaches this process and them at once."""
        if not self.peers:
            self.stop.set()
        else:
            asyncio.get_running_loop().call_later(grace_s, self.stop.set)

    def gone(self, peer: "Peer") -> None:
        self.peers.discard(peer)
        if not self.peers and self.connected:
            log.info("every front end has disconnected; stopping")
            self.stop.set()

    def snapshot(self) -> dict:
        out = {}
        for name, s in self.server.stats.items():
            out[name] = {**s.snapshot(), "last_inference": self.server.last_inference[name]}
        return out

    def close(self) -> None:
        for peer in list(self.peers):
            peer.release()
        if self.pinned is not None:
            self.pinned.close()


class Peer:
    """One front end: its channel, its arena (attached, page-locked on CUDA), its open requests."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self.channel = ipc.Channel(self.on_message, self.on_close)
        self.arena: ipc.Arena | None = None
        self.open = 0
        self.closed = False

    def on_message(self, msg: tuple) -> None:
        try:
            self._dispatch(msg)
        except Exception as exc:  # noqa: BLE001 - a bad message fails its request, not the connection
            log.exception("bad message from a front end")
            if msg[0] in ("infer", "inline", "stats"):
                self.channel.send(("err", msg[1], *protocol.error_status(exc)))

    def _dispatch(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "infer":
            _, rid, model, slot, specs = msg
            self.open += 1
            self.hub.server.submit(model, self.arena.views(slot, specs), functools.partial(self.answer, rid, model))
        elif kind == "inline":
            _, rid, model, inputs = msg
            self.open += 1
            self.hub.server.submit(model, inputs, functools.partial(self.answer, rid, model))
        elif kind == "stats":
            self.channel.send(("stats", msg[1], self.hub.snapshot()))
        elif kind == "hello":
            _, name, slot_bytes, slots = msg
            self.arena = ipc.Arena.attach(name, slot_bytes, slots)
            if self.hub.pinned is not None:
                self.hub.pinned.register(name, self.arena.shm.buf)
        else:
            log.error("unknown message %r from a front end", kind)

    def answer(self, rid: int, model: str, out: dict | None, exc: BaseException | None) -> None:
        """Send one request's outputs (raw bytes, see ``ipc.pack``) or its error (status, message)."""
        self.open -= 1
        if exc is None:
            try:
                reply = ("ok", rid, ipc.pack(out))
            except TrtflowError as err:  # an output that cannot travel
                exc = err
        if exc is not None:
            if not isinstance(exc, TrtflowError):
                log.error("request for model '%s' failed: %s: %s", model, type(exc).__name__, exc)
            reply = ("err", rid, *protocol.error_status(exc))
        self.channel.send(reply)
        if self.closed and not self.open:
            self.release()

    def on_close(self) -> None:
        self.closed = True
        if not self.open:
            self.release()
        self.hub.gone(self)

    def release(self) -> None:
        """Unlock and detach the arena (once no request of this front end is running)."""
        if self.arena is None:
            return
        arena, self.arena = self.arena, None
        if self.hub.pinned is not None:
            self.hub.pinned.unregister(arena.name)
        arena.close()

