"""trtflow serve against the real tritonclient (HTTP and gRPC) on 127.0.0.1: every endpoint, JSON and
binary tensors, classification (BYTES outputs), Triton's errors, dynamic batching seen in /metrics,
503 on a full queue and on a timeout, and a short soak at 64 concurrent clients."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aiohttp")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")

import trtflow  # noqa: E402
from trtflow.serve import metrics, protocol  # noqa: E402
from trtflow.serve.model import BatchConfig, ServedModel  # noqa: E402
from trtflow.serve.server import BackgroundServer, ServeOptions, Server  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402


def affine_model() -> bytes:
    """x (batch, 4) float32 -> y = 2x + 1 (batch, 4), s = sum(x, 1) (batch,)."""
    import onnx
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    nodes = [h.make_node("Mul", ["x", "two"], ["m"]), h.make_node("Add", ["m", "one"], ["y"]),
             h.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0)]
    inits = [nh.from_array(np.array(2, np.float32), "two"), nh.from_array(np.array(1, np.float32), "one"),
             nh.from_array(np.array([1], np.int64), "axes")]
    g = h.make_graph(nodes, "affine", [h.make_tensor_value_info("x", T.FLOAT, ["batch", 4])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["batch", 4]), h.make_tensor_value_info("s", T.FLOAT, ["batch"])],
                     inits)
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def slow_model(n: int = 1024, k: int = 12) -> bytes:
    """x (batch, n) -> k x (MatMul, Tanh): about 10 ms a call on a CPU whatever the batch up to 8."""
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    w = nh.from_array((np.random.default_rng(0).standard_normal((n, n)) / np.sqrt(n)).astype(np.float32), "w")
    nodes, cur = [], "x"
    for i in range(k):
        nodes += [h.make_node("MatMul", [cur, "w"], [f"m{i}"]), h.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        cur = f"t{i}"
    nodes.append(h.make_node("Identity", [cur], ["y"]))
    g = h.make_graph(nodes, "slow", [h.make_tensor_value_info("x", T.FLOAT, ["batch", n])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["batch", n])], [w])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture(scope="module")
def server():
    affine = trtflow.load(affine_model(), engine="ort")
    slow = [trtflow.load(slow_model(), engine="ort", threads=1) for _ in range(2)]
    models = [ServedModel("affine", [affine], BatchConfig(max_batch=8), labels=["a", "b", "c", "d"]),
              ServedModel("slow", slow, BatchConfig(max_batch=8, delay_us=20000))]
    with BackgroundServer(models, ServeOptions(http_port=0, grpc_port=0, max_body=1 << 20)) as s:
        yield s


def _url(s, path: str = "") -> str:
    return f"http://127.0.0.1:{s.http_port}{path}"


def _get(s, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(_url(s, path), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(s, path: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(_url(s, path), data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _healthy(s) -> None:
    assert _get(s, "/v2/health/live")[0] == 200 and _get(s, "/v2/health/ready")[0] == 200


def _metric(s, name: str, model: str) -> float:
    return metrics.parse(_get(s, "/metrics")[1].decode())[f'{name}{{model="{model}",version="1"}}']


def test_http_health_metadata_config_index(server):
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("affine") and c.is_model_ready("affine", "1")
    assert "binary_tensor_data" in c.get_server_metadata()["extensions"]
    meta = c.get_model_metadata("affine")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {"y": [-1, 4], "s": [-1]}
    assert c.get_model_metadata("affine", "1") == meta
    config = c.get_model_config("affine")
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [4] and config["output"][1]["dims"] == []
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 0
    assert c.get_model_config("slow")["dynamic_batching"]["max_queue_delay_microseconds"] == 20000
    assert {m["name"] for m in c.get_model_repository_index()} == {"affine", "slow"}
    stats = c.get_inference_statistics("affine")["model_stats"][0]
    assert stats["name"] == "affine" and "success" in stats["inference_stats"]
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    json_format.ParseDict(config, model_config_pb2.ModelConfig())  # Triton's own schema takes it


@pytest.mark.parametrize("binary", [True, False])
def test_http_infer_matches_engine(server, binary):
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    i = httpclient.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=binary)
    outs = [httpclient.InferRequestedOutput("y", binary_data=binary), httpclient.InferRequestedOutput("s", binary_data=binary)]
    r = c.infer("affine", [i], outputs=outs, request_id="r1")
    np.testing.assert_allclose(r.as_numpy("y"), 2 * x + 1, rtol=1e-6)
    np.testing.assert_allclose(r.as_numpy("s"), x.sum(1), rtol=1e-5)
    assert r.get_response()["id"] == "r1"
    only = c.infer("affine", [i], outputs=[httpclient.InferRequestedOutput("s", binary_data=binary)])
    assert only.as_numpy("y") is None and only.as_numpy("s").shape == (3,)


@pytest.mark.parametrize("binary", [True, False])
def test_http_classification_bytes_output(server, binary):
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    x = np.array([[0.1, 0.9, 0.5, -1.0], [3.0, 0.0, 1.0, 2.0]], np.float32)
    i = httpclient.InferInput("x", [2, 4], "FP32")
    i.set_data_from_numpy(x, binary_data=binary)
    r = c.infer("affine", [i], outputs=[httpclient.InferRequestedOutput("y", binary_data=binary, class_count=2)])
    top = r.as_numpy("y")
    assert top.shape == (2, 2)
    assert [t.decode() if isinstance(t, bytes) else t for t in top[1]] == ["7.000000:0:a", "5.000000:3:d"]


def _grpc_fails(c, model: str, x: np.ndarray, datatype: str, status: str, match: str | None = None) -> None:
    """A gRPC infer of ``x`` as input "x" fails with ``status`` (and a message matching ``match``)."""
    inp = grpcclient.InferInput("x", list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match=match) as err:
        c.infer(model, [inp])
    assert status in str(err.value.status())


def test_grpc_endpoints_and_infer(server):
    c = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("affine")
    assert c.get_server_metadata().name == "trtflow"
    assert [i.name for i in c.get_model_metadata("affine").inputs] == ["x"]
    cfg = c.get_model_config("affine").config
    assert cfg.max_batch_size == 8 and list(cfg.input[0].dims) == [4]
    assert {m.name for m in c.get_model_repository_index().models} == {"affine", "slow"}
    assert c.get_inference_statistics("affine").model_stats[0].name == "affine"
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    i = grpcclient.InferInput("x", [2, 4], "FP32")
    i.set_data_from_numpy(x)
    r = c.infer("affine", [i])
    np.testing.assert_allclose(r.as_numpy("y"), 2 * x + 1)
    top = c.infer("affine", [i], outputs=[grpcclient.InferRequestedOutput("y", class_count=1)]).as_numpy("y")
    assert top.shape == (2, 1) and top[0, 0].decode() == "7.000000:3:d"
    _grpc_fails(c, "nope", x, "FP32", "NOT_FOUND", "unknown model")
    _grpc_fails(c, "affine", np.zeros((2, 5), np.float32), "FP32", "INVALID_ARGUMENT", "dim 1 is 5")
    assert c.is_server_ready()


def test_bytes_tensors_round_trip_through_tritonclient_encoding():
    from tritonclient.http._utils import _get_inference_request

    words = np.array([[b"alpha", b""], [b"\xff\x00", b"z" * 300]], dtype=object)
    i = httpclient.InferInput("w", [2, 2], "BYTES")
    i.set_data_from_numpy(words, binary_data=True)
    j = httpclient.InferInput("v", [2], "BYTES")
    j.set_data_from_numpy(np.array([b"json", b"text"], dtype=object), binary_data=False)
    body, length = _get_inference_request([i, j], "", None, 0, False, False, 0, None, None)
    req = protocol.decode_infer_request(body if isinstance(body, bytes) else body.encode(), length)
    assert req.inputs["w"].tolist() == words.tolist() and req.inputs["v"].tolist() == [b"json", b"text"]
    payload, headers = protocol.encode_infer_response("m", "1", {"w": req.inputs["w"]}, protocol.InferRequest({}, binary_output=True))
    result = httpclient.InferResult.from_response_body(payload, False, int(headers[protocol.HEADER_LENGTH]))
    assert result.as_numpy("w").tolist() == words.tolist()


def _json_body(x, datatype="FP32", shape=None) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": list(shape or np.shape(x)), "datatype": datatype,
                                   "data": np.asarray(x).reshape(-1).tolist()}]}).encode()


@pytest.mark.parametrize("case, status, message", [
    ("malformed", 400, "malformed JSON"),
    ("wrong_dtype", 400, "float64"),
    ("bytes_to_float", 400, "'x'"),
    ("wrong_shape", 400, "dim 1 is 3"),
    ("count_mismatch", 400, "needs 8"),
    ("too_big_batch", 400, "1..8"),
    ("unknown_model", 404, "unknown model"),
    ("unknown_version", 404, "no version"),
    ("unknown_output", 400, "unknown output"),
    ("repeated_output", 400, "output 'y' is requested more than once"),
    ("huge_body", 413, "too large"),
    ("bad_binary_size", 400, "binary"),
])
def test_http_errors_are_triton_errors_and_server_stays_healthy(server, case, status, message):
    path, headers = "/v2/models/affine/infer", {}
    if case == "malformed":
        body = b'{"inputs": [}'
    elif case == "wrong_dtype":
        body = _json_body(np.ones((1, 4)), "FP64")
    elif case == "bytes_to_float":
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}).encode()
    elif case == "wrong_shape":
        body = _json_body(np.ones((1, 3)))
    elif case == "count_mismatch":
        body = _json_body(np.ones(3), shape=[2, 4])
    elif case == "too_big_batch":
        body = _json_body(np.ones((9, 4)))
    elif case == "unknown_model":
        path, body = "/v2/models/nope/infer", _json_body(np.ones((1, 4)))
    elif case == "unknown_version":
        path, body = "/v2/models/affine/versions/7/infer", _json_body(np.ones((1, 4)))
    elif case == "unknown_output":
        doc = json.loads(_json_body(np.ones((1, 4))))
        doc["outputs"] = [{"name": "zzz"}]
        body = json.dumps(doc).encode()
    elif case == "repeated_output":  # Triton refuses it; y was answered twice
        doc = json.loads(_json_body(np.ones((1, 4))))
        doc["outputs"] = [{"name": "y"}, {"name": "y"}]
        body = json.dumps(doc).encode()
    elif case == "huge_body":
        body = _json_body(np.ones((1, 4))) + b" " * (2 << 20)
    else:
        head = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                       "parameters": {"binary_data_size": 16}}]}).encode()
        body, headers = head + b"\0" * 8, {protocol.HEADER_LENGTH: str(len(head))}
    code, text = _post(server, path, body, headers)
    assert code == status
    assert message in json.loads(text)["error"]
    _healthy(server)
    assert _get(server, "/v2/models/nope")[0] == 404


def test_batching_merges_concurrent_requests(server):
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}", concurrency=16)
    engine = trtflow.load(slow_model(), engine="ort", threads=1)
    xs = [np.random.default_rng(i).standard_normal((1, 1024)).astype(np.float32) for i in range(16)]
    before = _metric(server, "nv_inference_exec_count", "slow")
    results = []
    for x in xs:
        i = httpclient.InferInput("x", [1, 1024], "FP32")
        i.set_data_from_numpy(x)
        results.append(c.async_infer("slow", [i]))
    outs = [r.get_result().as_numpy("y") for r in results]
    executions = _metric(server, "nv_inference_exec_count", "slow") - before
    assert executions < len(xs), f"{executions} executions for {len(xs)} concurrent requests: nothing was batched"
    for x, out in zip(xs, outs):
        np.testing.assert_allclose(out, engine.infer({"x": x})["y"], rtol=1e-4, atol=1e-5)
    text = _get(server, "/metrics")[1].decode()
    hist = metrics.parse(text)
    assert hist['trtflow_inference_batch_size_sum{model="slow",version="1"}'] >= 16
    assert _metric(server, "nv_inference_compute_infer_duration_us", "slow") > 0


def _slow_server(k: int = 12, **config):
    engine = trtflow.load(slow_model(k=k), engine="ort", threads=1)
    return BackgroundServer([ServedModel("slow", [engine], BatchConfig(**config))], ServeOptions(http_port=0, grpc_port=None))


def test_full_queue_answers_503_and_recovers():
    with _slow_server(k=48, max_batch=1, max_queue=2) as s:  # about 50 ms a request: the queue fills
        codes, errors = [], []
        body = _json_body(np.ones((1, 1024)))

        def one():
            code, text = _post(s, "/v2/models/slow/infer", body)
            codes.append(code)
            if code != 200:
                errors.append(json.loads(text)["error"])

        threads = [threading.Thread(target=one) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(codes) == 16 and set(codes) <= {200, 503}
        assert codes.count(503) >= 1 and codes.count(200) >= 1
        assert all("queued" in e for e in errors)
        assert _post(s, "/v2/models/slow/infer", body)[0] == 200
        assert _metric(s, "nv_inference_request_failure", "slow") == codes.count(503)


def test_request_timeout_answers_503():
    with _slow_server(max_batch=1, timeout_s=0.001) as s:
        code, text = _post(s, "/v2/models/slow/infer", _json_body(np.ones((1, 1024))))
        assert code == 503 and "timeout" in json.loads(text)["error"]
        _healthy(s)


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


def test_soak_64_clients_nothing_lost(server):
    from trtflow.serve.loadgen import http_request

    request = http_request("127.0.0.1", server.http_port, "affine", {"x": np.ones((1, 4), np.float32)})
    per_client, clients = 50, 64

    async def client(counts: dict) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
        for _ in range(per_client):
            counts["sent"] += 1
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(v for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")) if k.lower() == b"content-length"))
            await reader.readexactly(length)
            counts[int(head[9:12])] = counts.get(int(head[9:12]), 0) + 1
        writer.close()

    async def soak(clients: int) -> dict:
        counts = {"sent": 0}
        await asyncio.gather(*(client(counts) for _ in range(clients)))
        return counts

    asyncio.run(soak(8))  # warm up allocations
    rss = _rss_kb()
    counts = asyncio.run(soak(clients))
    answered = sum(v for k, v in counts.items() if k != "sent")
    assert counts["sent"] == answered == per_client * clients
    assert set(counts) - {"sent"} <= {200, 503}
    assert counts.get(200, 0) > 0.9 * answered
    assert _rss_kb() - rss < 50_000, "RSS grew by more than 50 MB over 3,200 requests"
    _healthy(server)


def test_grpc_stream_infer(server):
    import queue

    c = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    answers: queue.Queue = queue.Queue()
    c.start_stream(callback=lambda result, error: answers.put((result, error)))
    for k in range(5):
        i = grpcclient.InferInput("x", [1, 4], "FP32")
        i.set_data_from_numpy(np.full((1, 4), k, np.float32))
        c.async_stream_infer("affine", [i], request_id=str(k))
    bad = grpcclient.InferInput("x", [1, 5], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 5), np.float32))
    c.async_stream_infer("affine", [bad])
    got = [answers.get(timeout=30) for _ in range(6)]
    c.stop_stream()
    ok = sorted((r.get_response().id, float(r.as_numpy("y")[0, 0])) for r, e in got if r is not None)
    assert ok == [(str(k), 2.0 * k + 1) for k in range(5)]
    assert ["dim 1 is 5" in str(e) for r, e in got if e is not None] == [True]


def test_repository_load_unload_refused_and_compressed_requests(server):
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    with pytest.raises(InferenceServerException, match="loads its models at start"):
        c.load_model("affine")
    with pytest.raises(InferenceServerException, match="unknown model"):
        c.unload_model("nope")
    x = np.ones((2, 4), np.float32)
    i = httpclient.InferInput("x", [2, 4], "FP32")
    i.set_data_from_numpy(x)
    for algorithm in ("gzip", "deflate"):
        r = c.infer("affine", [i], request_compression_algorithm=algorithm)
        np.testing.assert_allclose(r.as_numpy("y"), 2 * x + 1)
    _healthy(server)


def test_grpc_body_limit_and_bad_requests(server):
    c = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    huge = np.zeros((8, 40000), np.float32)  # 1.28 MB > the 1 MB limit of this server
    _grpc_fails(c, "affine", huge, "FP32", "RESOURCE_EXHAUSTED")
    _grpc_fails(c, "affine", np.zeros((1, 4), np.float64), "FP64", "INVALID_ARGUMENT", "float64")
    with pytest.raises(InferenceServerException, match="unknown model"):
        c.get_model_config("nope")
    assert c.is_server_live() and c.is_model_ready("affine")


def test_preferred_batch_sizes_cut_batches():
    from trtflow.serve.batcher import Batcher

    engine = trtflow.load(affine_model(), engine="ort")
    model = ServedModel("affine", [engine], BatchConfig(max_batch=8, preferred=(2, 4)))
    xs = [np.full((1, 4), k, np.float32) for k in range(7)]

    async def run():
        batcher = Batcher(model)
        outs = await asyncio.gather(*(batcher.infer({"x": x}) for x in xs))  # all queued before the worker runs
        await batcher.drain()
        return outs, batcher.stats

    outs, stats = asyncio.run(run())
    for x, out in zip(xs, outs):
        np.testing.assert_allclose(out["y"], 2 * x + 1)
    assert stats.values["nv_inference_exec_count"] == 3  # 7 requests -> 4 (preferred), 2 (preferred), 1
    assert stats.batch_counts[:3] == [1, 1, 1] and stats.values["nv_inference_count"] == 7


def test_instance_kind_follows_the_engines():
    """KIND_GPU for a model whose engine runs on a GPU, whatever its backend: here an ORT engine whose
    session says it has the CUDA provider (set after loading on the CPU; no GPU run is done here)."""
    from trtflow.backends.onnxruntime.runner import OrtEngine
    from trtflow.serve.model import instance_kind

    cpu = ServedModel("cpu", [OrtEngine(affine_model())], BatchConfig(max_batch=4))
    gpu = ServedModel("gpu", [OrtEngine(affine_model())], BatchConfig(max_batch=4))
    try:
        assert instance_kind([cpu]) == "KIND_CPU"
        gpu.engines[0].providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        assert instance_kind([gpu]) == "KIND_GPU" == instance_kind([cpu, gpu])

        async def kinds():  # a Python caller's Server reports its engines' kind, not ServeOptions' default
            return [Server(models, ServeOptions(http_port=None, grpc_port=None)).kind for models in ([cpu], [cpu, gpu])]

        assert asyncio.run(kinds()) == ["KIND_CPU", "KIND_GPU"]
    finally:
        cpu.close()
        gpu.close()
