"""trtflow loadgen against a real trtflow server on 127.0.0.1 (HTTP binary and JSON, gRPC)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("tritonclient.grpc")

import trtflow  # noqa: E402
from tests.test_serve import affine_model  # noqa: E402
from trtflow.cli.main import main  # noqa: E402
from trtflow.serve import metrics  # noqa: E402
from trtflow.serve.model import BatchConfig, ServedModel  # noqa: E402
from trtflow.serve.server import BackgroundServer, ServeOptions  # noqa: E402


@pytest.fixture(scope="module")
def server():
    model = ServedModel("affine", [trtflow.load(affine_model(), engine="ort")], BatchConfig(max_batch=8))
    with BackgroundServer([model], ServeOptions(http_port=0, grpc_port=0)) as s:
        yield s


@pytest.mark.parametrize("protocol, extra", [("http", []), ("http", ["--json-tensors"]), ("grpc", [])])
def test_loadgen_levels(server, capsys, protocol, extra):
    port = server.http_port if protocol == "http" else server.grpc_port
    before = server.server.stats["affine"].values["nv_inference_request_success"]
    code = main(["loadgen", f"127.0.0.1:{port}", "--model", "affine", "--concurrency", "1,4", "--duration", "0.5",
                 "--warmup", "0.1", "--protocol", protocol, "--shapes", "x:2x4", "--json", *extra])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert [lvl["concurrency"] for lvl in report["levels"]] == [1, 4]
    for lvl in report["levels"]:
        assert lvl["requests"] > 0 and lvl["errors"] == 0
        assert lvl["infer_per_s"] == pytest.approx(2 * lvl["throughput"])
        assert 0 < lvl["p50"] <= lvl["p90"] <= lvl["p95"] <= lvl["p99"] <= lvl["max"]
    served = server.server.stats["affine"].values["nv_inference_request_success"] - before
    assert served >= sum(lvl["requests"] for lvl in report["levels"])


def test_loadgen_counts_errors_and_plots(server, capsys, tmp_path):
    png = tmp_path / "load.png"
    code = main(["loadgen", f"127.0.0.1:{server.http_port}", "--model", "affine", "--concurrency", "2", "--duration", "0.3",
                 "--warmup", "0", "--shapes", "x:9x4", "--plot", str(png)])  # 9 rows > max batch 8: every request is a 400
    assert code == 0 and png.stat().st_size > 1000
    assert "errors" in capsys.readouterr().out
    text = metrics.parse(__import__("urllib.request").request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics").read().decode())
    assert text['nv_inference_request_failure{model="affine",version="1"}'] > 0


def test_loadgen_usage_errors(server, capsys):
    assert main(["loadgen", "nohost", "--model", "affine"]) == 2
    assert main(["loadgen", f"127.0.0.1:{server.http_port}", "--model", "nope", "--duration", "0.1"]) == 2
    assert "refused model 'nope'" in capsys.readouterr().err
    assert main(["loadgen", f"127.0.0.1:{server.http_port}", "--model", "affine", "--concurrency", "0"]) == 2


@pytest.mark.parametrize("plot, says", [("dir.png", "is a folder"), ("load.jpg", ".png"), ("", "--plot")])
def test_loadgen_refuses_a_bad_plot_path_before_any_load(server, capsys, tmp_path, plot, says):
    """A --plot path that cannot be written (a folder) was found only after every level had run, and the error
    then lost the measured results (the plot is drawn before they are printed); an empty one drew nothing, a
    .jpg name was written as JPEG. Checked before the first request, as bench checks its --plot."""
    (tmp_path / "dir.png").mkdir()
    before = server.server.stats["affine"].values["nv_inference_request_success"]
    code = main(["loadgen", f"127.0.0.1:{server.http_port}", "--model", "affine", "--concurrency", "1",
                 "--duration", "0.2", "--warmup", "0", "--shapes", "x:1x4", "--plot", str(tmp_path / plot) if plot else ""])
    err = capsys.readouterr().err
    assert code == 2 and says in err, err
    assert server.server.stats["affine"].values["nv_inference_request_success"] == before


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("shape, says", [("y:1x4", "not an input of model 'affine'; its inputs are ['x']"),
                                         ("x:1x5", "shaped ?x4"), ("x:4", "shaped ?x4")])
def test_loadgen_refuses_shapes_the_model_cannot_take_before_any_load(server, capsys, protocol, shape, says):
    """--shapes y:1x4 (no such input) was dropped without a word and the run went on at batch 1; x:1x5 or x:4
    measured nothing but refused requests (every one an error)."""
    port = server.http_port if protocol == "http" else server.grpc_port
    before = server.server.stats["affine"].values["nv_inference_request_success"]
    code = main(["loadgen", f"127.0.0.1:{port}", "--model", "affine", "--concurrency", "1", "--duration", "0.2",
                 "--warmup", "0", "--protocol", protocol, "--shapes", shape])
    err = capsys.readouterr().err
    assert code == 2 and says in err, err
    assert server.server.stats["affine"].values["nv_inference_request_success"] == before


def test_loadgen_processes_measure_from_when_they_have_started(server, capsys):
    """With --processes 2 the window's clock started before the processes were spawned (a second or more), so
    a short level measured nothing (0 requests) and a long one too few: req/s was divided by time the clients
    had not yet run."""
    code = main(["loadgen", f"127.0.0.1:{server.http_port}", "--model", "affine", "--concurrency", "2",
                 "--duration", "0.3", "--warmup", "0", "--processes", "2", "--shapes", "x:1x4", "--json"])
    assert code == 0
    [level] = json.loads(capsys.readouterr().out)["levels"]
    assert level["requests"] > 0 and level["errors"] == 0, level


def test_loadgen_quotes_a_model_name_with_a_space_or_accent(capsys):
    """A model served as "é m" (serve --name) met an internal InvalidURL / UnicodeEncodeError: the name went
    into the URL and the request line unquoted."""
    model = ServedModel("é m", [trtflow.load(affine_model(), engine="ort")], BatchConfig(max_batch=8))
    with BackgroundServer([model], ServeOptions(http_port=0, grpc_port=0)) as s:
        for extra in ([], ["--json-tensors"]):
            code = main(["loadgen", f"127.0.0.1:{s.http_port}", "--model", "é m", "--concurrency", "1", "--duration",
                         "0.3", "--warmup", "0", "--json", *extra])
            out = capsys.readouterr()
            assert code == 0, out.err
            [level] = json.loads(out.out)["levels"]
            assert level["requests"] > 0 and level["errors"] == 0, level
