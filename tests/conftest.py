"""Shared fixtures: a tiny model set made here, and skips for hardware this machine lacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _gpu_count() -> int:
    from trtflow.backends.devices import visible_gpus

    return visible_gpus()


def pytest_collection_modifyitems(config, items):
    has_cuda = _cuda()
    from trtflow.backends import tensorrt_usable

    has_trt = tensorrt_usable()
    gpus = _gpu_count()
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none here"))
        if "multi_gpu" in item.keywords and gpus < 2:
            item.add_marker(pytest.mark.skip(reason=f"needs two CUDA GPUs on one host; {gpus} here"))
        if "tensorrt_gpu" in item.keywords and not has_trt:
            item.add_marker(
                pytest.mark.skip(
                    reason="needs a TensorRT that executes engines on this machine's GPU "
                    "(none here: full TensorRT is not installed and TensorRT-RTX cannot run on this GPU or CPU)"
                )
            )


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_onnx(models_dir) -> Path:
    """A conv + relu + linear classifier, input 'x' (batch, 3, 16, 16) float32, outputs 'logits' and 'feat'."""
    from tests.models.tiny import export_tiny

    return export_tiny(models_dir / "tiny.onnx")


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m trtflow ARGS`` as a subprocess, capturing text output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "trtflow", *args], capture_output=True, text=True, cwd=cwd or ROOT, env=full_env, timeout=900
    )


def assert_no_not_writable_warning(code: str) -> None:
    """Run ``code`` in a fresh Python with torch's "The given NumPy array is not writable" warning as an
    error (torch warns once per process, so only a fresh one shows it)."""
    child = "import warnings\nwarnings.filterwarnings('error', message='.*not writable')\n" + code
    run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]


def call_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``trtflow ARGS`` in this process (``trtflow.cli.main.main``), capturing stdout and stderr
    like ``run_cli``: the fast way to check behaviour. ``env`` is set for the call only."""
    import contextlib
    import io

    from trtflow.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess(["trtflow", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def flavor():
    """The installed TensorRT flavor (TensorRT-RTX builds on the CPU); skips when there is none."""
    from trtflow.backends.tensorrt.flavor import flavor_available

    found = flavor_available()
    if found is None:
        pytest.skip("neither tensorrt nor tensorrt_rtx is installed")
    return found


@pytest.fixture
def loads(monkeypatch) -> list:
    """Every ``trtflow.backends.load`` call as (model, engine, options); the call then stops the command
    (so a CLI test sees what reached the engine without building or running anything)."""
    import trtflow.backends
    from trtflow.errors import UsageError

    seen = []

    def fake_load(model, engine="auto", **opts):
        seen.append((model, engine, opts))
        raise UsageError("stopped by the test")

    monkeypatch.setattr(trtflow.backends, "load", fake_load)
    return seen
