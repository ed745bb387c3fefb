"""A model version the server does not serve is not ready and has no statistics (HTTP and gRPC)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

pytest.importorskip("aiohttp")
grpcclient = pytest.importorskip("tritonclient.grpc")

import trtflow  # noqa: E402
from tests.test_serve import affine_model  # noqa: E402
from trtflow.serve.model import ServedModel  # noqa: E402
from trtflow.serve.server import BackgroundServer, ServeOptions  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_unknown_version_has_no_stats_and_is_not_ready():
    """Stats of version 7 answered version 1's; gRPC ModelReady said version 7 was ready."""
    engine = trtflow.load(affine_model(), engine="ort")
    with BackgroundServer([ServedModel("affine", [engine])], ServeOptions(http_port=0, grpc_port=0)) as s:
        assert _status(s.http_port, "/v2/models/affine/versions/1/stats") == 200
        assert _status(s.http_port, "/v2/models/affine/versions/7/stats") == 404
        assert _status(s.http_port, "/v2/models/affine/versions/7/ready") == 404
        c = grpcclient.InferenceServerClient(f"127.0.0.1:{s.grpc_port}")
        assert c.is_model_ready("affine") and c.is_model_ready("affine", "1")
        assert not c.is_model_ready("affine", "7")
        assert c.get_inference_statistics("affine", "1").model_stats[0].name == "affine"
        with pytest.raises(InferenceServerException) as err:
            c.get_inference_statistics("affine", "7")
        assert "NOT_FOUND" in str(err.value.status())


def test_unknown_output_is_refused_before_the_model_runs():
    """The request ran (and counted as a success in /metrics and stats) before the 400 for its output."""
    import json

    import numpy as np

    from trtflow.serve import metrics

    engine = trtflow.load(affine_model(), engine="ort")
    with BackgroundServer([ServedModel("affine", [engine])], ServeOptions(http_port=0, grpc_port=0)) as s:
        x = np.ones((1, 4), np.float32)
        head = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                       "parameters": {"binary_data_size": 16}}], "outputs": [{"name": "zzz"}]}).encode()
        for body, headers in ((json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}],
                                           "outputs": [{"name": "zzz"}]}).encode(), {}),  # aiohttp's path
                              (head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))})):  # the lean path
            req = urllib.request.Request(f"http://127.0.0.1:{s.http_port}/v2/models/affine/infer", data=body,
                                         headers=headers, method="POST")
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=10)
            assert err.value.code == 400 and "zzz" in json.loads(err.value.read())["error"]
        c = grpcclient.InferenceServerClient(f"127.0.0.1:{s.grpc_port}")
        i = grpcclient.InferInput("x", [1, 4], "FP32")
        i.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException, match="zzz"):
            c.infer("affine", [i], outputs=[grpcclient.InferRequestedOutput("zzz")])
        with urllib.request.urlopen(f"http://127.0.0.1:{s.http_port}/metrics", timeout=10) as r:
            values = metrics.parse(r.read().decode())
        label = '{model="affine",version="1"}'
        assert values["nv_inference_exec_count" + label] == 0
        assert values["nv_inference_request_success" + label] == 0
