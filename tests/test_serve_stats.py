"""Triton's statistics extension (HTTP /stats, gRPC ModelStatistics) against a running server:
failed requests' count and time, executions per batch size; model metadata and config built once."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

pytest.importorskip("aiohttp")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")

import trtflow  # noqa: E402
from tests.test_serve import affine_model  # noqa: E402
from trtflow.serve import protocol  # noqa: E402
from trtflow.serve.model import BatchConfig, ServedModel  # noqa: E402
from trtflow.serve.server import BackgroundServer, ServeOptions  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

COMPUTE = ("compute_input", "compute_infer", "compute_output")


@pytest.fixture
def served():
    """A fresh server (its counters and its model's metadata start empty)."""
    models = [ServedModel("affine", [trtflow.load(affine_model(), engine="ort")], BatchConfig(max_batch=8))]
    with BackgroundServer(models, ServeOptions(http_port=0, grpc_port=0)) as s:
        yield s


def test_stats_count_failed_requests_and_each_batch_size(served):
    """``fail.ns`` was 0 whatever failed, and ``batch_stats`` was empty."""
    c = httpclient.InferenceServerClient(f"127.0.0.1:{served.http_port}")
    for rows in (1, 2, 2, 3):  # one at a time: each runs alone, a batch of its rows
        x = np.ones((rows, 4), np.float32)
        i = httpclient.InferInput("x", [rows, 4], "FP32")
        i.set_data_from_numpy(x)
        np.testing.assert_allclose(c.infer("affine", [i]).as_numpy("y"), 2 * x + 1)
    bad = httpclient.InferInput("x", [2, 5], "FP32")
    bad.set_data_from_numpy(np.ones((2, 5), np.float32))
    with pytest.raises(InferenceServerException, match="dim 1 is 5"):
        c.infer("affine", [bad])

    stats = c.get_inference_statistics("affine")["model_stats"][0]
    fail = stats["inference_stats"]["fail"]
    assert fail["count"] == 1 and fail["ns"] > 0
    assert stats["inference_stats"]["success"]["count"] == 4
    batches = {b["batch_size"]: b for b in stats["batch_stats"]}
    assert sorted(batches) == [1, 2, 3]
    for size, runs in ((1, 1), (2, 2), (3, 1)):
        for part in COMPUTE:
            assert batches[size][part]["count"] == runs and batches[size][part]["ns"] >= 0
        assert batches[size]["compute_infer"]["ns"] > 0
    total = stats["inference_stats"]["compute_infer"]["ns"]
    assert abs(sum(b["compute_infer"]["ns"] for b in batches.values()) - total) <= len(batches)

    g = grpcclient.InferenceServerClient(f"127.0.0.1:{served.grpc_port}").get_inference_statistics("affine")
    one = g.model_stats[0]
    assert one.inference_stats.fail.count == 1 and one.inference_stats.fail.ns == fail["ns"]
    assert {b.batch_size: b.compute_infer.count for b in one.batch_stats} == {1: 1, 2: 2, 3: 1}


def _get_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


def test_execution_counters_are_read_from_the_executions_by_batch_size():
    """Executions were counted twice, per batch size and in model-level counters beside them; a copy of
    the per-size record (what a front end gets from the engine process) now carries every count."""
    from trtflow.serve.metrics import ModelStats, parse, render

    stats = ModelStats()
    for size, times in ((2, (1.0, 20.0, 3.0)), (2, (2.0, 30.0, 4.0)), (5, (1.5, 50.0, 2.5)), (600, (1, 1, 1))):
        stats.batch(size, *times)
    copy = ModelStats(by_size={size: list(runs) for size, runs in stats.by_size.items()})
    v = copy.values
    assert (v["nv_inference_exec_count"], v["nv_inference_count"]) == (4, 609)
    assert v["nv_inference_compute_infer_duration_us"] == 101.0 and v["nv_inference_compute_input_duration_us"] == 5.5
    assert copy.batch_counts == [0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 1] and v["nv_inference_count"] == 609
    assert parse(render({"m": copy})) == parse(render({"m": stats}))


def test_metadata_and_config_are_built_once_per_model(served, monkeypatch):
    """Both were rebuilt from the model's specs on every request."""
    built = []
    for name in ("model_metadata", "model_config"):
        def counted(*args, _build=getattr(protocol, name), _name=name, **kwargs):
            built.append(_name)
            return _build(*args, **kwargs)

        monkeypatch.setattr(protocol, name, counted)
    port = served.http_port
    metadata = [_get_json(port, "/v2/models/affine"), _get_json(port, "/v2/models/affine/versions/1")]
    config = [_get_json(port, "/v2/models/affine/config"), _get_json(port, "/v2/models/affine/config")]
    g = grpcclient.InferenceServerClient(f"127.0.0.1:{served.grpc_port}")
    assert metadata[0] == metadata[1] and metadata[0]["inputs"][0]["shape"] == [-1, 4]
    assert config[0] == config[1] and config[0]["max_batch_size"] == 8
    assert [i.name for i in g.get_model_metadata("affine").inputs] == ["x"]
    assert g.get_model_config("affine").config.max_batch_size == 8
    assert sorted(built) == ["model_config", "model_metadata"]


def test_engine_bench_reads_the_engine_process_counters(tmp_path, monkeypatch):
    """bench/serve_engine_bench.py read a "values" entry that the engine process's snapshot no longer
    sends, and failed after its timed part: it now reads the snapshot as the front ends do."""
    from pathlib import Path

    bench_dir = Path(__file__).resolve().parents[1] / "bench"
    monkeypatch.syspath_prepend(str(bench_dir))  # the spawned engine process imports the script by name
    import serve_engine_bench

    model = tmp_path / "affine.onnx"
    model.write_bytes(affine_model())
    r = serve_engine_bench.measure(str(model), np.ones((1, 4), np.float32), clients=4, seconds=0.3, max_batch=4)
    assert r["req_s"] > 0 and 1.0 <= r["mean_batch"] <= 4.0
