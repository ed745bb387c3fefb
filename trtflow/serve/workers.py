"""``trtflow serve --workers W``: one engine process and W front-end processes.

    parent (this function): starts, watches, forwards SIGTERM/SIGINT, owns the shared memory
      |-- engine process (trtflow.serve.engine_process): models, batchers, engines (CUDA here only)
      |-- front end 0..W-1 (trtflow.serve.frontend): aiohttp + grpc.aio on shared ports (SO_REUSEPORT)
            request tensors -> a slot of the front end's shared-memory arena -> the engine process

Start: the engine process loads the models and listens on a Unix socket; the parent sizes the
arenas from the models' input specs (one request of ``slot_rows`` rows a slot) and the room in
/dev/shm, creates them, starts the front ends, and reports ready once every front end listens.
Stop: SIGTERM/SIGINT drains the front ends (each finishes its open requests), then the engine
process, then the parent unlinks the arenas and returns 0. A front end that dies is reported and
the others keep serving (the kernel stops sending it connections); when none is left, or when the
engine process dies, the server stops and returns 1.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import queue as queue_module
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from trtflow.errors import EngineError, UsageError
from trtflow.serve import ipc
from trtflow.serve.engine_process import engine_main
from trtflow.serve.frontend import FrontEndSpec, frontend_main
from trtflow.serve.server import ServeOptions
from trtflow.spec import is_count

log = logging.getLogger(__name__)


@dataclass
class Ready:
    """What ``serve_workers`` reports once every process listens."""

    http_port: int | None
    grpc_port: int | None
    infos: list
    kind: str
    devices: dict
    pids: dict = field(default_factory=dict)  # {"engine": pid, "frontends": [pid, ...]}
    slot_bytes: int = 0
    slots: int = 0


@dataclass(frozen=True)
class WorkerOptions:
    """Shared-memory sizing of the front ends.

    Attributes:
        workers: front-end processes.
        slots: request slots per front end (more requests in flight go inline).
        slot_rows: rows of one request a slot holds (batch-1 requests: 1).
        startup_timeout_s: how long loading and starting may take.
    """

    workers: int = 2
    slots: int = 128
    slot_rows: int = 1
    startup_timeout_s: float = 600.0


def serve_workers(load: Callable[[], list], options: ServeOptions, workers: WorkerOptions,
                  on_ready: Callable[[Ready], None] | None = None, setup: Callable[[], None] | None = None) -> int:
    """Serve with one engine process and ``workers.workers`` front ends until SIGTERM/SIGINT.

    Args:
        load: picklable callable that loads the models (runs in the engine process) and returns
            the ``ServedModel`` list.
        options: listeners and limits; the ports must be fixed (not 0): the front ends share them.
        workers: how many front ends and their shared memory.
        on_ready: called once with ``Ready`` when every process listens.
        setup: picklable callable each child runs first (logging configuration).

    Returns:
        0 after a drain, 1 when the engine process or every front end died.

    Raises:
        UsageError: the models could not load, or a port could not be bound (one line each);
            before any process starts: a port of 0, no listener, or ``workers`` out of range.
    """
    _check(options, workers)
    ctx = multiprocessing.get_context("spawn")
    messages = ctx.Queue()
    tmp = Path(tempfile.mkdtemp(prefix="trtflow-serve-"))
    path = str(tmp / "engine.sock")
    state = {"stopping": False}
    engine = ctx.Process(target=engine_main, args=(load, options, path, messages, setup), name="trtflow-engine")
    fronts: list = []
    arenas: list = []

    def forward(sig, frame) -> None:
        state["stopping"] = True
        for p in fronts:
            if p.is_alive():
                p.terminate()  # SIGTERM: the front end drains

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        engine.start()
        msg = _next(messages, [engine], workers.startup_timeout_s, state)
        if msg is None:
            return 0
        _, infos, kind, devices, engine_pid = msg
        size, count = _arena_size(infos, workers)
        for _ in range(workers.workers if count else 0):
            arenas.append(ipc.Arena.create(size, count))
        for i in range(workers.workers):
            spec = FrontEndSpec(i, infos, dataclasses.replace(options, kind=kind, reuse_port=True), path,
                                (arenas[i].name, size, count) if arenas else None)
            fronts.append(ctx.Process(target=frontend_main, args=(spec, messages, setup), name=f"trtflow-frontend-{i}"))
            fronts[-1].start()
        ports, pids = None, {}
        while len(pids) < len(fronts):
            msg = _next(messages, [engine, *fronts], workers.startup_timeout_s, state)
            if msg is None:
                return 0
            ports, pids[msg[1]] = msg[2:4], msg[4]
        if on_ready is not None:
            on_ready(Ready(ports[0], ports[1], infos, kind, devices,
                           {"engine": engine_pid, "frontends": [pids[i] for i in range(len(fronts))]}, size, count))
        return _watch(engine, fronts, options, state)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_all(engine, fronts, 5.0)
        for arena in arenas:
            arena.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _check(options: ServeOptions, workers: WorkerOptions) -> None:
    """Refuse what the front ends cannot serve with: each would pick its own free port for a port
    of 0 (clients reach one of them), and ``workers`` must give at least one front end."""
    if options.http_port is None and options.grpc_port is None:
        raise UsageError("serve_workers got no listener (http_port and grpc_port are both None); give at least one port")
    if 0 in (options.http_port, options.grpc_port):
        raise UsageError(f"serve_workers shares fixed ports among the front ends; http_port {options.http_port} and "
                         f"grpc_port {options.grpc_port}: give a port number instead of 0 (or None: no listener)")
    for name, value, least in (("workers", workers.workers, 1), ("slots", workers.slots, 0),
                               ("slot_rows", workers.slot_rows, 1)):
        if not is_count(value, least):
            raise UsageError(f"WorkerOptions.{name} is {value!r}; give a whole number >= {least}")


def _arena_size(infos: list, workers: WorkerOptions) -> tuple[int, int]:
    """(slot bytes, slots per front end), fewer slots where /dev/shm is small (0: all inline)."""
    size = ipc.slot_bytes(infos, workers.slot_rows)
    count = workers.slots
    room = ipc.shm_room()
    if room is not None and size * count * workers.workers > room // 2:
        count = room // 2 // (size * workers.workers)
        log.warning("/dev/shm has room for %d request slots of %d bytes per front end (wanted %d); requests beyond "
                    "them travel inline over the socket", count, size, workers.slots)
    return size, count


def _next(messages, procs: list, timeout: float, state: dict):
    """The next startup message; raises the one-line error a child reported or a child's death;
    None when a stop signal came first."""
    deadline = time.monotonic() + timeout
    while True:
        if state["stopping"]:
            return None
        try:
            msg = messages.get(timeout=0.1)
        except queue_module.Empty:
            dead = [p for p in procs if not p.is_alive()]
            if dead:
                raise EngineError(f"{dead[0].name} exited with code {dead[0].exitcode} while starting")
            if time.monotonic() > deadline:
                raise EngineError(f"the server did not start within {timeout:g} s")
            continue
        if msg[0] == "error":
            raise (UsageError if msg[2] == 2 else EngineError)(msg[1])
        return msg


def _watch(engine, fronts: list, options: ServeOptions, state: dict) -> int:
    """Serve until a stop signal (drain: front ends first, then the engine process) or a death."""
    alive = {p.sentinel: p for p in fronts}
    while True:
        ready = multiprocessing.connection.wait([engine.sentinel, *alive], timeout=0.2)
        for sentinel in ready:
            p = alive.pop(sentinel, None)
            if p is None:
                continue
            p.join(1.0)  # reap it: exitcode
            if not state["stopping"]:
                log.warning("%s (pid %d) exited with code %s; %d front end(s) still serving", p.name, p.pid,
                            p.exitcode, len(alive))
        if engine.sentinel in ready:
            engine.join(1.0)
            if state["stopping"]:  # it stops by itself once every front end has drained and gone
                for p in alive.values():
                    p.join(options.drain_timeout_s + 5)
                return 0
            log.error("the engine process exited with code %s; stopping the server", engine.exitcode)
            return 1
        if not alive:
            engine.terminate()  # SIGTERM: the engine process drains what is left and exits
            engine.join(options.drain_timeout_s + 10)
            if state["stopping"]:
                return 0
            log.error("every front end has exited; stopping the server")
            return 1


def _stop_all(engine, fronts: list, timeout: float) -> None:
    for p in [*fronts, engine]:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + timeout
    for p in [*fronts, engine]:
        if p.pid is None:
            continue
        p.join(max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(5)
