"""The HTTP listener: binary infer requests on a lean path, every other request on aiohttp.

Why: a 301 KB binary infer request cost a front end about 0.7 ms of CPU on aiohttp, most of it
not inference work: the body arrives as many ``bytes`` chunks that aiohttp's stream joins into
one ``bytes`` (a copy) that is then copied into the shared-memory slot (another copy), plus
routing, middleware, request/response objects and header handling per request.

``FastHTTP`` is an ``asyncio.BufferedProtocol`` on the listening port. It parses the request
line and headers itself and keeps on this path only ``POST /v2/models/{m}[/versions/{v}]/infer``
over HTTP/1.1 with a Content-Length within the body limit, an ``Inference-Header-Content-Length``
(binary tensors), a served model and no Transfer-Encoding, Content-Encoding or Expect. The JSON
header is read first; when every input is a fixed-size binary tensor, the socket is read
straight into where the tensors go (``server.reserve``: a shared-memory slot in a front end,
fresh arrays in one process), so the kernel's copy is the only one. Other bodies on this path
(JSON ``data`` inputs, BYTES, sizes that do not add up) are read whole and decoded by
``protocol.decode_infer_request``, which names what is wrong.

Any other request, and anything unusual (a query string, ``%`` escapes, HTTP/1.0, chunked,
oversized or malformed heads), hands the connection to aiohttp's request handler with the bytes
read so far, and it stays there: those requests are answered exactly as before (``http.py``).

Keep-alive and pipelining: one request at a time per connection; bytes of the next request are
kept while one is in flight and parsed after its response is written. ``Connection: close`` is
honoured.

Idle connections: while it is the client's turn (before a request, or partway through its head or
body) and it sends nothing for ``idle_timeout`` seconds, the connection is closed, so a silent or
stalled client does not hold it (and its request's buffers) for ever; a body that stalled is first
answered 408, as aiohttp's path answers it. A request the server is still answering does not count
as idle. Connections handed to aiohttp get the same timeout as its
``keepalive_timeout``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from http import HTTPStatus

from trtflow.errors import TrtflowError
from trtflow.serve import protocol
from trtflow.serve.protocol import ProtocolError

log = logging.getLogger(__name__)

HEAD_ROOM = 64 << 10  # request line + headers; a longer head goes to aiohttp
HEAD_READ = 8 << 10  # at most this much is read ahead of a head: the body's bytes read with it are copied once more
PREFIX, SUFFIX = b"/v2/models/", b"/infer"
REFUSE = (b"transfer-encoding", b"content-encoding", b"expect")
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


def _response(status: int, body: bytes, headers: dict[str, str], close: bool) -> bytes:
    head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error"))]
    head += [f"{k}: {v}\r\n".encode() for k, v in headers.items()]
    head.append(b"Content-Length: %d\r\n%s\r\n" % (len(body), b"Connection: close\r\n" if close else b""))
    return b"".join(head) + body


@functools.lru_cache(maxsize=256)
def _header(json_bytes: bytes, binary_bytes: int) -> tuple:
    """(request without inputs, binary layout or None) of a JSON header. Cached: clients send the
    same header for every request of one shape (the objects are only read)."""
    items, request = protocol.parse_infer_header(json_bytes)
    return request, protocol.binary_layout(items, binary_bytes)


class FastHTTP(asyncio.BufferedProtocol):
    """One HTTP connection (see the module docstring).

    Args:
        server: the ``Server`` (``model``, ``reserve``, ``infer_reserved``, ``release``, ``infer``).
        fallback: aiohttp's protocol factory (``AppRunner.server``).
        connections: the listener's open connections (closed with it).
        idle_timeout: seconds of client silence after which the connection is closed.
    """

    def __init__(self, server, fallback, connections: set, idle_timeout: float):
        self.server, self.fallback, self.connections = server, fallback, connections
        self.idle_timeout = idle_timeout
        self.transport = None
        self.timer = None  # checks for idleness; re-armed when it fires early, not on every read
        self.seen = 0.0  # time.monotonic() of the client's last bytes, or of the last response
        self.buf = bytearray(HEAD_READ)  # grows (doubling) up to a head of HEAD_ROOM or pipelined bytes
        self.view = memoryview(self.buf)
        self.start = self.end = 0  # unparsed bytes: buf[start:end]
        self.dests: list = []  # memoryviews the body is read into, in order
        self.pos = 0  # bytes written into dests[0]
        self.then = None  # called once dests are full
        self.busy = False  # a request is being read or answered
        self.paused = False  # reading paused while pipelined bytes wait
        self.ticket = None  # what server.reserve gave, until submitted
        self.req = None  # (served model, close, json header length, body length, t0, target)
        self.json: bytearray | None = None  # the request's JSON header

    # -- asyncio ---------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.connections.add(self)
        self.seen = time.monotonic()
        self.timer = asyncio.get_running_loop().call_later(self.idle_timeout, self._idle)

    def connection_lost(self, exc) -> None:
        self.connections.discard(self)
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.ticket is not None:
            self.server.release(self.ticket)
            self.ticket = None

    def get_buffer(self, sizehint: int):
        if self.dests:
            return self.dests[0][self.pos:]
        if self.end == len(self.buf):  # compact, or grow while a request is in flight
            if self.start:
                self.buf[:self.end - self.start] = self.buf[self.start:self.end]
                self.end -= self.start
                self.start = 0
            else:
                self.view.release()
                self.buf.extend(bytes(len(self.buf)))
            self.view = memoryview(self.buf)
        return self.view[self.end:self.end + HEAD_READ]

    def buffer_updated(self, nbytes: int) -> None:
        self.seen = time.monotonic()
        if self.dests:
            self.pos += nbytes
            if self.pos == len(self.dests[0]):
                self.dests.pop(0)
                self.pos = 0
                if not self.dests:
                    self.then()
            return
        self.end += nbytes
        if not self.busy:
            self._parse()
        elif self.end - self.start > 16 * HEAD_ROOM and not self.paused:  # pipelined far ahead: wait
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self):
        return False  # close

    def _idle(self) -> None:
        """Close the connection if the client, whose turn it is, has been silent for ``idle_timeout``."""
        self.timer = None
        if self.transport is None:
            return
        answering = self.busy and not self.dests  # the server's turn: not idle
        left = self.idle_timeout if answering else self.seen + self.idle_timeout - time.monotonic()
        if left > 0:
            self.timer = asyncio.get_running_loop().call_later(left, self._idle)
            return
        log.debug("closing a connection idle for %g s", self.idle_timeout)
        if self.busy:  # partway through a body: answered 408, then closed
            self.dests = []
            self.req = (self.req[0], True, *self.req[2:])
            self._answer(None, None, protocol.body_stalled(self.idle_timeout))
            return
        self.transport.close()

    # -- requests --------------------------------------------------------------------------------
    def _parse(self) -> None:
        """Parse the next request head in buf[start:end], if complete."""
        found = self.buf.find(b"\r\n\r\n", self.start, self.end)
        if found < 0:
            if self.end - self.start >= HEAD_ROOM:
                self._hand_off()
            elif self.start == self.end:
                self.start = self.end = 0
            return
        t0 = time.perf_counter()
        fast = self._fast_head(bytes(self.view[self.start:found]), t0)
        if fast is None:
            self._hand_off()
            return
        self.start = found + 4
        self.busy = True
        self.json = bytearray(fast)
        self._want([self.json], self._on_json)

    def _fast_head(self, head: bytes, t0: float) -> int | None:
        """The JSON header's length when this head is for the lean path, else None."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[0] != b"POST" or parts[2] != b"HTTP/1.1":
            return None
        target = parts[1]
        if not (target.startswith(PREFIX) and target.endswith(SUFFIX)) or b"?" in target or b"%" in target:
            return None
        names = target[len(PREFIX):-len(SUFFIX)].split(b"/")
        if len(names) == 1:
            version = None
        elif len(names) == 3 and names[1] == b"versions":
            version = names[2].decode("latin-1")
        else:
            return None
        length = header = None
        close = False
        for line in lines[1:]:
            key, sep, value = line.partition(b":")
            key = key.strip().lower()
            if not sep or key in REFUSE:
                return None
            if key == b"content-length":
                if length is not None or not value.strip().isdigit():
                    return None
                length = int(value)
            elif key == b"inference-header-content-length":
                if header is not None or not value.strip().isdigit():
                    return None
                header = int(value)
            elif key == b"connection":
                close = b"close" in value.lower()
        if length is None or header is None or header > length or length > self.server.max_body:
            return None
        name = names[0].decode("latin-1")
        try:
            model = self.server.model(name, version)
        except ProtocolError:
            return None  # aiohttp answers the 404
        self.req = (model, close, header, length, t0, target)
        return header

    def _want(self, dests: list, then) -> None:
        """Fill ``dests`` from the bytes already read, then from the socket; then ``then()``."""
        self.dests = [memoryview(d) for d in dests if len(d)]  # slices of views write through
        self.pos = 0
        while self.dests and self.start < self.end:
            d = self.dests[0]
            n = min(len(d) - self.pos, self.end - self.start)
            d[self.pos:self.pos + n] = self.view[self.start:self.start + n]
            self.start += n
            self.pos += n
            if self.pos == len(d):
                self.dests.pop(0)
                self.pos = 0
        if self.start == self.end:
            self.start = self.end = 0
        self.then = then
        if not self.dests:
            then()

    def _on_json(self) -> None:
        model, close, header, length, t0, _ = self.req
        name = model.name
        try:
            request, layout = _header(bytes(self.json), length - header)
        except Exception as exc:  # noqa: BLE001 - malformed: 400; anything else 500, as aiohttp's path
            self._skip(length - header, exc)
            return
        if layout is None:  # decoded whole, with the codec's checks and messages
            rest = bytearray(length - header)
            self._want([rest], lambda: self._run(lambda: protocol.decode_infer_request(self.json + rest, header)))
            return
        try:
            views, self.ticket = self.server.reserve(name, layout)
        except Exception as exc:  # noqa: BLE001 - answered like any other request, the connection goes on
            self._skip(length - header, exc)
            return
        self._want(views, lambda: self._run(lambda: request))

    def _skip(self, n: int, exc: BaseException) -> None:
        """Read and drop the rest of the body, then answer ``exc``."""
        self._want([bytearray(n)], lambda: self._answer(None, None, exc))

    def _run(self, decode) -> None:
        """The body is in: submit the request; answer when its outputs (or an error) come."""
        name = self.req[0].name
        try:
            request = decode()
            protocol.check_outputs(request, self.req[0].outputs)
            ticket, self.ticket = self.ticket, None
            waiting = asyncio.ensure_future(self.server.infer(name, request.inputs) if ticket is None
                                            else self.server.infer_reserved(name, ticket))
        except Exception as exc:  # noqa: BLE001 - answered to the client
            if self.ticket is not None:
                self.server.release(self.ticket)
                self.ticket = None
            self._answer(None, None, exc)
            return
        waiting.add_done_callback(lambda f: self._answer(request, f, None))

    def _answer(self, request, future, exc) -> None:
        model, close, _, length, t0, target = self.req
        if future is not None:
            exc = future.exception() if not future.cancelled() else ProtocolError("the request was cancelled", 503)
        if self.transport is None:
            return
        if exc is None:
            try:
                body, headers = protocol.encode_infer_response(model.name, model.version, future.result(), request,
                                                               model.batched, model.labels)
                status = 200
            except Exception as e:  # noqa: BLE001 - an output the model does not have, ...
                exc = e
        if exc is not None:
            status, message = protocol.error_status(exc)
            if not isinstance(exc, TrtflowError):
                log.error("unhandled error on an infer request", exc_info=exc)
            body, headers = protocol.error_body(message), {"Content-Type": "application/json"}
        self.transport.write(_response(status, body, headers, close))
        if protocol.ACCESS.isEnabledFor(logging.INFO):
            protocol.log_access((self.transport.get_extra_info("peername") or ("",))[0], "POST",
                                target.decode("latin-1"), status, t0, length, len(body))
        self.busy = False
        self.req = self.json = None
        self.seen = time.monotonic()  # the client's turn again: idle from now
        if close:
            self.transport.close()
            return
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        if self.start < self.end:  # pipelined: the next request, on a fresh stack (no recursion)
            asyncio.get_running_loop().call_soon(self._next)

    def _next(self) -> None:
        if self.transport is not None and not self.busy and not self.dests:
            self._parse()

    def _hand_off(self) -> None:
        """Give the connection, and the bytes read so far, to aiohttp's request handler."""
        transport, data = self.transport, bytes(self.view[self.start:self.end])
        self.connections.discard(self)
        self.transport = None
        if self.timer is not None:  # aiohttp's keepalive_timeout takes over
            self.timer.cancel()
            self.timer = None
        handler = self.fallback()
        transport.pause_reading()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if data:
            handler.data_received(data)
        transport.resume_reading()


class Listener:
    """The HTTP port: ``FastHTTP`` connections over aiohttp's ``AppRunner`` (already set up, with
    ``keepalive_timeout=idle_timeout``)."""

    def __init__(self, server, runner, idle_timeout: float):
        self.server, self.runner, self.idle_timeout = server, runner, idle_timeout
        self.connections: set[FastHTTP] = set()
        self._listener = None
        self.port: int | None = None

    async def start(self, host: str, port: int, reuse_port: bool) -> int:
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: FastHTTP(self.server, self.runner.server, self.connections, self.idle_timeout), host, port,
            backlog=2048, reuse_address=True, reuse_port=reuse_port or None)
        self.port = self._listener.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        """Stop listening, close this path's connections, then aiohttp's (``runner.cleanup``)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        await self.runner.cleanup()
