"""trtflow on Ray Serve, on a real two-node local Ray cluster (ray.cluster_utils.Cluster, one CPU
per node): replicas on both nodes answer the v2 protocol (plain HTTP and tritonclient) with the
results of in-process inference, and a replica killed under load is replaced while every request
either succeeds with the right answer or fails visibly to its client."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

APP = "tiny"


@pytest.fixture(scope="module")
def cluster(tiny_onnx):
    from ray.cluster_utils import Cluster

    from trtflow.cli.main import main
    from trtflow.serve.ray import RayServeOptions, build_app
    from trtflow.serve.repo.launcher import free_port

    # Serve's proxy prefers replicas on its own node; off here, so one proxy spreads over both nodes
    saved = os.environ.get("RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING")
    os.environ["RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"] = "0"
    mb = 1 << 20
    nodes = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * mb})
    nodes.add_node(num_cpus=1, object_store_memory=80 * mb)
    ray.init(address=nodes.address, log_to_driver=False)
    port = free_port()
    try:
        # one proxy (on the head): every node of this one-host cluster would bind the same port
        serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
        code = main(["serve", str(tiny_onnx), "--name", APP, "--ray", nodes.address, "--host", "127.0.0.1",
                     "--http-port", str(port), "--engine", "ort", "--max-batch", "8", "--max-queue-delay-us", "5000",
                     "--ray-replicas", "2", "--json"])
        assert code == 0
        # a second model through the API, mounted at its own model path
        options = RayServeOptions(name="tiny_api", engine="ort", engine_options={"threads": 1}, max_batch=4,
                                  num_replicas=1, num_cpus=0, route_prefix="/v2/models/tiny_api")
        serve.run(build_app(tiny_onnx, options), name="tiny_api", route_prefix=options.route_prefix)
        yield f"127.0.0.1:{port}", {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        serve.shutdown()
        ray.shutdown()
        nodes.shutdown()
        if saved is None:
            os.environ.pop("RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING", None)
        else:
            os.environ["RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"] = saved


@pytest.fixture(scope="module")
def reference(tiny_onnx):
    import trtflow

    with trtflow.load(tiny_onnx, "ort", threads=1) as engine:
        yield engine


def _x(seed: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16), dtype=np.float32)


def _post(url: str, x: np.ndarray, timeout: float = 20.0, model: str = APP) -> tuple[int, dict, dict]:
    body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}]}).encode()
    req = urllib.request.Request(f"http://{url}/v2/models/{model}/infer", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), {"error": exc.read().decode(errors="replace")}


def _logits(doc: dict) -> np.ndarray:
    out = {o["name"]: o for o in doc["outputs"]}["logits"]
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


def test_replicas_on_both_nodes_answer(cluster, reference):
    url, node_ids = cluster
    assert len(node_ids) == 2
    seen_nodes, seen_replicas = set(), set()
    for i in range(60):
        x = _x(i)
        status, headers, doc = _post(url, x)
        assert status == 200, doc
        np.testing.assert_allclose(_logits(doc), reference.infer({"x": x})["logits"], rtol=1e-5, atol=1e-6)
        seen_nodes.add(headers["trtflow-node"])
        seen_replicas.add(headers["trtflow-replica"])
        if len(seen_nodes) == 2 and i >= 10:
            break
    assert seen_nodes == node_ids, f"answers came from {seen_nodes} only"
    assert len(seen_replicas) == 2


def test_a_version_the_replica_does_not_serve_is_404(cluster, reference):
    """``/v2/models/{m}/versions/{v}/...`` served any v (7, "latest"), where trtflow serve and Triton
    answer 404 for a version that is not there; the served version answers."""
    url, _ = cluster
    x = _x(3)
    body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}]}).encode()

    def call(path: str, data: bytes | None = None) -> tuple[int, dict]:
        req = urllib.request.Request(f"http://{url}/v2/models/{APP}{path}", data)
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    for path, data in (("/versions/7/infer", body), ("/versions/7", None), ("/versions/7/config", None),
                       ("/versions/7/ready", None), ("/versions", None)):
        status, doc = call(path, data)
        assert status == 404, (path, status, doc)
    assert "has no version '7'; it serves version 1" in call("/versions/7/infer", body)[1]["error"]
    status, doc = call("/versions/1/infer", body)
    assert status == 200, doc
    np.testing.assert_allclose(_logits(doc), reference.infer({"x": x})["logits"], rtol=1e-5, atol=1e-6)
    assert call("/versions/1/config")[1]["max_batch_size"] == 8


def test_config_reports_the_batch_wait_the_replicas_use(cluster):
    """The replicas wait --max-queue-delay-us (batch_wait_timeout_s) for a batch, but their model
    config said max_queue_delay_microseconds 0."""
    url, _ = cluster
    with urllib.request.urlopen(f"http://{url}/v2/models/{APP}/config", timeout=20) as r:
        config = json.loads(r.read())
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 5000, config
    with urllib.request.urlopen(f"http://{url}/v2/models/tiny_api/config", timeout=20) as r:  # the default, 2 ms
        assert json.loads(r.read())["dynamic_batching"]["max_queue_delay_microseconds"] == 2000


def test_concurrent_requests_share_engine_calls(cluster, reference):
    """@serve.batch merges concurrent requests: some answers come from a call of several rows,
    each still equal to its own in-process result."""
    from concurrent.futures import ThreadPoolExecutor

    url, _ = cluster
    xs = [_x(500 + i) for i in range(24)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda x: _post(url, x), xs))
    for x, (status, headers, doc) in zip(xs, answers):
        assert status == 200, doc
        np.testing.assert_allclose(_logits(doc), reference.infer({"x": x})["logits"], rtol=1e-5, atol=1e-6)
    rows = [int(h["trtflow-batch-rows"]) for _, h, _ in answers]
    assert max(rows) > 1 and max(rows) <= 8, rows


def test_tritonclient_speaks_to_the_ray_ingress(cluster, reference):
    httpclient = pytest.importorskip("tritonclient.http")
    url, _ = cluster
    client = httpclient.InferenceServerClient(url)
    try:
        assert client.is_server_live() and client.is_model_ready(APP)
        assert client.get_model_config(APP)["max_batch_size"] == 8
        assert [i["name"] for i in client.get_model_metadata(APP)["inputs"]] == ["x"]
        x = _x(7, n=3)
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        result = client.infer(APP, [inp], outputs=[httpclient.InferRequestedOutput("feat", binary_data=True)])
        np.testing.assert_allclose(result.as_numpy("feat"), reference.infer({"x": x})["feat"], rtol=1e-5, atol=1e-6)
        bad = httpclient.InferInput("x", [1, 3, 8, 8], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3, 8, 8), np.float32))
        with pytest.raises(Exception, match="shape"):
            client.infer(APP, [bad])
    finally:
        client.close()


def test_second_model_on_its_own_route(cluster, reference):
    httpclient = pytest.importorskip("tritonclient.http")
    url, _ = cluster
    client = httpclient.InferenceServerClient(url)
    try:
        assert client.get_model_config("tiny_api")["max_batch_size"] == 4
        x = _x(11, n=2)
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("tiny_api", [inp])
        np.testing.assert_allclose(result.as_numpy("logits"), reference.infer({"x": x})["logits"], rtol=1e-5, atol=1e-6)
    finally:
        client.close()


def test_cli_deploys_from_another_process(cluster, tiny_onnx, reference):
    """``trtflow serve --ray ADDRESS`` from a fresh process (a new Ray driver): "/" is taken by the
    first application, so the model is mounted at its own model path and answers there."""
    import subprocess
    import sys

    httpclient = pytest.importorskip("tritonclient.http")
    url, _ = cluster
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.run([sys.executable, "-m", "trtflow", "serve", str(tiny_onnx), "--name", "tiny_cli", "--ray",
                           address, "--engine", "ort", "--ray-cpus", "0", "--max-batch", "2", "--threads", "1",
                           "--json"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["models"] == ["tiny_cli"]
    client = httpclient.InferenceServerClient(url)
    try:
        x = _x(21)
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer("tiny_cli", [inp]).as_numpy("logits")
        assert client.get_model_config("tiny_cli")["max_batch_size"] == 2
    finally:
        client.close()
    np.testing.assert_allclose(got, reference.infer({"x": x})["logits"], rtol=1e-5, atol=1e-6)


def test_running_serve_keeps_its_http_port(cluster, tiny_onnx, capsys):
    """Serve's HTTP options are fixed while it runs: --host/--http-port for another address were
    ignored, and the printed URL named a port nothing listened on. Another address is refused,
    naming both and the fix; without them the model goes to the running proxy, whose URL is printed."""
    from trtflow.cli.main import main
    from trtflow.errors import UsageError
    from trtflow.serve.ray import RayServeOptions, deploy
    from trtflow.serve.repo.launcher import free_port

    url, _ = cluster
    address = ray.get_runtime_context().gcs_address
    other = free_port()
    args = ["serve", str(tiny_onnx), "--name", "tiny_port", "--ray", address, "--engine", "ort", "--ray-cpus", "0",
            "--max-batch", "2", "--threads", "1", "--json"]
    assert main([*args, "--http-port", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{other}" in err and url in err and "serve shutdown" in err, err
    with pytest.raises(UsageError, match=f"0.0.0.0:{url.rsplit(':', 1)[1]}"):
        deploy(tiny_onnx, RayServeOptions(name="tiny_port"), address=address, host="0.0.0.0")
    assert "tiny_port" not in serve.status().applications
    try:
        assert main(args) == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert printed["urls"] == {"tiny_port": f"http://{url}"}
        status, _, doc = _post(url, _x(51), model="tiny_port")
        assert status == 200, doc
    finally:
        serve.delete("tiny_port")


def test_replica_answers_503_past_the_timeout(cluster, tiny_onnx):
    """The replicas had no request timeout (``trtflow serve --timeout-s`` did not reach them); the
    ONNX Runtime options apply to a replica whose engine 'auto' resolves to ort on its node."""
    from trtflow.serve.ray import RayServeOptions, build_app

    url, _ = cluster
    options = RayServeOptions(name="tiny_late", ort_options={"threads": 1, "spinning": False}, timeout_s=1e-6,
                              num_cpus=0, route_prefix="/v2/models/tiny_late")
    serve.run(build_app(tiny_onnx, options), name="tiny_late", route_prefix=options.route_prefix)
    try:
        status, _, doc = _post(url, _x(31), model="tiny_late")
    finally:
        serve.delete("tiny_late")
    assert status == 503 and "no answer from model 'tiny_late' within 1e-06 s" in doc["error"], doc


def test_replica_limits_the_body_and_the_queue(cluster, tiny_onnx):
    """``trtflow serve --max-body-mb`` and ``--max-queue`` did not reach the replicas: any body was
    read, and requests queued without bound. Here a body over the limit is 413, and with one request
    held in the replica (it waits 2 s for a batch) and one queued at the proxy, a third is 503."""
    from concurrent.futures import ThreadPoolExecutor

    from trtflow.serve.ray import RayServeOptions, build_app

    url, _ = cluster
    options = RayServeOptions(name="tiny_limits", engine="ort", max_batch=8, batch_wait_timeout_s=2.0,
                              max_ongoing_requests=1, max_queued_requests=1, max_body=50_000,
                              num_cpus=0, route_prefix="/v2/models/tiny_limits")
    serve.run(build_app(tiny_onnx, options), name="tiny_limits", route_prefix=options.route_prefix)
    try:
        status, _, doc = _post(url, _x(41, n=8), model="tiny_limits")
        assert status == 413 and "limit is 50000 bytes" in doc["error"], (status, doc)
        with ThreadPoolExecutor(2) as pool:
            held = pool.submit(_post, url, _x(42), 20.0, "tiny_limits")
            time.sleep(0.5)
            queued = pool.submit(_post, url, _x(43), 20.0, "tiny_limits")
            time.sleep(0.5)
            refused, _, doc = _post(url, _x(44), model="tiny_limits")
            answered = [held.result()[0], queued.result()[0]]
    finally:
        serve.delete("tiny_limits")
    assert refused == 503, doc
    assert answered == [200, 200]


def _replicas() -> dict[str, str]:
    """Serve replica actor name -> namespace, for the live replicas of the app."""
    return {a["name"]: a["namespace"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_REPLICA::") and f"{APP}#" in a["name"]}


def _running() -> int:
    """Replicas of the app that Serve reports RUNNING."""
    app = serve.status().applications.get(APP)
    return app.deployments[APP].replica_states.get("RUNNING", 0) if app else 0


def test_killed_replica_is_replaced_and_no_request_is_lost(cluster, reference):
    url, _ = cluster
    before = _replicas()
    assert len(before) == 2
    stop = threading.Event()
    records: list[tuple[str, object]] = []  # ("ok" | "wrong" | "failed", detail)
    lock = threading.Lock()

    def client(seed: int) -> None:
        i = 0
        while not stop.is_set():
            x = _x(seed * 1000 + i)
            i += 1
            try:
                status, headers, doc = _post(url, x, timeout=30)
            except (urllib.error.URLError, OSError) as exc:  # the client sees the failure
                record = ("failed", repr(exc))
            else:
                if status != 200:
                    record = ("failed", status)
                elif np.allclose(_logits(doc), reference.infer({"x": x})["logits"], rtol=1e-5, atol=1e-6):
                    record = ("ok", headers["trtflow-replica"])
                else:
                    record = ("wrong", doc)
            with lock:
                records.append(record)

    threads = [threading.Thread(target=client, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    victim = sorted(before)[0]
    ray.kill(ray.get_actor(victim, namespace=before[victim]), no_restart=True)
    killed_at = len(records)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _replicas()
        if len(now) == 2 and victim not in now and _running() == 2:
            break
        time.sleep(0.5)
    time.sleep(3.0)  # load on the replacement
    stop.set()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a client hung: a request was lost"
    after = _replicas()
    assert victim not in after and len(after) == 2, f"the killed replica was not replaced: {sorted(after)}"
    kinds = [r[0] for r in records]
    assert "wrong" not in kinds
    assert kinds.count("ok") > killed_at  # requests kept succeeding after the kill
    new_ids = {name.rsplit("#", 1)[-1] for name in after} - {name.rsplit("#", 1)[-1] for name in before}
    served_by = {r[1] for r in records if r[0] == "ok"}
    assert new_ids & served_by, f"the replacement replica {new_ids} answered no request (answers from {served_by})"


def test_deployment_options():
    from trtflow.errors import UsageError
    from trtflow.serve.ray import RayServeOptions

    fixed = RayServeOptions(name="m", num_replicas=3, num_gpus=1).deployment_options()
    assert fixed["num_replicas"] == 3 and fixed["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1}
    scaled = RayServeOptions(name="m", autoscaling={"min_replicas": 1, "max_replicas": 4}).deployment_options()
    assert "num_replicas" not in scaled and scaled["autoscaling_config"]["max_replicas"] == 4
    with pytest.raises(UsageError, match="num_replicas"):
        RayServeOptions(num_replicas=0).deployment_options()


def test_bad_autoscale_flag_is_one_line(tiny_onnx, capsys):
    from trtflow.cli.main import main

    assert main(["serve", str(tiny_onnx), "--ray", "auto", "--ray-autoscale", "4:1"]) == 2
    err = capsys.readouterr().err
    assert "--ray-autoscale" in err and len(err.strip().splitlines()) == 1
