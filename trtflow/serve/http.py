"""The KServe v2 / Triton HTTP/REST endpoints on aiohttp.

| method | path                                            | answer                                 |
|--------|-------------------------------------------------|----------------------------------------|
| GET    | /v2/health/live, /v2/health/ready               | 200, or 503 while draining (ready)     |
| GET    | /v2                                             | server metadata and extensions         |
| GET    | /v2/models/{m}[/versions/{v}]                   | model metadata                         |
| GET    | /v2/models/{m}[/versions/{v}]/ready             | 200 / 503                              |
| GET    | /v2/models/{m}[/versions/{v}]/config            | Triton's model config as JSON          |
| GET    | /v2/models/{m}[/versions/{v}]/stats             | Triton's statistics extension          |
| POST   | /v2/models/{m}[/versions/{v}]/infer             | inference (JSON or binary tensors)     |
| POST   | /v2/repository/index                            | the served models                      |
| POST   | /v2/repository/models/{m}/load, .../unload      | 400: models are loaded at start        |
| GET    | /metrics                                        | Prometheus text                        |

Errors are ``{"error": "..."}`` with Triton's status codes; a request whose body stops coming for
the idle timeout is answered 408 and its connection closed. The listening socket belongs to
``fasthttp.Listener``: binary infer requests are answered there; this application gets every other
request, and the connections they arrive on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from trtflow.deps import require
from trtflow.errors import TrtflowError
from trtflow.serve import protocol
from trtflow.serve.protocol import HEADER_LENGTH, ProtocolError, body_stalled, body_too_large

web = require("aiohttp.web", "trtflow serve")

log = logging.getLogger(__name__)

JSON = "application/json"


def _json(data, status: int = 200):
    return web.Response(body=json.dumps(data).encode(), status=status, content_type=JSON)


def _error(message: str, status: int):
    return web.Response(body=protocol.error_body(message), status=status, content_type=JSON)


async def _body(request, limit: int, idle_timeout: float) -> bytes:
    """The request body with one copy at most (none when it came in one piece); 413 above ``limit``,
    408 when the client sends none of it for ``idle_timeout`` seconds."""
    length = request.content_length
    if length is None or "Content-Encoding" in request.headers:
        # chunked or compressed: aiohttp decodes and enforces the limit
        return await _unless_stalled(request, request.read(), idle_timeout)
    if length > limit:
        raise body_too_large(limit)
    try:
        return await _unless_stalled(request, request.content.readexactly(length), idle_timeout)
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError(f"the body ended after {len(exc.partial)} of its {length} bytes (Content-Length)") from None


async def _unless_stalled(request, read, idle_timeout: float) -> bytes:
    """Await ``read`` (a read of the request body) while the client keeps sending; cancel it with a
    408 once no byte came for ``idle_timeout`` seconds (checked four times per timeout)."""
    if request.content.is_eof():  # the whole body is here already
        return await read
    task = asyncio.ensure_future(read)
    loop = asyncio.get_running_loop()
    seen, since = request.content.total_bytes, loop.time()
    try:
        while not (await asyncio.wait((task,), timeout=idle_timeout / 4))[0]:
            if request.content.total_bytes != seen:
                seen, since = request.content.total_bytes, loop.time()
            elif loop.time() - since >= idle_timeout:
                raise body_stalled(idle_timeout)
        return task.result()
    finally:
        task.cancel()  # nothing when it is done; else the handler is leaving (408, client gone)


def make_app(server) -> "web.Application":
    """The aiohttp application for a ``trtflow.serve.server.Server``."""

    @web.middleware
    async def errors_and_log(request, handler):
        start = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # 404 route, 405, 413 from client_max_size
            text = str(body_too_large(server.max_body)) if exc.status == 413 else (exc.reason or "error")
            response = _error(text, exc.status)
        except Exception as exc:  # keep serving; the client sees the reason
            if not isinstance(exc, TrtflowError):
                log.exception("unhandled error on %s", request.path)
            status, message = protocol.error_status(exc)
            response = _error(message, status)
            if status == 408:  # the body stalled: answer, then close now rather than wait for the rest of it
                response.force_close()
                await response.prepare(request)
                await response.write_eof()
                request.protocol.force_close()
        if protocol.ACCESS.isEnabledFor(logging.INFO):
            protocol.log_access(request.remote, request.method, request.path, response.status, start,
                                request.content_length or 0, response.content_length or 0)
        return response

    async def live(request):
        return web.Response(status=200)

    async def ready(request):
        return web.Response(status=503 if server.draining else 200)

    async def server_metadata(request):
        return _json(server.metadata())

    async def model_metadata(request):
        return _json(server.model(request.match_info["model"], request.match_info.get("version")).metadata())

    async def model_ready(request):
        server.model(request.match_info["model"], request.match_info.get("version"))
        return web.Response(status=503 if server.draining else 200)

    async def model_config(request):
        return _json(server.model(request.match_info["model"], request.match_info.get("version")).model_config(server.kind))

    async def model_stats(request):
        await server.refresh_stats()
        return _json(server.statistics(request.match_info.get("model"), request.match_info.get("version")))

    async def infer(request):
        name = request.match_info["model"]
        model = server.model(name, request.match_info.get("version"))
        body = await _body(request, server.max_body, server.options.idle_timeout_s)
        decoded = protocol.decode_infer_request(body, request.headers.get(HEADER_LENGTH))
        protocol.check_outputs(decoded, model.outputs)
        outputs = await server.infer(name, decoded.inputs)
        payload, headers = protocol.encode_infer_response(name, model.version, outputs, decoded, model.batched, model.labels)
        return web.Response(body=payload, headers=headers)

    async def repository_index(request):
        return _json(server.repository_index())

    async def repository_load(request):
        server.model(request.match_info["model"])
        raise ProtocolError("explicit model load/unload is not supported: trtflow serve loads its models at start; "
                            "restart it with the models to serve")

    async def metrics(request):
        await server.refresh_stats()
        return web.Response(text=server.metrics_text(), content_type="text/plain")

    app = web.Application(client_max_size=server.max_body, middlewares=[errors_and_log])
    add = app.router.add_route
    add("GET", "/v2/health/live", live)
    add("GET", "/v2/health/ready", ready)
    add("GET", "/v2", server_metadata)
    add("POST", "/v2/repository/index", repository_index)
    add("GET", "/v2/models/stats", model_stats)
    add("GET", "/metrics", metrics)
    add("POST", "/v2/repository/models/{model}/load", repository_load)
    add("POST", "/v2/repository/models/{model}/unload", repository_load)
    for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        add("GET", base, model_metadata)
        add("GET", base + "/ready", model_ready)
        add("GET", base + "/config", model_config)
        add("GET", base + "/stats", model_stats)
        add("POST", base + "/infer", infer)
    return app
