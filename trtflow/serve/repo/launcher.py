"""Start the real ``tritonserver`` that the ``nvidia-pytriton`` wheel bundles, on a model repository.

The wheel ships ``pytriton/tritonserver/bin/tritonserver``, the Python backend
(``backends/python/libtriton_python.so``), one backend stub per Python version and the shared
libraries in ``nvidia_pytriton.libs``. It needs numpy < 2, so it usually lives in its own
virtual environment; ``find_bundled_tritonserver(python)`` asks that environment's Python where
the pieces are. ``TritonServer`` then lays out a backend folder (the stub for that Python),
puts the bundled libraries and that Python's ``libpython`` on ``LD_LIBRARY_PATH`` and the
environment's ``bin`` first on ``PATH`` (the stub runs models with that Python, so trtflow must
be installed there too), and waits for ``/v2/health/ready``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from trtflow.errors import EngineError, ModelLoadError

log = logging.getLogger(__name__)

_PROBE = """
import json, sys, sysconfig, pathlib, pytriton
root = pathlib.Path(pytriton.__file__).parent
print(json.dumps({"dist": str(root / "tritonserver"), "libs": str(root.parent / "nvidia_pytriton.libs"),
                  "libdir": sysconfig.get_config_var("LIBDIR") or "", "prefix": sys.prefix,
                  "version": "%d.%d" % sys.version_info[:2]}))
"""


@dataclass(frozen=True)
class BundledTriton:
    """Where the pieces of pytriton's tritonserver are, for one Python environment."""

    binary: Path
    python_backend: Path
    stub: Path
    libs: Path
    libpython_dir: Path
    env_bin: Path


def find_bundled_tritonserver(python: str | os.PathLike) -> BundledTriton:
    """Locate the tritonserver of the ``nvidia-pytriton`` installed for ``python``.

    Args:
        python: the Python executable of the environment holding nvidia-pytriton (and trtflow).

    Raises:
        ModelLoadError: that Python is missing, has no nvidia-pytriton, or the wheel lacks a
            piece (the binary, the Python backend, the stub for its Python version).
    """
    python = Path(python)
    if not python.exists():
        raise ModelLoadError(f"Python {python} not found; create the environment with nvidia-pytriton first "
                             "(make .venv-triton)")
    probe = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelLoadError(f"{python} cannot import pytriton ({last}); install it there: "
                             f"{python} -m pip install nvidia-pytriton 'numpy<2'")
    info = json.loads(probe.stdout.strip().splitlines()[-1])
    dist = Path(info["dist"])
    found = BundledTriton(
        binary=dist / "bin" / "tritonserver",
        python_backend=dist / "backends" / "python",
        stub=dist / "python_backend_stubs" / info["version"] / "triton_python_backend_stub",
        libs=Path(info["libs"]),
        libpython_dir=Path(info["libdir"]),
        env_bin=python.parent,
    )
    for what, path in (("tritonserver binary", found.binary), ("Python backend", found.python_backend),
                       (f"Python {info['version']} backend stub", found.stub), ("bundled libraries", found.libs)):
        if not path.exists():
            raise ModelLoadError(f"the nvidia-pytriton of {python} lacks its {what} ({path})")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class TritonServer:
    """A tritonserver process on a model repository; a context manager.

    Args:
        repo: the model repository.
        python: the Python of the environment with nvidia-pytriton (and trtflow).
        host: bind address of HTTP and gRPC.
        http_port, grpc_port, metrics_port: 0 picks free ports.
        extra_args: more tritonserver flags (e.g. ``["--log-verbose", "1"]``).
        ready_timeout_s: how long ``start`` waits for the server and its models to be ready.

    Attributes:
        http_url: ``host:port`` for ``tritonclient.http``; ``grpc_url`` likewise.
        log_path: tritonserver's output.
    """

    def __init__(self, repo: str | os.PathLike, python: str | os.PathLike, host: str = "127.0.0.1",
                 http_port: int = 0, grpc_port: int = 0, metrics_port: int = 0,
                 extra_args: Sequence[str] = (), ready_timeout_s: float = 120.0):
        self.repo = Path(repo)
        self.bundle = find_bundled_tritonserver(python)
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        self.extra_args = list(extra_args)
        self.ready_timeout_s = ready_timeout_s
        self.http_url = f"{host}:{self.http_port}"
        self.grpc_url = f"{host}:{self.grpc_port}"
        self._work = Path(tempfile.mkdtemp(prefix="trtflow-triton-"))
        self.log_path = self._work / "tritonserver.log"
        self._process: subprocess.Popen | None = None

    def _backends(self) -> Path:
        """A backend folder whose Python backend uses the stub of this environment's Python."""
        python = self._work / "backends" / "python"
        python.mkdir(parents=True)
        for item in self.bundle.python_backend.iterdir():
            if item.is_file():
                (python / item.name).symlink_to(item)
        shutil.copy2(self.bundle.stub, python / "triton_python_backend_stub")
        return python.parent

    def _env(self) -> dict:
        env = dict(os.environ)
        libs = [str(self.bundle.libs), str(self.bundle.libpython_dir)]
        env["LD_LIBRARY_PATH"] = ":".join(libs + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
        env["PATH"] = f"{self.bundle.env_bin}:{env.get('PATH', '')}"
        env.pop("PYTHONHOME", None)
        return env

    def command(self) -> list[str]:
        """The tritonserver command line (backend folder made by ``start``)."""
        return [str(self.bundle.binary), "--model-repository", str(self.repo),
                "--backend-directory", str(self._work / "backends"),
                "--http-address", self.host, "--http-port", str(self.http_port),
                "--grpc-address", self.host, "--grpc-port", str(self.grpc_port),
                "--metrics-address", self.host, "--metrics-port", str(self.metrics_port),
                "--exit-on-error", "true", "--exit-timeout-secs", "10", *self.extra_args]

    def start(self) -> "TritonServer":
        """Start tritonserver and wait until it and its models are ready.

        Raises:
            EngineError: it exited or was not ready in time; the message ends with its log.
        """
        self._backends()
        log.info("starting %s", " ".join(self.command()))
        with open(self.log_path, "wb") as out:
            self._process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=self._env(),
                                             start_new_session=True)
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EngineError(f"tritonserver exited with code {self._process.returncode}:\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.25)
        self.stop()
        raise EngineError(f"tritonserver was not ready after {self.ready_timeout_s:.0f} s:\n{self.log_tail()}")

    def ready(self) -> bool:
        """True when ``/v2/health/ready`` answers 200."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; return the exit code."""
        proc, self._process = self._process, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def close(self) -> None:
        """Stop the server and remove its backend folder and log."""
        self.stop()
        shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
