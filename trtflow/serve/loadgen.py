"""A closed-loop load generator in perf_analyzer's terms: C clients each send one request, wait for
the answer, send the next; per concurrency level, throughput and p50/p90/p95/p99 latency of the
requests completed inside the measurement window, and errors by status.

The request is encoded once (binary tensors by default) and sent over raw keep-alive HTTP/1.1
connections (one per client, asyncio streams) or one gRPC channel, so the client costs a few tens
of microseconds per request. ``processes > 1`` splits the clients over several processes for
servers faster than one client core.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Mapping
from urllib.parse import quote, urlparse

import numpy as np

from trtflow.errors import UsageError
from trtflow.progress import Progress
from trtflow.serve import protocol
from trtflow.spec import TensorSpec


@dataclass(frozen=True)
class LoadConfig:
    """One load run.

    Attributes:
        url: the server, ``host:port`` or ``http://host:port`` (the gRPC port for ``grpc``).
        model: model name.
        concurrency: client counts, one measurement each.
        duration_s: measurement window per level.
        warmup_s: seconds of load before each window (requests ending then are not counted).
        shapes: input name -> shape including the batch dim (default: batch 1, model dims).
        protocol: "http" or "grpc".
        binary: binary tensor extension (HTTP); False sends JSON tensors.
        processes: processes the clients are spread over.
        seed: seed of the random input values.
        metadata_url: the HTTP server to read the model's metadata from (default: ``url``;
            a ``grpc`` run without it reads the metadata over gRPC).
    """

    url: str
    model: str
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    duration_s: float = 5.0
    warmup_s: float = 1.0
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    protocol: str = "http"
    binary: bool = True
    processes: int = 1
    seed: int = 0
    metadata_url: str | None = None


@dataclass
class LevelResult:
    """Figures of one concurrency level (latencies in ms)."""

    concurrency: int
    requests: int
    errors: int
    throughput: float  # completed requests per second
    infer_per_s: float  # rows per second (requests x batch)
    p50: float
    p90: float
    p95: float
    p99: float
    mean: float
    max: float
    statuses: dict

    def to_dict(self) -> dict:
        return asdict(self)


def _split(url: str) -> tuple[str, int]:
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if not parsed.hostname or not parsed.port:
        raise UsageError(f"bad server URL '{url}': expected HOST:PORT, e.g. 127.0.0.1:8000")
    return parsed.hostname, parsed.port


def model_inputs(config: LoadConfig) -> tuple[dict[str, np.ndarray], int]:
    """Random inputs from the model's metadata (HTTP), shaped by ``shapes``; and the batch size."""
    host, port = _split(config.metadata_url or config.url)
    if config.protocol == "grpc" and not config.metadata_url:
        meta = _grpc_metadata(host, port, config.model)
    else:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/v2/models/{quote(config.model, safe='')}", timeout=10) as r:
                meta = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            raise UsageError(f"the server at {host}:{port} refused model '{config.model}': {exc.read().decode()[:300]}") from None
        except OSError as exc:
            raise UsageError(f"cannot reach {host}:{port}: {exc}; is trtflow serve running there?") from None
    _check_shapes(config, meta["inputs"])
    rng = np.random.default_rng(config.seed)
    feed, batch = {}, 1
    for item in meta["inputs"]:
        shape = tuple(config.shapes.get(item["name"]) or [1 if int(d) < 0 else int(d) for d in item["shape"]])
        if any(int(d) < 0 for d in item["shape"][1:]) and item["name"] not in config.shapes:
            raise UsageError(f"input '{item['name']}' has dynamic dims {item['shape']}; give its shape with --shapes")
        dtype = protocol.numpy_dtype(item["datatype"])
        if dtype == object:
            feed[item["name"]] = np.array([b"x" * 16] * int(np.prod(shape)), dtype=object).reshape(shape)
        elif dtype.kind == "f":
            feed[item["name"]] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[item["name"]] = rng.integers(0, 2, shape).astype(dtype)
        batch = shape[0] if shape else 1
    return feed, batch


def _check_shapes(config: LoadConfig, inputs: list[dict]) -> None:
    """Refuse shapes every request would be refused for (or that would be left out), before any load:
    a name that is no input of the model, another rank, or another size of a fixed dim."""
    dims = {item["name"]: [int(d) for d in item["shape"]] for item in inputs}
    for name, shape in config.shapes.items():
        if name not in dims:
            raise UsageError(f"--shapes names '{name}', which is not an input of model '{config.model}'; "
                             f"its inputs are {list(dims)}")
        spec = TensorSpec(name, "float32", tuple("?" if w < 0 else w for w in dims[name]))  # the dtype is not checked
        if not spec.takes(shape):
            shaped = "x".join(map(str, spec.shape)) or "a scalar"
            raise UsageError(f"--shapes {name}:{'x'.join(map(str, shape))} does not fit input '{name}' of model "
                             f"'{config.model}', shaped {shaped} (? any size): every request would be refused")


def _grpc_metadata(host: str, port: int, model: str) -> dict:
    import grpc
    from google.protobuf import json_format
    from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        try:
            meta = pb_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=10)
        except grpc.RpcError as exc:
            raise UsageError(f"the gRPC server at {host}:{port} refused model '{model}': {exc.details()}") from None
    return json_format.MessageToDict(meta, preserving_proto_field_name=True)


def http_request(host: str, port: int, model: str, feed: Mapping[str, np.ndarray], binary: bool = True) -> bytes:
    """One complete HTTP/1.1 keep-alive infer request (headers + body), encoded once."""
    inputs, blobs = [], []
    for name, arr in feed.items():
        item = {"name": name, "shape": list(arr.shape), "datatype": protocol.triton_dtype(arr.dtype)}
        if binary:
            raw = protocol.raw_from_array(arr)
            item["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            item["data"] = [b.decode() for b in arr.reshape(-1)] if arr.dtype == object else arr.reshape(-1).tolist()
        inputs.append(item)
    head = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": binary}}).encode()
    body = head + b"".join(blobs)
    # the model name quoted: a space, '/' or 'é' in it made no request line (or an internal error)
    lines = [f"POST /v2/models/{quote(model, safe='')}/infer HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    if binary:
        lines += [f"{protocol.HEADER_LENGTH}: {len(head)}", "Content-Type: application/octet-stream"]
    else:
        lines.append("Content-Type: application/json")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _http_client(host: str, port: int, request: bytes, until: float, out: list) -> None:
    reader = writer = None
    while True:
        now = time.perf_counter()
        if now >= until:
            break
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                key = key.strip().lower()
                if key == b"content-length":
                    length = int(value)
                elif key == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
            out.append((start, time.perf_counter(), status))
            if close:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError):
            out.append((now, time.perf_counter(), 0))  # 0: connection error
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


GRPC_STATUS = {"OK": 200, "INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 413, "UNAVAILABLE": 503}


async def _grpc_clients(host: str, port: int, model: str, feed: Mapping[str, np.ndarray], clients: int,
                        until: float, out: list) -> None:
    import grpc
    from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name=model)
    for name, arr in feed.items():
        request.inputs.add(name=name, datatype=protocol.triton_dtype(arr.dtype), shape=list(arr.shape))
        request.raw_input_contents.append(protocol.raw_from_array(arr))
    limit = 1 << 30
    async with grpc.aio.insecure_channel(f"{host}:{port}", options=[("grpc.max_receive_message_length", limit),
                                                                   ("grpc.max_send_message_length", limit)]) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def client() -> None:
            while time.perf_counter() < until:
                start = time.perf_counter()
                try:
                    await stub.ModelInfer(request)
                    status = 200
                except grpc.aio.AioRpcError as exc:
                    status = GRPC_STATUS.get(exc.code().name, 500)
                out.append((start, time.perf_counter(), status))

        await asyncio.gather(*(client() for _ in range(clients)))


def _drive(args: tuple) -> list:
    """One process's clients; returns (start, end, status) per request (perf_counter, this host)."""
    kind, host, port, model, payload, clients, until_wall = args
    until = time.perf_counter() + (until_wall - time.time())
    out: list = []

    async def main() -> None:
        if kind == "grpc":
            await _grpc_clients(host, port, model, payload, clients, until, out)
        else:
            await asyncio.gather(*(_http_client(host, port, payload, until, out) for _ in range(clients)))

    asyncio.run(main())
    offset = time.time() - time.perf_counter()
    return [(s + offset, e + offset, st) for s, e, st in out]


def _wait(barrier) -> None:
    """Pool initializer: tell the parent this process is up (and has imported this module)."""
    barrier.wait(timeout=120)


def run_level(config: LoadConfig, concurrency: int, payload, batch: int) -> LevelResult:
    """Measure one concurrency level."""
    host, port = _split(config.url)
    procs = max(1, min(config.processes, concurrency))
    shares = [concurrency // procs + (i < concurrency % procs) for i in range(procs)]

    def clock() -> tuple[float, float, list]:  # the window starts when every client can start
        start = time.time()
        until = start + config.warmup_s + config.duration_s
        return start, until, [(config.protocol, host, port, config.model, payload, n, until) for n in shares]

    if procs == 1:
        start, until, jobs = clock()
        records = _drive(jobs[0])
    else:
        context = multiprocessing.get_context("spawn")
        ready = context.Barrier(procs + 1)
        with context.Pool(procs, initializer=_wait, initargs=(ready,)) as pool:
            ready.wait(timeout=120)  # every process started (a spawn takes a second or more): then the clock starts
            start, until, jobs = clock()
            records = [r for part in pool.map(_drive, jobs, chunksize=1) for r in part]
    lo, hi = start + config.warmup_s, until
    window = [(e - s, st) for s, e, st in records if lo <= e <= hi]
    ok = np.array([lat for lat, st in window if st == 200]) * 1e3
    statuses: dict = {}
    for _, st in window:
        statuses[str(st)] = statuses.get(str(st), 0) + 1
    q = np.percentile(ok, [50, 90, 95, 99]) if ok.size else [float("nan")] * 4
    return LevelResult(concurrency, int(ok.size), len(window) - int(ok.size), ok.size / config.duration_s,
                       ok.size * batch / config.duration_s, *map(float, q),
                       float(ok.mean()) if ok.size else float("nan"), float(ok.max()) if ok.size else float("nan"),
                       statuses)


def run_load(config: LoadConfig, progress: Progress | None = None) -> list[LevelResult]:
    """Run every concurrency level of ``config``.

    Returns:
        One ``LevelResult`` per level.

    Raises:
        UsageError: a bad URL, an unreachable server, an unknown model, or missing shapes.
    """
    if config.protocol not in ("http", "grpc"):
        raise UsageError(f"protocol '{config.protocol}': choose http or grpc")
    if not config.concurrency or min(config.concurrency) < 1 or config.duration_s <= 0:
        raise UsageError("concurrency levels must be >= 1 and the duration positive")
    feed, batch = model_inputs(config)
    host, port = _split(config.url)
    payload = feed if config.protocol == "grpc" else http_request(host, port, config.model, feed, config.binary)
    results = []
    for i, level in enumerate(config.concurrency):
        if progress:
            progress(f"concurrency {level}", i, len(config.concurrency))
        results.append(run_level(config, level, payload, batch))
    return results
