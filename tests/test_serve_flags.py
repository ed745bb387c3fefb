"""trtflow serve: flags that cannot apply to the chosen engine are refused, not ignored."""

from __future__ import annotations

import pytest

import trtflow.backends  # noqa: F401 - binds trtflow for trtflow.serve.ray below
from tests.conftest import call_cli


@pytest.fixture
def deployed(monkeypatch) -> list:
    """The RayServeOptions of each deployment ``serve --ray`` makes (``deploy`` is replaced: no cluster)."""
    import trtflow.serve.ray

    calls: list = []
    monkeypatch.setattr(trtflow.serve.ray, "deploy", lambda model, opts, **kw: calls.append(opts) or "http://h:1")
    return calls


@pytest.mark.parametrize("flag", ["--fp16", "--bf16", "--best", "--int8"])
@pytest.mark.parametrize("engine", ["auto", "torch"])
def test_precision_flags_on_a_pt2_package_are_refused(tmp_path, loads, flag, engine):
    """serve with a .pt2 ran the package's own precision and dropped --fp16/--bf16/--best (bench refuses)."""
    pt2 = tmp_path / "m.pt2"
    pt2.write_bytes(b"")
    proc = call_cli("serve", str(pt2), "--engine", engine, flag, "--http-port", "0", "--grpc-port", "-1")
    assert proc.returncode == 2 and flag in proc.stderr and ".pt2" in proc.stderr, proc.stderr
    assert "stopped by the test" not in proc.stderr and not loads


def test_pt2_without_precision_flags_still_loads(tmp_path, loads):
    pt2 = tmp_path / "m.pt2"
    pt2.write_bytes(b"")
    proc = call_cli("serve", str(pt2), "--http-port", "0", "--grpc-port", "-1")
    assert "stopped by the test" in proc.stderr, proc.stderr
    assert loads and loads[0][1] == "torch"


def test_ray_deployment_gets_the_labels(tiny_onnx, tmp_path, deployed):
    """--labels reached the local server but not the Ray replicas: classification answered without labels."""
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    proc = call_cli("serve", str(tiny_onnx), "--ray", "auto", "--labels", str(labels))
    assert proc.returncode == 0, proc.stderr
    assert [list(o.labels) for o in deployed] == [["cat", "dog"]]


@pytest.mark.parametrize("flags", [["--fp16"], ["--best"], ["--shapes", "x:1x3x16x16"]])
def test_ray_with_engine_auto_refuses_flags_it_would_drop(tiny_onnx, deployed, flags):
    """--ray with --engine auto deployed without the precision and shape flags (TensorRT replicas built FP32)."""
    proc = call_cli("serve", str(tiny_onnx), "--ray", "auto", *flags)
    assert proc.returncode == 2 and flags[0] in proc.stderr and "--engine tensorrt" in proc.stderr, proc.stderr
    assert not deployed
    proc = call_cli("serve", str(tiny_onnx), "--ray", "auto", "--engine", "tensorrt", *flags)
    assert proc.returncode == 0, proc.stderr
    assert len(deployed) == 1 and ("build_config" in deployed[0].engine_options
                                   or "profiles" in deployed[0].engine_options)


@pytest.mark.parametrize("engine", ["trt", "TensorRT"])
def test_ray_engine_alias_keeps_the_precision_flags(tiny_onnx, deployed, engine):
    """--engine trt on --ray deployed without --fp16 (engine_options saw the alias, not tensorrt)."""
    proc = call_cli("serve", str(tiny_onnx), "--ray", "auto", "--engine", engine, "--fp16")
    assert proc.returncode == 0, proc.stderr
    assert len(deployed) == 1 and deployed[0].engine_options["build_config"].fp16


@pytest.mark.parametrize("engine", ["auto", "ort"])
def test_ray_deployment_gets_the_threads_and_the_timeout(tiny_onnx, deployed, engine):
    """--threads and --timeout-s reached the local server but not the Ray replicas (ONNX Runtime's
    own thread count, and no 503 however long a request waited)."""
    proc = call_cli("serve", str(tiny_onnx), "--ray", "auto", "--engine", engine, "--threads", "2", "--timeout-s", "5")
    assert proc.returncode == 0, proc.stderr
    assert len(deployed) == 1 and deployed[0].timeout_s == 5.0
    ort = [{**o.engine_options, **o.ort_options} for o in deployed]  # what a replica whose engine is ort loads with
    assert ort[0] == {"providers": ["cpu"], "threads": 2, "spinning": False}  # as each local ort instance gets them
    proc = call_cli("serve", str(tiny_onnx), "--ray", "auto", "--engine", engine, "--ort-spinning")
    assert proc.returncode == 0, proc.stderr
    assert {**deployed[1].engine_options, **deployed[1].ort_options} == {"providers": ["cpu"], "spinning": True}
    assert deployed[1].timeout_s == 30.0


@pytest.mark.parametrize("flags, instead", [
    (["--instances", "2"], "--ray-replicas"),
    (["--workers", "2"], "--ray-replicas"),
    (["--preferred-batch-sizes", "4", "8"], "--max-queue-delay-us"),
    (["--grpc-port", "9001"], "--http-port"),
    (["--shm-slots", "4"], "--workers"),
    (["--shm-slot-rows", "2"], "--workers"),
    (["--access-log", "off"], "logs/serve"),
    (["--idle-timeout-s", "5"], "keep-alive"),
    (["--ray-replicas", "3", "--ray-autoscale", "1:4"], "--ray-autoscale"),
])
def test_ray_refuses_flags_it_cannot_honour(tiny_onnx, deployed, flags, instead):
    """serve --ray deployed as if these flags had not been given (one engine per replica whatever
    --instances said, no gRPC listener on --grpc-port, no access log in FILE, ...)."""
    proc = call_cli("serve", str(tiny_onnx), "--ray", "auto", *flags)
    assert proc.returncode == 2 and flags[0] in proc.stderr and instead in proc.stderr, proc.stderr
    assert "--ray" in proc.stderr and not deployed


def test_ray_deployment_gets_the_queue_body_and_drain_limits(tiny_onnx, deployed):
    """--max-queue, --max-body-mb, --drain-timeout-s and (with --engine auto) --providers reached the
    local server but not the Ray replicas; --grpc-port -1 (no gRPC) is what --ray does anyway."""
    proc = call_cli("serve", str(tiny_onnx), "--ray", "auto", "--max-queue", "7", "--max-body-mb", "0.5",
                    "--drain-timeout-s", "4", "--grpc-port", "-1", "--providers", "cuda,cpu")
    assert proc.returncode == 0, proc.stderr
    assert len(deployed) == 1 and deployed[0].ort_options["providers"] == ["cuda", "cpu"]
    deployment = deployed[0].deployment_options()
    assert deployment["max_queued_requests"] == 7 and deployment["graceful_shutdown_timeout_s"] == 4.0
    assert deployed[0].max_body == 1 << 19
    proc = call_cli("serve", str(tiny_onnx), "--ray", "auto")  # the flags' defaults, as on the local server
    assert proc.returncode == 0, proc.stderr
    assert deployed[1].deployment_options()["max_queued_requests"] == 1024 and deployed[1].max_body == 64 << 20


@pytest.mark.parametrize("flags", [["--ray-replicas", "4"], ["--ray-autoscale", "1:4"], ["--ray-gpus", "1"],
                                   ["--ray-cpus", "2"]])
def test_ray_flags_without_ray_are_refused(tiny_onnx, loads, flags):
    """--ray-replicas 4 without --ray served one engine here, as if the flag had not been given."""
    proc = call_cli("serve", str(tiny_onnx), *flags, "--http-port", "0", "--grpc-port", "-1")
    assert proc.returncode == 2 and flags[0] in proc.stderr and "--ray ADDRESS" in proc.stderr, proc.stderr
    assert not loads


@pytest.mark.parametrize("flags", [["--shm-slots", "4"], ["--shm-slot-rows", "2"]])
def test_shm_flags_with_one_worker_are_refused(tiny_onnx, loads, flags):
    """--shm-slots/--shm-slot-rows with --workers 1 served in one process with no shared memory, as if
    the flags had not been given."""
    proc = call_cli("serve", str(tiny_onnx), *flags, "--http-port", "0", "--grpc-port", "-1")
    assert proc.returncode == 2 and flags[0] in proc.stderr and "--workers N" in proc.stderr, proc.stderr
    assert "stopped by the test" not in proc.stderr and not loads
    proc = call_cli("serve", str(tiny_onnx), "--shm-slots", "128", "--shm-slot-rows", "1", "--http-port", "0",
                    "--grpc-port", "-1")  # the defaults ask for nothing
    assert "stopped by the test" in proc.stderr, proc.stderr


@pytest.mark.parametrize("engine, suffix", [("torch", ".onnx"), ("tensorrt", ".onnx"), ("trt", ".plan"),
                                            ("auto", ".pt2"), ("auto", ".plan")])
def test_providers_without_onnx_runtime_are_refused(tmp_path, loads, engine, suffix):
    """--providers cuda with the torch or TensorRT engine (named, or what --engine auto picks) was
    dropped: the model served as if the flag had not been given."""
    model = tmp_path / f"m{suffix}"
    model.write_bytes(b"")
    proc = call_cli("serve", str(model), "--engine", engine, "--providers", "cuda", "--http-port", "0",
                    "--grpc-port", "-1")
    assert proc.returncode == 2 and "--providers" in proc.stderr and "--engine ort" in proc.stderr, proc.stderr
    assert "stopped by the test" not in proc.stderr and not loads


def test_providers_reach_onnx_runtime_when_auto_picks_it(tiny_onnx, loads, monkeypatch):
    """--engine auto on an .onnx: the providers go to ONNX Runtime; where TensorRT runs, auto picks it
    and the flag is refused instead of dropped."""
    import trtflow.backends

    monkeypatch.setattr(trtflow.backends, "tensorrt_usable", lambda: False)
    proc = call_cli("serve", str(tiny_onnx), "--providers", "cuda,cpu", "--http-port", "0", "--grpc-port", "-1")
    assert "stopped by the test" in proc.stderr, proc.stderr
    assert loads[-1][1] == "ort" and loads[-1][2]["providers"] == ["cuda", "cpu"]
    monkeypatch.setattr(trtflow.backends, "tensorrt_usable", lambda: True)
    proc = call_cli("serve", str(tiny_onnx), "--providers", "cuda,cpu", "--http-port", "0", "--grpc-port", "-1")
    assert proc.returncode == 2 and "tensorrt" in proc.stderr and "--engine ort" in proc.stderr, proc.stderr
    assert len(loads) == 1


def test_ray_with_a_named_engine_refuses_providers(tiny_onnx, deployed):
    """--ray --engine torch deployed without --providers (only ONNX Runtime replicas take it)."""
    proc = call_cli("serve", str(tiny_onnx), "--ray", "auto", "--engine", "torch", "--providers", "cuda")
    assert proc.returncode == 2 and "--providers" in proc.stderr and "--engine ort" in proc.stderr, proc.stderr
    assert not deployed
