"""Scale-out on Ray Serve: replicas of a trtflow engine behind Triton's v2 HTTP protocol.

Each replica loads one engine (``ray_actor_options={"num_gpus": 1}`` gives each its own GPU)
and batches requests with ``@serve.batch`` (rows counted with ``batch_size_fn``, so
``max_batch`` is in rows, like ``trtflow serve``); Serve's HTTP proxy routes
``/v2/...`` to the replicas, which speak the same KServe v2 codec as ``trtflow serve``
(``trtflow.serve.protocol``), so ``tritonclient.http`` works unchanged::

    from trtflow.serve.ray import RayServeOptions, deploy
    url = deploy("model.onnx", RayServeOptions(name="model", num_replicas=4, num_gpus=1), address="auto")

Endpoints: ``GET /v2/health/live|ready``, ``GET /v2``, ``GET /v2/models/{m}`` (metadata),
``GET /v2/models/{m}/ready``, ``GET /v2/models/{m}/config``, ``POST /v2/models/{m}/infer``
(JSON and binary tensors, classification). Every answer carries ``trtflow-node`` and
``trtflow-replica`` headers naming the Ray node and the replica that served it; an infer answer
also ``trtflow-batch-rows``, the rows of the engine call that computed it.

ONNX models travel to the replicas as bytes through Ray's object store, so only the driver
needs the file; plans and ``.pt2`` packages are loaded from their path on each node.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from trtflow.deps import require
from trtflow.errors import TrtflowError, UsageError
from trtflow.serve import protocol

log = logging.getLogger(__name__)

INLINE_LIMIT = 1 << 30  # ONNX files up to 1 GiB travel as bytes
_OK = b"{}"  # the body of the health and ready answers


@dataclass
class RayServeOptions:
    """One model deployed on Ray Serve.

    Attributes:
        name: the model name in URLs; also the Serve application and deployment name.
        engine: trtflow engine of each replica ("auto", "ort", "torch", "tensorrt").
        engine_options: options for ``trtflow.load`` in each replica.
        ort_options: more options for ``trtflow.load`` when a replica's engine is ONNX Runtime
            ("auto" is resolved on the replica's node), e.g. ``threads`` and ``spinning``.
        max_batch: most rows per engine call (``@serve.batch`` ``max_batch_size``); 0: no batching.
        batch_wait_timeout_s: how long a batch waits for more requests.
        timeout_s: a request not answered within this time is answered 503.
        num_replicas: replicas, or None with ``autoscaling``.
        autoscaling: Serve's ``autoscaling_config`` (``min_replicas``, ``max_replicas``,
            ``target_ongoing_requests``, ...); replaces ``num_replicas``.
        num_gpus: GPUs per replica (1: one engine per GPU); 0 on CPU.
        num_cpus: CPUs per replica.
        max_ongoing_requests: requests a replica holds at once (Serve queues the rest).
        max_queued_requests: requests queued at each Serve proxy (or handle) for a replica before
            more are answered 503 (Serve's ``max_queued_requests``); -1: no limit.
        graceful_shutdown_timeout_s: how long a stopping replica waits for its running requests
            (Serve's ``graceful_shutdown_timeout_s``).
        max_body: request body limit in bytes; larger bodies are answered 413.
        labels: class labels for the classification extension.
        route_prefix: where the application is mounted: ``/`` serves every ``/v2/...`` path;
            ``/v2/models/{name}`` mounts a second model beside the one at ``/``.
    """

    name: str = "model"
    engine: str = "auto"
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    ort_options: Mapping[str, Any] = field(default_factory=dict)
    max_batch: int = 32
    batch_wait_timeout_s: float = 0.002
    timeout_s: float = 30.0
    num_replicas: int | None = 1
    autoscaling: Mapping[str, Any] | None = None
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    max_ongoing_requests: int = 256
    max_queued_requests: int = -1
    graceful_shutdown_timeout_s: float = 20.0
    max_body: int = 64 << 20
    labels: Sequence[str] | None = None
    route_prefix: str = "/"

    def deployment_options(self) -> dict:
        """Keyword arguments of ``serve.deployment`` / ``.options``."""
        if self.max_batch < 0:
            raise UsageError(f"max_batch is {self.max_batch}; give 0 (no batching) or more")
        opts: dict[str, Any] = {
            "name": self.name,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
        }
        if self.autoscaling:
            opts["autoscaling_config"] = dict(self.autoscaling)
        else:
            if not self.num_replicas or self.num_replicas < 1:
                raise UsageError("num_replicas must be >= 1 (or give an autoscaling config)")
            opts["num_replicas"] = self.num_replicas
        return opts


def _response(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None):
    from starlette.responses import Response

    headers = dict(headers or {})
    media = headers.pop("Content-Type", "application/json")
    return Response(content=body, status_code=status, headers=headers, media_type=media)


class TrtflowReplica:
    """The body of one Serve replica: an engine, its ``ServedModel`` view and a row batcher.

    Args:
        model: ONNX bytes, or a path readable on the replica's node.
        options: the deployment's options.
    """

    def __init__(self, model: Any, options: RayServeOptions):
        ray = require("ray", "trtflow.serve.ray")
        serve = require("ray.serve", "trtflow.serve.ray")
        from trtflow.backends import engine_name, load
        from trtflow.serve.model import BatchConfig, ServedModel, instance_kind

        engine = engine_name(options.engine, model)
        extra = options.ort_options if engine == "ort" else {}
        self.engine = load(model, engine, **{**options.engine_options, **extra})
        # delay_us: what the config reports (Serve's batcher does the waiting)
        config = BatchConfig(max_batch=options.max_batch, delay_us=round(options.batch_wait_timeout_s * 1e6),
                             timeout_s=options.timeout_s)
        self.model = ServedModel(options.name, [self.engine], config, options.labels)
        self.kind = instance_kind([self.model])
        self.node = ray.get_runtime_context().get_node_id()
        context = serve.get_replica_context()
        self.replica = getattr(getattr(context, "replica_id", None), "unique_id", "") or str(id(self))
        self._headers = {"trtflow-node": self.node, "trtflow-replica": self.replica}  # on every answer
        self.calls = 0
        self.max_body = options.max_body
        self._batched = serve.batch(
            max_batch_size=max(1, self.model.max_batch), batch_wait_timeout_s=options.batch_wait_timeout_s,
            batch_size_fn=lambda items: sum(rows for _, rows, _ in items),
        )(self._run_batch)

    # -- batching ---------------------------------------------------------------------------
    async def _run_batch(self, items: list[tuple[dict, int, tuple]]) -> list[Any]:
        """Run the requests of one Serve batch: one engine call per group of equal non-batch
        shapes; each request gets (its rows of the outputs, the rows of that call), or the
        exception its group raised."""
        from trtflow.serve.batcher import merge, split

        results: list[Any] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (_, _, key) in enumerate(items):
            groups.setdefault(key if self.model.batched else (i,), []).append(i)
        for members in groups.values():
            merged = merge([items[i][0] for i in members])
            rows = [items[i][1] for i in members]
            try:
                outputs = await asyncio.to_thread(self.engine.infer, merged)
                self.calls += 1
                parts = split(outputs, rows)  # EngineError: an output whose dim 0 is not the batch
            except Exception as exc:  # handed to each request of the group
                for i in members:
                    results[i] = exc
                continue
            total = sum(rows)
            for i, part in zip(members, parts):
                results[i] = (part, total)
        return results

    # -- HTTP -------------------------------------------------------------------------------
    async def __call__(self, request: Any):
        try:
            body, status, extra = await self._route(request)
        except Exception as exc:  # an engine failure: the client sees it, the replica lives on
            if not isinstance(exc, TrtflowError):
                log.exception("inference failed")
            status, message = protocol.error_status(exc)
            body, extra = protocol.error_body(message), {}
        return _response(body, status, {**extra, **self._headers})

    async def _route(self, request: Any) -> tuple[bytes, int, dict]:
        parts = [p for p in request.url.path.split("/") if p]
        if parts[:1] != ["v2"]:  # mounted at /v2/models/{name} with the prefix stripped
            parts = ["v2", "models", self.model.name, *parts]
        method = request.method.upper()
        if method == "GET" and parts in (["v2", "health", "live"], ["v2", "health", "ready"]):
            return _OK, 200, {}
        if method == "GET" and parts == ["v2"]:
            from trtflow import __version__

            doc = {"name": "trtflow-ray", "version": __version__, "extensions": ["binary_tensor_data", "classification"]}
            return json.dumps(doc).encode(), 200, {}
        if len(parts) < 3 or parts[1] != "models":
            raise protocol.ProtocolError(f"no route {request.url.path}", 404)
        name = parts[2]
        rest = parts[3:]
        if name != self.model.name:
            raise protocol.ProtocolError(f"unknown model '{name}'; this deployment serves '{self.model.name}'", 404)
        if rest[:1] == ["versions"]:  # as trtflow serve: only the served version answers
            if len(rest) < 2:
                raise protocol.ProtocolError(f"no route {method} {request.url.path}", 404)
            if rest[1] != self.model.version:
                raise protocol.ProtocolError(f"model '{name}' has no version '{rest[1]}'; it serves version "
                                             f"{self.model.version}", 404)
            rest = rest[2:]
        if method == "GET" and rest == []:
            return json.dumps(self.model.metadata()).encode(), 200, {}
        if method == "GET" and rest == ["ready"]:
            return _OK, 200, {}
        if method == "GET" and rest == ["config"]:
            return json.dumps(self.model.model_config(self.kind)).encode(), 200, {}
        if method == "POST" and rest == ["infer"]:
            return await self._infer(await self._body(request), request.headers.get(protocol.HEADER_LENGTH))
        raise protocol.ProtocolError(f"no route {method} {request.url.path}", 404)

    async def _body(self, request: Any) -> bytes:
        """The request body; 413 above ``max_body`` (before reading it when Content-Length says so)."""
        limit = self.max_body
        length = request.headers.get("content-length", "")
        if not (length.isdigit() and int(length) > limit):
            body = await request.body()
            if len(body) <= limit:
                return body
        raise protocol.body_too_large(limit)

    async def _infer(self, body: bytes, header_length: str | None) -> tuple[bytes, int, dict]:
        decoded = protocol.decode_infer_request(body, header_length)
        protocol.check_outputs(decoded, self.model.outputs)
        feed, rows, key = self.model.prepare(decoded.inputs)
        timeout = self.model.config.timeout_s
        try:
            answer = await asyncio.wait_for(self._batched((feed, rows, key)), timeout)
        except asyncio.TimeoutError:  # Serve's batcher drops the cancelled request
            message = f"request timeout expired: no answer from model '{self.model.name}' within {timeout:g} s"
            raise protocol.ProtocolError(message, 503) from None
        if isinstance(answer, Exception):
            raise answer
        outputs, batch_rows = answer
        out, headers = protocol.encode_infer_response(self.model.name, self.model.version, outputs, decoded,
                                                      self.model.batched, self.model.labels)
        return out, 200, {**headers, "trtflow-batch-rows": str(batch_rows)}

    def stats(self) -> dict:
        """Engine calls made and where this replica runs (for tests and dashboards)."""
        return {"node": self.node, "replica": self.replica, "calls": self.calls}


def model_payload(model: str | os.PathLike | bytes) -> Any:
    """What a replica loads: ONNX files as bytes (no shared file system needed), else the path.

    Raises:
        UsageError: a path that does not exist here.
    """
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    path = Path(model)
    if not path.exists():
        raise UsageError(f"model not found: {path}")
    if path.suffix.lower() == ".onnx" and path.stat().st_size <= INLINE_LIMIT:
        return path.read_bytes()
    return str(path.resolve())


def build_app(model: str | os.PathLike | bytes, options: RayServeOptions = RayServeOptions()) -> Any:
    """The Serve application (``serve.run`` it, or write it in a Serve config).

    Raises:
        MissingDependencyError: Ray Serve is not installed.
        UsageError: bad options or a missing model file.
    """
    serve = require("ray.serve", "trtflow.serve.ray")
    deployment = serve.deployment(TrtflowReplica).options(**options.deployment_options())
    return deployment.bind(model_payload(model), options)


def deploy(model: str | os.PathLike | bytes, options: RayServeOptions = RayServeOptions(),
           address: str | None = "auto", host: str | None = None, port: int | None = None) -> str:
    """Deploy ``model`` on a Ray cluster and return the HTTP base URL of Serve's proxy.

    Args:
        model: an ONNX file (shipped as bytes), or a plan / ``.pt2`` path present on every node.
        options: replicas, GPUs, batching.
        address: the cluster ("auto": the local one started with ``ray start``;
            ``ray://HEAD:10001`` for a remote one; None starts a local Ray in this process).
        host, port: where Serve's HTTP proxy listens. Serve fixes them when it starts (None:
            127.0.0.1 and 8000); while it runs, None takes the running ones and others are refused.

    A ``route_prefix`` another application already holds (``/`` of an earlier deployment) falls
    back to ``/v2/models/{name}``, where the v2 model paths still reach this model.

    Returns:
        ``http://host:port`` of the running proxy; the model answers at ``/v2/models/{name}/infer``.

    Raises:
        MissingDependencyError: Ray Serve is not installed.
        UsageError: the cluster cannot be reached, Serve runs there on another host or port, or
            bad options.
    """
    ray = require("ray", "trtflow.serve.ray")
    serve = require("ray.serve", "trtflow.serve.ray")
    if not ray.is_initialized():
        try:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(f"cannot reach the Ray cluster at '{address}': {exc}. Start one with "
                             "'ray start --head' or give its address (ray://HEAD:10001)") from None
    from ray.serve.context import _get_global_client  # Serve has no public reader of its HTTP options

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        serve.start(http_options={"host": host or "127.0.0.1", "port": 8000 if port is None else port})
        client = _get_global_client()
    running = (client.http_config.host, client.http_config.port)
    asked = (host or running[0], running[1] if port is None else port)
    if asked != running:
        raise UsageError(f"Ray Serve already runs on this cluster with its HTTP proxy on {running[0]}:{running[1]}, "
                         f"fixed while it runs; {asked[0]}:{asked[1]} was asked for (--host/--http-port). Deploy "
                         f"there (--host {running[0]} --http-port {running[1]}, or drop the flags), or stop Serve "
                         "first ('serve shutdown'; it removes every application) to start it on the new address")
    try:
        serve.run(build_app(model, options), name=options.name, route_prefix=options.route_prefix)
    except Exception as exc:  # Serve raises RayTaskError(RayServeException) for a taken route prefix
        own = f"/v2/models/{options.name}"
        if "prefix" not in str(exc).lower() or options.route_prefix == own:
            raise
        log.warning("route prefix %s is taken by another application; mounting %s at %s",
                    options.route_prefix, options.name, own)
        serve.run(build_app(model, options), name=options.name, route_prefix=own)
    return f"http://{running[0]}:{running[1]}"
