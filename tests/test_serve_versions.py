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
