"""`trtflow serve` as a subprocess: SIGTERM drains (queued requests finish, new ones get 503),
one JSON access-log line per request, and a model that cannot load fails fast with exit 2."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("aiohttp")

from tests.test_serve import slow_model  # noqa: E402
from trtflow.serve import metrics  # noqa: E402


def _post(port: int, body: bytes) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/slow/infer", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # refused: the listener is closed


@contextlib.contextmanager
def _serving(*args: str):
    """``trtflow serve ARGS`` as a subprocess (stdout and stderr piped), killed on the way out if
    it still runs."""
    proc = subprocess.Popen([sys.executable, "-m", "trtflow", "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_drains_in_flight_requests(tmp_path):
    model = tmp_path / "slow.onnx"
    model.write_bytes(slow_model(k=48))
    log_file = tmp_path / "access.log"
    with _serving(str(model), "--http-port", "0", "--grpc-port", "-1", "--max-batch", "1", "--json",
                  "--access-log", str(log_file)) as proc:
        port = json.loads(proc.stdout.readline())["http_port"]
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1024], "datatype": "FP32",
                                       "data": np.ones(1024).tolist()}]}).encode()
        codes: list[int] = []
        threads = [threading.Thread(target=lambda: codes.append(_post(port, body))) for _ in range(10)]
        for t in threads:
            t.start()
        deadline = time.time() + 20
        while time.time() < deadline:  # wait until all 10 are in: one running, the others queued
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                values = metrics.parse(r.read().decode())
            label = '{model="slow",version="1"}'
            inflight = values["trtflow_inference_inflight_request_count" + label]
            if inflight + values["nv_inference_request_success" + label] == 10:  # all arrived
                break
            time.sleep(0.005)
        assert inflight >= 2, "the requests were answered before SIGTERM could find them in flight"
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        late = _post(port, body)
        for t in threads:
            t.join(30)
        assert proc.wait(30) == 0
        assert codes == [200] * 10, f"in-flight requests lost during the drain: {codes}"
        assert late in (503, 0), f"a request sent while draining got {late}"
        lines = [json.loads(line) for line in log_file.read_text().splitlines()]
        infers = [d for d in lines if d["path"] == "/v2/models/slow/infer"]
        assert len([d for d in infers if d["status"] == 200]) == 10
        assert all({"ts", "method", "status", "ms"} <= set(d) for d in lines)


def test_model_that_cannot_load_fails_fast(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    done = subprocess.run([sys.executable, "-m", "trtflow", "serve", str(bad), "--http-port", "0", "--grpc-port", "-1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trtflow serve: error:")


def test_workers_share_the_port_and_stop_on_sigterm(tmp_path):
    from tests.test_serve import affine_model
    from trtflow.serve.repo.launcher import free_port

    model = tmp_path / "affine.onnx"
    model.write_bytes(affine_model())
    port = free_port()
    with _serving(str(model), "--http-port", str(port), "--grpc-port", "-1", "--workers", "2", "--json",
                  "--access-log", "off") as proc:
        info = json.loads(proc.stdout.readline())
        assert info["workers"] == 2 and info["http_port"] == port
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).encode()
        codes = []
        for _ in range(20):  # a new connection each time: the kernel spreads them over the workers
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/affine/infer", data=body, method="POST")
            with urllib.request.urlopen(req, timeout=30) as r:
                codes.append(r.status)
                assert json.loads(r.read())["outputs"][0]["data"] == [3.0, 5.0, 7.0, 9.0]
        assert codes == [200] * 20
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_port_in_use_is_one_line_and_exit_2(tmp_path):
    import socket

    from tests.test_serve import affine_model

    model = tmp_path / "affine.onnx"
    model.write_bytes(affine_model())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flags in (["--http-port", str(port), "--grpc-port", "-1"], ["--http-port", "0", "--grpc-port", str(port)]):
            done = subprocess.run([sys.executable, "-m", "trtflow", "serve", str(model), *flags],
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 2
            assert done.stderr.strip().splitlines() == [done.stderr.strip()]
            assert "pick free ports" in done.stderr


def test_idle_timeout_flag_closes_a_silent_connection(tmp_path):
    """--idle-timeout-s reaches the server: a client that connects and sends nothing is closed."""
    import socket

    model = tmp_path / "slow.onnx"
    model.write_bytes(slow_model(k=1))
    with _serving(str(model), "--http-port", "0", "--grpc-port", "-1", "--json", "--access-log", "off",
                  "--idle-timeout-s", "0.5") as proc:
        port = json.loads(proc.stdout.readline())["http_port"]
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            t0 = time.monotonic()
            assert sock.recv(1) == b""  # closed by the server, not by our 20 s timeout
            assert time.monotonic() - t0 < 10
