"""bench/autotune_baseline.py: the lock shared by its processes, and the whole flow on the CPU."""

import fcntl
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "autotune_baseline.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("autotune_baseline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def other_process_can_lock(path) -> bool:
    code = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n    sys.exit(1)\n")
    return subprocess.run([sys.executable, "-c", code, str(path)]).returncode == 0


def test_gpu_lock_excludes_other_processes_and_nests(script, tmp_path):
    lock = script.GpuLock(tmp_path / "gpu.lock")
    with lock:
        with lock:  # re-entrant: the inner exit must not release the outer hold
            pass
        assert lock.depth == 1 and not other_process_can_lock(tmp_path / "gpu.lock")
    assert lock.depth == 0 and lock.held == 1 and other_process_can_lock(tmp_path / "gpu.lock")


def test_benchmarks_run_once_unlocked_then_time_under_the_lock(script, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from torch._inductor.runtime import benchmarking

    bench = benchmarking.benchmarker
    lock = script.GpuLock(tmp_path / "gpu.lock")
    seen = []

    def timed(_callable, **kwargs):  # stands in for the GPU timing: records whether the lock is held
        _callable()
        seen.append(("timed", lock.depth, kwargs))
        return 1.5

    for name in ("benchmark_gpu", "benchmark_gpu_with_cuda_graph"):
        monkeypatch.setattr(bench, name, timed, raising=False)
    assert script.serialize_benchmarks(lock) == ["benchmark_gpu", "benchmark_gpu_with_cuda_graph"]
    assert bench.benchmark_gpu(lambda: seen.append(("call", lock.depth)), rep=7) == 1.5
    assert seen == [("call", 0), ("call", 1), ("timed", 1, {"rep": 7})]
    assert lock.depth == 0 and lock.held == 1


def test_flow_on_the_cpu(script, tmp_path):
    t0 = time.perf_counter()
    code = script.main([str(tmp_path), "--device", "cpu", "--runs", "tiny:2,nosuchmodel:2", "--modes", "eager",
                        "--workers", "2", "--timing-s", "0.05", "--hard-stop-s", "120"])
    assert code == 0 and time.perf_counter() - t0 < 100
    doc = json.loads((tmp_path / "autotune_baseline.json").read_text())
    tiny, missing = doc["rows"]
    assert tiny["status"] == "measured" and tiny["eager"]["img_s"] > 0 and tiny["eager"]["benchmark_lock"]["times"] == 0
    assert missing["status"].startswith("failed (exit 1): ") and "Error" in missing["status"]  # the last log line
    md = (tmp_path / "autotune_baseline.md").read_text()
    assert "| tiny | 2 |" in md and "| nosuchmodel | 2 |" in md
    assert (tmp_path / "logs" / "tiny_b2.log").read_text().count("eager") >= 2
    assert not [p for p in os.listdir(tmp_path / "work") if p.endswith(".tmp")]


def test_autotune_cache_writes_merge_what_other_processes_wrote(script, tmp_path, monkeypatch):
    """Inductor reads its autotuning cache, times an operator, then writes the whole file back: a
    process writing in between lost its operators. The wrapped write keeps both."""
    pytest.importorskip("torch")
    from torch._inductor import codecache

    path = tmp_path / "cache" / "system"
    monkeypatch.setattr(codecache.CacheBase, "get_local_cache_path", staticmethod(lambda: path))
    monkeypatch.setattr(codecache.CacheBase, "update_local_cache", codecache.CacheBase.update_local_cache)
    script.merge_cache_writes(tmp_path / "cache.lock")
    cache = codecache.PersistentCache()
    mine = cache.get_local_cache()  # read before the other process wrote
    cache.update_local_cache({"conv": {"a": {"high": {"x": 1.0}}}})  # the other process's operator
    mine.setdefault("conv", {})["b"] = {"high": {"y": 2.0}}
    cache.update_local_cache(mine)
    assert cache.get_local_cache() == {"conv": {"a": {"high": {"x": 1.0}}, "b": {"high": {"y": 2.0}}}}
    cache.update_local_cache({"conv": {"a": {"high": {"x": 3.0}}}})  # a new timing replaces the old
    assert cache.get_local_cache()["conv"]["a"]["high"]["x"] == 3.0
