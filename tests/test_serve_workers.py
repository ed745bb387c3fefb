"""`trtflow serve --workers 2`: two front-end processes and one engine process fed through shared
memory, as subprocesses on 127.0.0.1: tritonclient HTTP and gRPC results equal in-process inference,
requests of both front ends batched together, Triton's errors (400, 503), the inline fallback for a
request larger than a slot, SIGTERM drains, a killed front end leaves the other serving."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("aiohttp")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")

import trtflow  # noqa: E402
from tests.test_serve import affine_model, slow_model  # noqa: E402
from trtflow.serve import metrics  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402


def _ports() -> tuple[int, int]:
    socks = [socket.socket() for _ in range(2)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = tuple(s.getsockname()[1] for s in socks)
    for s in socks:
        s.close()
    return ports


def _start(models: list, *flags: str, log=None) -> tuple[subprocess.Popen, dict]:
    http, grpc = _ports()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trtflow", "serve", *map(str, models), "--http-port", str(http), "--grpc-port", str(grpc),
         "--workers", "2", "--json", "--access-log", str(log or "off"), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"the server did not start: {proc.stderr.read()}")
    return proc, json.loads(line)


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.stderr.read() if proc.stderr else ""


def _post(port: int, model: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{model}/infer", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""  # refused: the listener is closed


def _body(x: np.ndarray, datatype: str = "FP32") -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": datatype,
                                   "data": x.reshape(-1).tolist()}]}).encode()


def _metrics(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return metrics.parse(r.read().decode())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    (root / "affine.onnx").write_bytes(affine_model())
    (root / "slow.onnx").write_bytes(slow_model())
    (root / "slower.onnx").write_bytes(slow_model(k=96))
    return root


@pytest.fixture(scope="module")
def server(files):
    log = files / "access.log"
    proc, info = _start([files / "affine.onnx", files / "slow.onnx"], "--max-batch", "8", "--max-queue-delay-us",
                        "20000", log=log)
    info["log"] = log
    yield proc, info
    _stop(proc)


def test_results_equal_in_process_over_http_and_grpc(server, files):
    proc, info = server
    assert info["workers"] == 2 and len(info["pids"]["frontends"]) == 2 and info["shm"]["slot_bytes"] == 4096
    engine = trtflow.load(files / "slow.onnx", engine="ort")
    h = httpclient.InferenceServerClient(f"127.0.0.1:{info['http_port']}")
    g = grpcclient.InferenceServerClient(f"127.0.0.1:{info['grpc_port']}")
    assert h.is_server_ready() and g.is_model_ready("slow")
    assert h.get_model_config("slow")["max_batch_size"] == 8 and h.get_model_metadata("affine")["inputs"][0]["name"] == "x"
    rng = np.random.default_rng(0)
    for rows in (1, 3):  # 3 rows (12 KB) do not fit a 4 KB slot: the inline fallback
        x = rng.standard_normal((rows, 1024)).astype(np.float32)
        want = engine.infer({"x": x})["y"]
        for binary in (True, False):
            i = httpclient.InferInput("x", list(x.shape), "FP32")
            i.set_data_from_numpy(x, binary_data=binary)
            np.testing.assert_allclose(h.infer("slow", [i]).as_numpy("y"), want, rtol=1e-5, atol=1e-6)
        gi = grpcclient.InferInput("x", list(x.shape), "FP32")
        gi.set_data_from_numpy(x)
        np.testing.assert_allclose(g.infer("slow", [gi]).as_numpy("y"), want, rtol=1e-5, atol=1e-6)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    gi = grpcclient.InferInput("x", [2, 4], "FP32")
    gi.set_data_from_numpy(x)
    top = g.infer("affine", [gi], outputs=[grpcclient.InferRequestedOutput("y", class_count=1)]).as_numpy("y")
    assert top[0, 0].decode() == "7.000000:3"


def test_requests_of_both_front_ends_are_batched_together(server, files):
    proc, info = server
    port = info["http_port"]
    engine = trtflow.load(files / "slow.onnx", engine="ort")
    xs = [np.random.default_rng(i).standard_normal((1, 1024)).astype(np.float32) for i in range(16)]
    before = _metrics(port)
    label = '{model="slow",version="1"}'
    results: dict = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, _post(port, "slow", _body(xs[i]))))
               for i in range(16)]  # a new connection each: the kernel spreads them over both front ends
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = _metrics(port)
    executions = after["nv_inference_exec_count" + label] - before["nv_inference_exec_count" + label]
    assert after["nv_inference_count" + label] - before["nv_inference_count" + label] == 16
    assert executions < 16, f"{executions} executions for 16 concurrent requests: nothing was batched"
    for i, x in enumerate(xs):
        code, text = results[i]
        assert code == 200
        np.testing.assert_allclose(json.loads(text)["outputs"][0]["data"], engine.infer({"x": x})["y"].reshape(-1),
                                   rtol=1e-4, atol=1e-5)
    lines = [json.loads(line) for line in info["log"].read_text().splitlines()]
    pids = {d["pid"] for d in lines if d["path"] == "/v2/models/slow/infer"}
    assert pids <= set(info["pids"]["frontends"])
    assert len(pids) == 2, f"every request went to one front end ({pids}); the test did not reach both"
    stats = httpclient.InferenceServerClient(f"127.0.0.1:{port}").get_inference_statistics("slow")["model_stats"][0]
    assert stats["execution_count"] == after["nv_inference_exec_count" + label]  # the engine process's counters
    assert sum(b["compute_infer"]["count"] for b in stats["batch_stats"]) == stats["execution_count"]


@pytest.mark.parametrize("case, status, message", [
    ("wrong_shape", 400, "dim 1 is 3"), ("wrong_dtype", 400, "float64"), ("too_big_batch", 400, "1..8"),
    ("unknown_model", 404, "unknown model"),
])
def test_errors_come_back_as_the_in_process_server_gives_them(server, case, status, message):
    proc, info = server
    port = info["http_port"]
    model, body = "affine", _body(np.ones((1, 4)))
    if case == "wrong_shape":
        body = _body(np.ones((1, 3)))
    elif case == "wrong_dtype":
        body = _body(np.ones((1, 4)), "FP64")
    elif case == "too_big_batch":
        body = _body(np.ones((9, 4)))
    else:
        model = "nope"
    code, text = _post(port, model, body)
    assert code == status and message in json.loads(text)["error"]
    g = grpcclient.InferenceServerClient(f"127.0.0.1:{info['grpc_port']}")
    if case == "wrong_dtype":
        gi = grpcclient.InferInput("x", [1, 4], "FP64")
        gi.set_data_from_numpy(np.ones((1, 4)))
        with pytest.raises(InferenceServerException, match="float64") as err:
            g.infer("affine", [gi])
        assert "INVALID_ARGUMENT" in str(err.value.status())
    assert _post(port, "affine", _body(np.ones((1, 4))))[0] == 200


def test_killed_front_end_leaves_the_other_serving(files):
    proc, info = _start([files / "affine.onnx"])
    try:
        dead = info["pids"]["frontends"][0]
        os.kill(dead, signal.SIGKILL)
        time.sleep(0.5)
        body = _body(np.ones((1, 4)))
        codes = [_post(info["http_port"], "affine", body)[0] for _ in range(10)]  # new connections each
        assert codes == [200] * 10
        assert proc.poll() is None
    finally:
        err = _stop(proc)
    assert proc.returncode == 0
    assert f"(pid {dead}) exited with code -9; 1 front end(s) still serving" in err


def test_full_queue_503_then_sigterm_drains_in_flight(files):
    proc, info = _start([files / "slower.onnx"], "--max-batch", "1", "--max-queue", "4")  # about 0.1 s a request
    port = info["http_port"]
    body = _body(np.ones((1, 1024)))
    label = '{model="slower",version="1"}'
    try:
        codes: list = []
        threads = [threading.Thread(target=lambda: codes.append(_post(port, "slower", body))) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted({c for c, _ in codes}) == [200, 503]
        assert all("queued" in json.loads(t)["error"] for c, t in codes if c == 503)
        codes = []
        threads = [threading.Thread(target=lambda: codes.append(_post(port, "slower", body)[0])) for _ in range(4)]
        for t in threads:
            t.start()
        done_before = _metrics(port)["nv_inference_request_success" + label]
        deadline = time.time() + 20
        while time.time() < deadline:  # all 4 reached the engine process: one running, the others queued
            values = _metrics(port)
            inflight = values["trtflow_inference_inflight_request_count" + label]
            if inflight + values["nv_inference_request_success" + label] - done_before == 4:
                break
            time.sleep(0.005)
        assert inflight >= 2, "the requests were answered before SIGTERM could find them in flight"
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        late = _post(port, "slower", body)[0]
        for t in threads:
            t.join(30)
        assert proc.wait(30) == 0
        assert codes == [200] * 4, f"in-flight requests lost during the drain: {codes}"
        assert late in (503, 0)
    finally:
        _stop(proc)


@pytest.mark.parametrize("case", ["broken_model", "port_in_use"])
def test_start_failures_are_one_line_and_exit_2(tmp_path, files, case):
    model = files / "affine.onnx"
    if case == "broken_model":
        model = tmp_path / "broken.onnx"
        model.write_bytes(b"not a model")
    http, grpc = _ports()
    with socket.socket() as busy:
        if case == "port_in_use":
            busy.bind(("127.0.0.1", http))
            busy.listen()
        done = subprocess.run([sys.executable, "-m", "trtflow", "serve", str(model), "--workers", "2", "--http-port",
                               str(http), "--grpc-port", str(grpc)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trtflow serve: error:")
    assert ("pick free ports" in lines[0]) == (case == "port_in_use")


def test_ort_spinning_option_reaches_the_session(files):
    for spinning, want in ((False, "0"), (True, "1")):
        engine = trtflow.load(files / "affine.onnx", engine="ort", spinning=spinning)
        assert engine.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == want
        np.testing.assert_allclose(engine.infer({"x": np.ones((1, 4), np.float32)})["y"], 3.0)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_engine_process_serves_what_the_engine_computes(tmp_path, device):
    """A torch engine behind ``serve_workers`` (on CUDA the engine process's CUDA path: slots
    page-locked, rows copied to the device, one D2H) answers what the engine computes in process."""
    from tests.serve_workers_child import conv_net_models

    http, grpc = _ports()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(tmp_path / "stderr.txt", "w+") as err:  # a file: a chatty child cannot fill a pipe and stall
        proc = subprocess.Popen([sys.executable, os.path.join(root, "tests", "serve_workers_child.py"), device,
                                 str(http), str(grpc)], stdout=subprocess.PIPE, stderr=err, text=True, cwd=root)
        try:
            line = proc.stdout.readline()
            if not line:
                proc.wait(30)
                err.seek(0)
                pytest.fail(f"the server exited with {proc.returncode} before it was ready; its stderr:\n{err.read()}")
            assert json.loads(line)["kind"] == ("KIND_GPU" if device == "cuda" else "KIND_CPU")
            engine = conv_net_models(device)[0].engines[0]
            dtype, datatype = (np.float16, "FP16") if device == "cuda" else (np.float32, "FP32")
            xs = [np.random.default_rng(i).standard_normal((1 + i % 3, 3, 32, 32)).astype(dtype) for i in range(12)]
            c = httpclient.InferenceServerClient(f"127.0.0.1:{http}", concurrency=12)
            pending = []
            for x in xs:
                i = httpclient.InferInput("x", list(x.shape), datatype)
                i.set_data_from_numpy(x)
                pending.append(c.async_infer("net", [i]))
            for x, p in zip(xs, pending):
                got = p.get_result().as_numpy("logits")
                np.testing.assert_allclose(got.astype(np.float32), engine.infer({"x": x})["logits"].astype(np.float32),
                                           rtol=1e-2, atol=1e-2)
            values = _metrics(http)
            assert values['nv_inference_exec_count{model="net",version="1"}'] < len(xs)
        finally:
            _stop(proc)


@pytest.mark.parametrize("ports, workers, match", [
    ((0, 0), {"workers": 2}, "fixed ports"),
    ((8000, 0), {"workers": 2}, "fixed ports"),
    ((None, None), {"workers": 2}, "no listener"),
    ((8000, 8001), {"workers": 0}, "workers is 0"),
    ((8000, 8001), {"slots": -1}, "slots is -1"),
    ((8000, 8001), {"slot_rows": 0}, "slot_rows is 0"),
])
def test_serve_workers_refuses_options_it_cannot_serve_with(ports, workers, match):
    """serve_workers from Python took them: port 0 had each front end listen on its own free port
    (the ready message named one of them), workers=0 started the engine process for nothing and
    crashed on the missing ports; now each is a UsageError before any process starts."""
    import functools

    from trtflow.errors import UsageError
    from trtflow.serve.server import ServeOptions
    from trtflow.serve.workers import WorkerOptions, serve_workers

    def on_ready(ready):
        raise AssertionError(f"it served: {ready}")

    with pytest.raises(UsageError, match=match):
        serve_workers(functools.partial(list), ServeOptions(http_port=ports[0], grpc_port=ports[1]),
                      WorkerOptions(**{"startup_timeout_s": 60.0, **workers}), on_ready=on_ready)


def test_device_name_of_an_ort_engine_on_the_cuda_provider_names_the_gpu(files):
    """An ORT engine on the CUDA provider without a GPU index runs on GPU 0 (ORT's default), not
    "cpu". No GPU here: a real CPU engine whose ``providers`` are set as a CUDA session reports them."""
    from trtflow.serve.engine_process import device_name

    engine = trtflow.load(files / "affine.onnx", engine="ort")
    assert device_name(engine) == "cpu"
    engine.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert device_name(engine) == "cuda:0"
    engine.gpu = 1
    assert device_name(engine) == "cuda:1"
