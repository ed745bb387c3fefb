"""The real tritonserver (nvidia-pytriton's binary, in .venv-triton) loads a repository written by
``trtflow triton-repo --backend python`` and answers tritonclient over HTTP and gRPC with the
results of in-process inference; Triton's dynamic batcher hands several requests to model.py
at once, which runs them as one engine call and splits the outputs back."""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from trtflow.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
TRITON_PYTHON = Path(os.environ.get("TRTFLOW_TRITON_PYTHON", ROOT / ".venv-triton" / "bin" / "python"))

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")


def _has_torch() -> bool:
    import subprocess

    if not TRITON_PYTHON.exists():
        return False
    return subprocess.run([str(TRITON_PYTHON), "-c", "import torch"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def triton(tiny_onnx, tmp_path_factory):
    from trtflow.errors import ModelLoadError
    from trtflow.serve.repo import TritonServer

    if not sys.platform.startswith("linux"):
        pytest.skip("nvidia-pytriton's tritonserver is a Linux x86-64 binary")
    repo = tmp_path_factory.mktemp("triton_repo")
    for name, extra in (("tiny", ["--max-batch", "8", "--max-queue-delay-us", "50000"]),
                        ("tiny_whole", ["--max-batch", "0"])):
        assert main(["triton-repo", str(tiny_onnx), "--out", str(repo), "--name", name, "--backend", "python",
                     "--engine", "ort", "--threads", "1", "--json", *extra]) == 0
    if _has_torch():  # tasks preprocess with torch
        assert main(["triton-repo", str(tiny_onnx), "--out", str(repo), "--name", "tiny_classify", "--backend",
                     "python", "--engine", "ort", "--threads", "1", "--task", "classify", "--task-option", "top_k=3",
                     "--max-batch", "4", "--json"]) == 0
        assert main(["triton-repo", str(tiny_onnx), "--out", str(repo), "--name", "tiny_ensemble", "--backend",
                     "python", "--engine", "ort", "--threads", "1", "--task", "classify", "--task-option", "top_k=3",
                     "--max-batch", "4", "--ensemble", "--json"]) == 0
        assert main(["triton-repo", str(tiny_onnx), "--out", str(repo), "--name", "tiny_classify_whole", "--backend",
                     "python", "--engine", "ort", "--threads", "1", "--task", "classify", "--task-option", "top_k=3",
                     "--max-batch", "0", "--json"]) == 0
    try:
        server = TritonServer(repo, TRITON_PYTHON, ready_timeout_s=180)
    except ModelLoadError as exc:
        pytest.skip(f"no bundled tritonserver: {exc} (make .venv-triton/.installed creates it)")
    with server:
        yield server


@pytest.fixture(scope="module")
def reference(tiny_onnx):
    import trtflow

    with trtflow.load(tiny_onnx, "ort", threads=1) as engine:
        yield engine


def _x(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16), dtype=np.float32)


def _close(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("binary", [True, False])
def test_http_infer_matches_in_process(triton, reference, binary):
    x = _x(3)
    client = httpclient.InferenceServerClient(triton.http_url)
    try:
        assert client.is_server_ready() and client.is_model_ready("tiny")
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("logits", "feat")]
        result = client.infer("tiny", [inp], outputs=outs)
    finally:
        client.close()
    want = reference.infer({"x": x})
    _close(result.as_numpy("logits"), want["logits"])
    _close(result.as_numpy("feat"), want["feat"])


def test_grpc_infer_matches_in_process(triton, reference):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        for name, x in (("tiny", _x(2, seed=1)), ("tiny_whole", _x(5, seed=2))):
            inp = grpcclient.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            result = client.infer(name, [inp])
            _close(result.as_numpy("logits"), reference.infer({"x": x})["logits"])
    finally:
        client.close()


def test_triton_serves_the_written_config(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        config = client.get_model_config("tiny").config
        whole = client.get_model_config("tiny_whole").config
    finally:
        client.close()
    assert config.backend == "python" and config.max_batch_size == 8
    assert [list(t.dims) for t in config.input] == [[3, 16, 16]]
    assert config.dynamic_batching.max_queue_delay_microseconds == 50000
    assert whole.max_batch_size == 0 and [list(t.dims) for t in whole.input] == [[-1, 3, 16, 16]]


def test_dynamic_batches_split_back_per_request(triton, reference):
    """16 concurrent one-row requests: Triton batches them (fewer executions than requests), and
    each client gets its own row back."""
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    before = client.get_inference_statistics("tiny").model_stats[0]
    xs = [_x(1, seed=100 + i) for i in range(16)]

    start = threading.Barrier(len(xs))

    def one(x):
        c = grpcclient.InferenceServerClient(triton.grpc_url)
        try:
            inp = grpcclient.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            start.wait(timeout=60)  # all clients send together
            return c.infer("tiny", [inp]).as_numpy("logits")
        finally:
            c.close()

    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, xs))
        after = client.get_inference_statistics("tiny").model_stats[0]
    finally:
        client.close()
    for x, got in zip(xs, results):
        _close(got, reference.infer({"x": x})["logits"])
    requests = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    assert requests == 16
    assert executions < requests, f"{executions} executions for {requests} requests: nothing was batched"


def test_shape_errors_reach_the_client(triton):
    client = httpclient.InferenceServerClient(triton.http_url)
    try:
        x = np.zeros((1, 3, 8, 8), np.float32)
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        with pytest.raises(Exception, match="shape"):
            client.infer("tiny", [inp])
        assert client.is_server_live() and client.is_model_ready("tiny")
    finally:
        client.close()


@pytest.mark.parametrize("model", ["tiny_classify", "tiny_ensemble"])
def test_task_model_takes_images_and_answers_json(triton, tiny_onnx, model):
    """--task classify (one Python model) and --ensemble (pre -> model -> post, Triton's ensemble
    scheduler): uint8 frames in, the task's JSON results out, equal to the same task in process."""
    import json

    if not _has_torch():
        pytest.skip(f"{TRITON_PYTHON} has no torch, which trtflow's task preprocessing needs "
                    "(make .venv-triton/.installed installs it)")
    from trtflow.tasks import make_task

    frames = np.random.default_rng(3).integers(0, 255, (2, 40, 30, 3), dtype=np.uint8)
    client = httpclient.InferenceServerClient(triton.http_url)
    try:
        inp = httpclient.InferInput("IMAGE", list(frames.shape), "UINT8")
        inp.set_data_from_numpy(frames, binary_data=True)
        result = client.infer(model, [inp]).as_numpy("RESULT")
    finally:
        client.close()
    assert result.shape == (2, 1)
    served = [json.loads(r[0]) for r in result]
    with make_task("classify", str(tiny_onnx), engine="ort", threads=1, top_k=3) as task:
        local = [r.to_dict() for r in task.predict(list(frames))]
    for got, want in zip(served, local):
        assert [t["class"] for t in got["topk"]] == [t["class"] for t in want["topk"]]
        np.testing.assert_allclose([t["score"] for t in got["topk"]], [t["score"] for t in want["topk"]], atol=1e-4)


def test_task_model_without_batching_takes_one_frame(triton, tiny_onnx):
    """--task with --max-batch 0: IMAGE is one H x W x 3 frame, RESULT its one JSON document."""
    import json

    if not _has_torch():
        pytest.skip(f"{TRITON_PYTHON} has no torch, which trtflow's task preprocessing needs")
    from trtflow.tasks import make_task

    frame = np.random.default_rng(4).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    client = httpclient.InferenceServerClient(triton.http_url)
    try:
        inp = httpclient.InferInput("IMAGE", list(frame.shape), "UINT8")
        inp.set_data_from_numpy(frame, binary_data=True)
        result = client.infer("tiny_classify_whole", [inp]).as_numpy("RESULT")
    finally:
        client.close()
    assert result.shape == (1,)
    with make_task("classify", str(tiny_onnx), engine="ort", threads=1, top_k=3) as task:
        want = task.predict([frame])[0].to_dict()
    assert [t["class"] for t in json.loads(result[0])["topk"]] == [t["class"] for t in want["topk"]]
