"""The lean HTTP path for binary infer requests (trtflow/serve/fasthttp.py), over raw sockets:
keep-alive, pipelining, Connection: close, bodies split anywhere, a version in the path, and the
hand-off to aiohttp (other requests, chunked bodies, oversized bodies) on the same connection."""

from __future__ import annotations

import json
import logging
import socket
import time

import numpy as np
import pytest

pytest.importorskip("aiohttp")

import trtflow  # noqa: E402
from tests.test_serve import affine_model  # noqa: E402
from trtflow.serve import protocol  # noqa: E402
from trtflow.serve.model import BatchConfig, ServedModel  # noqa: E402
from trtflow.serve.server import BackgroundServer, ServeOptions  # noqa: E402


@pytest.fixture(scope="module")
def port():
    models = [ServedModel("affine", [trtflow.load(affine_model(), engine="ort")], BatchConfig(max_batch=8))]
    with BackgroundServer(models, ServeOptions(http_port=0, grpc_port=None, max_body=1 << 16)) as s:
        yield s.http_port


def _infer(x: np.ndarray, path: str = "/v2/models/affine/infer", extra: str = "") -> bytes:
    head = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    body = head + x.tobytes()
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
            f"{protocol.HEADER_LENGTH}: {len(head)}\r\n{extra}\r\n").encode() + body


def _read(f) -> tuple[int, dict, bytes]:
    """One response from a socket file: status, headers (lower-case names), body."""
    status = int(f.readline().split()[1])
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, f.read(int(headers.get("content-length", 0)))


def _y(response: tuple[int, dict, bytes]) -> np.ndarray:
    status, headers, body = response
    assert status == 200, body
    n = int(headers[protocol.HEADER_LENGTH.lower()])
    offset = n
    for out in json.loads(body[:n])["outputs"]:
        size = out["parameters"]["binary_data_size"]
        if out["name"] == "y":
            return protocol.array_from_raw(body[offset:offset + size], out["datatype"], out["shape"])
        offset += size
    raise AssertionError("no output y")


def _x(i: int) -> np.ndarray:
    return np.full((1 + i % 3, 4), float(i), np.float32)


def test_keep_alive_pipelining_split_bodies_and_close(port):
    with socket.create_connection(("127.0.0.1", port)) as s, s.makefile("rb") as f:
        s.sendall(_infer(_x(0)))
        np.testing.assert_allclose(_y(_read(f)), 2 * _x(0) + 1)
        s.sendall(b"".join(_infer(_x(i)) for i in range(1, 4)))  # pipelined: answered in order
        for i in range(1, 4):
            np.testing.assert_allclose(_y(_read(f)), 2 * _x(i) + 1)
        data = _infer(_x(4), "/v2/models/affine/versions/1/infer")
        end = data.index(b"\r\n\r\n") + 4
        for cut in (7, end, end + 10, len(data) - 20, len(data) - 1):  # head, JSON and tensor split across reads
            s.sendall(data[:cut])
            s.sendall(data[cut:])
            np.testing.assert_allclose(_y(_read(f)), 2 * _x(4) + 1)
        s.sendall(_infer(_x(6), extra=f"X-Pad: {'a' * 40000}\r\n"))  # a long head: the buffer grows
        np.testing.assert_allclose(_y(_read(f)), 2 * _x(6) + 1)
        s.sendall(_infer(_x(5), extra="Connection: close\r\n"))
        response = _read(f)
        assert response[1].get("connection") == "close"
        np.testing.assert_allclose(_y(response), 2 * _x(5) + 1)
        assert f.read() == b""  # closed by the server


def test_other_requests_go_to_aiohttp_on_the_same_connection(port):
    with socket.create_connection(("127.0.0.1", port)) as s, s.makefile("rb") as f:
        s.sendall(_infer(_x(1)))
        np.testing.assert_allclose(_y(_read(f)), 2 * _x(1) + 1)
        s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read(f)[0] == 200
        s.sendall(_infer(_x(2)))  # aiohttp keeps the connection and answers the same
        np.testing.assert_allclose(_y(_read(f)), 2 * _x(2) + 1)
    raw = _infer(_x(3))
    head, body = raw.split(b"\r\n\r\n", 1)
    head = head.replace(b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked")
    chunked = head + b"\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with socket.create_connection(("127.0.0.1", port)) as s, s.makefile("rb") as f:
        s.sendall(chunked)
        np.testing.assert_allclose(_y(_read(f)), 2 * _x(3) + 1)
        s.sendall(_infer(np.zeros((1, 1 << 15), np.float32)))  # over max_body (64 KB)
        status, _, body = _read(f)
        assert status == 413 and "too large" in json.loads(body)["error"]


@pytest.mark.parametrize("doc, status, message", [
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
      "outputs": [{"name": "zzz"}]}, 400, "unknown output"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]},
     400, "needs 12"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32"}]}, 400, "neither"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
      "outputs": [{"name": "y", "parameters": {"classification": "two"}}]}, 400, "'classification' must be"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
      "outputs": [{"name": "y"}, {"name": "y", "parameters": {"binary_data": True}}]}, 400,
     "output 'y' is requested more than once"),  # was answered with y twice
])
def test_errors_on_the_lean_path_are_triton_errors(port, doc, status, message):
    head = json.dumps(doc).encode()
    body = head + np.ones(4, np.float32).tobytes()
    request = (f"POST /v2/models/affine/infer HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
               f"{protocol.HEADER_LENGTH}: {len(head)}\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", port)) as s, s.makefile("rb") as f:
        s.sendall(request + _infer(_x(1)))  # the connection goes on after the error
        code, _, text = _read(f)
        assert code == status and message in json.loads(text)["error"]
        np.testing.assert_allclose(_y(_read(f)), 2 * _x(1) + 1)


def test_access_log_names_the_path_as_requested(port, caplog):
    caplog.set_level(logging.INFO, logger="trtflow.serve.access")
    with socket.create_connection(("127.0.0.1", port)) as s, s.makefile("rb") as f:
        s.sendall(_infer(_x(1), "/v2/models/affine/versions/1/infer"))
        np.testing.assert_allclose(_y(_read(f)), 2 * _x(1) + 1)
    want = "/v2/models/affine/versions/1/infer"
    deadline = time.monotonic() + 5  # the line is written just after the response, on the server's thread
    while want not in (paths := [json.loads(r.getMessage())["path"] for r in caplog.records
                                 if r.name == "trtflow.serve.access"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert want in paths, paths


def test_an_empty_binary_tensor_is_a_400_and_the_connection_goes_on(port):
    """A batch of 0 rows as a binary tensor crashed the lean path (memoryview cast of an empty
    array): no answer, the connection dropped with the requests pipelined behind it."""
    with socket.create_connection(("127.0.0.1", port)) as s, s.makefile("rb") as f:
        s.settimeout(10)
        s.sendall(_infer(np.zeros((0, 4), np.float32)) + _infer(_x(1)))
        code, _, text = _read(f)
        assert code == 400 and "batch size 0" in json.loads(text)["error"]
        np.testing.assert_allclose(_y(_read(f)), 2 * _x(1) + 1)


IDLE = 1.0  # the idle timeout of the server below, in seconds


@pytest.fixture(scope="module")
def impatient_port():
    """A server that closes connections idle for IDLE seconds; "lazy" answers after 2.5 IDLE
    (its batcher waits that long for a second request)."""
    models = [ServedModel("affine", [trtflow.load(affine_model(), engine="ort")], BatchConfig(max_batch=8)),
              ServedModel("lazy", [trtflow.load(affine_model(), engine="ort")],
                          BatchConfig(max_batch=8, delay_us=int(2.5 * IDLE * 1e6)))]
    with BackgroundServer(models, ServeOptions(http_port=0, grpc_port=None, idle_timeout_s=IDLE)) as s:
        yield s.http_port


@pytest.mark.parametrize("sent", ["nothing", "half a head", "a request, then nothing",
                                  "a request for aiohttp, then nothing"])
def test_a_connection_idle_past_the_timeout_is_closed(impatient_port, sent):
    """A client that connected and sent nothing, or stopped halfway through a request, held its
    connection (and on the lean path its request's buffers) for as long as it liked."""
    data = _infer(_x(1))
    end = data.index(b"\r\n\r\n") + 4
    with socket.create_connection(("127.0.0.1", impatient_port)) as s, s.makefile("rb") as f:
        s.settimeout(10 * IDLE)
        if sent == "half a head":
            s.sendall(data[:end // 2])
        elif sent == "a request, then nothing":
            s.sendall(data)
            np.testing.assert_allclose(_y(_read(f)), 2 * _x(1) + 1)
        elif sent == "a request for aiohttp, then nothing":
            s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n")
            assert _read(f)[0] == 200
        t0 = time.monotonic()
        assert f.read() == b""  # closed by the server, without an answer
        assert 0.8 * IDLE <= time.monotonic() - t0 < 5 * IDLE


@pytest.mark.parametrize("cut", ["in the JSON header", "in the tensors"])
def test_a_body_that_stalls_on_the_lean_path_is_answered_408_and_closed(impatient_port, cut):
    """The lean path closed a connection whose binary body stopped coming without a word, where
    aiohttp's path answers 408; the connection goes on no further."""
    data = _infer(_x(1))
    end = data.index(b"\r\n\r\n") + 4
    with socket.create_connection(("127.0.0.1", impatient_port)) as s, s.makefile("rb") as f:
        s.settimeout(10 * IDLE)
        s.sendall(data[:end + 10] if cut == "in the JSON header" else data[:-8])
        t0 = time.monotonic()
        status, headers, text = _read(f)
        assert status == 408 and "no bytes of the request body" in json.loads(text)["error"], text
        assert headers.get("connection") == "close" and f.read() == b""
        assert 0.8 * IDLE <= time.monotonic() - t0 < 5 * IDLE


def test_a_slow_client_and_a_slow_answer_are_not_cut(impatient_port):
    """The timeout is on the client's silence: a request sent in pieces over more than the timeout
    is answered, and so is one the server takes longer than the timeout to answer."""
    with socket.create_connection(("127.0.0.1", impatient_port)) as s, s.makefile("rb") as f:
        s.settimeout(10 * IDLE)
        data = _infer(_x(2))
        step = len(data) // 4 + 1
        t0 = time.monotonic()
        for i in range(0, len(data), step):
            s.sendall(data[i:i + step])
            time.sleep(0.3 * IDLE)
        assert time.monotonic() - t0 > IDLE
        np.testing.assert_allclose(_y(_read(f)), 2 * _x(2) + 1)
        t0 = time.monotonic()
        s.sendall(_infer(_x(3), "/v2/models/lazy/infer"))
        np.testing.assert_allclose(_y(_read(f)), 2 * _x(3) + 1)
        assert time.monotonic() - t0 > 2 * IDLE
        s.sendall(_infer(_x(4)))  # the connection goes on
        np.testing.assert_allclose(_y(_read(f)), 2 * _x(4) + 1)


def _json_infer(x: np.ndarray) -> tuple[bytes, bytes]:
    """The head and body of a JSON infer request (no binary tensors: aiohttp answers it)."""
    body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}]}).encode()
    head = (f"POST /v2/models/affine/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head, body


def test_a_body_that_stalls_on_aiohttp_is_answered_408_and_closed(impatient_port):
    """A request with a Content-Length whose body stopped coming held aiohttp's handler for ever;
    one whose body keeps coming, slower than the timeout in all, is answered."""
    head, body = _json_infer(_x(5))
    with socket.create_connection(("127.0.0.1", impatient_port)) as s, s.makefile("rb") as f:
        s.settimeout(10 * IDLE)
        s.sendall(head + body[:10])
        t0 = time.monotonic()
        status, headers, text = _read(f)
        assert status == 408 and "no bytes of the request body" in json.loads(text)["error"]
        assert headers.get("connection") == "close" and f.read() == b""
        assert 0.8 * IDLE <= time.monotonic() - t0 < 5 * IDLE
    with socket.create_connection(("127.0.0.1", impatient_port)) as s, s.makefile("rb") as f:
        s.settimeout(10 * IDLE)
        s.sendall(head)
        t0 = time.monotonic()
        step = len(body) // 4 + 1
        for i in range(0, len(body), step):
            time.sleep(0.4 * IDLE)
            s.sendall(body[i:i + step])
        assert time.monotonic() - t0 > IDLE
        status, _, text = _read(f)
        assert status == 200, text
        np.testing.assert_allclose(json.loads(text)["outputs"][0]["data"], (2 * _x(5) + 1).reshape(-1))
