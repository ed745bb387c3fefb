"""The engine cache's files without building anything (TensorRT cannot run here): what ``cache list``
and ``cache clear`` do with incomplete entries, stale temporary files and a build under way."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

import pytest
from filelock import FileLock, Timeout

from tests.conftest import call_cli
from trtflow.backends.tensorrt.cache import EngineCache
from trtflow.backends.tensorrt.sidecar import sha256
from trtflow.cache_dir import HOST


def _entry(root, key: str, plan: bytes = b"plan bytes", sidecar: dict | str | None = None) -> None:
    """A cache entry written as the cache writes it: ``sidecar`` None for a complete one, a string for raw text."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{key}.plan").write_bytes(plan)
    if sidecar is None:
        sidecar = {"flavor": "tensorrt", "version": "10.13.0.35", "plan_sha256": sha256(plan), "engine_bytes": len(plan),
                   "inputs": [], "outputs": [], "profiles": [], "source": "m.onnx", "key": key}
    (root / f"{key}.plan.json").write_text(sidecar if isinstance(sidecar, str) else json.dumps(sidecar))
    (root / f"{key}.lock").touch()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_clear_leaves_a_build_under_way_alone(tmp_path):
    root = tmp_path / "engines"
    _entry(root, "a" * 64)
    _entry(root, "b" * 64)
    building = root / ("b" * 64 + ".lock")
    live_tmp = root / f".{'b' * 64}.plan.{HOST}-{os.getpid()}.1.tmp"  # this process is the writer: alive
    live_tmp.write_bytes(b"half a plan")
    dead = _dead_pid()
    dead_tmp = root / f".{'a' * 64}.plan.{HOST}-{dead}.1.tmp"
    dead_tmp.write_bytes(b"left by a killed writer")
    elsewhere = [root / f".{'a' * 64}.plan.{name}.1.tmp" for name in (f"otherhost-{dead}", str(dead))]
    for tmp in elsewhere:  # another host's writer (a shared folder), and a name that says no host
        tmp.write_bytes(b"being written elsewhere")
    with FileLock(str(building)):  # another build holds the key
        removed = EngineCache(root).clear()
        assert removed == 1
        assert live_tmp.exists() and building.exists()  # its rename would fail, and its lock stop guarding it
        assert (root / f"{'b' * 64}.plan").exists()
        os.replace(live_tmp, root / f"{'b' * 64}.plan")  # the writer finishes
    assert not dead_tmp.exists() and all(tmp.exists() for tmp in elsewhere)
    for tmp in elsewhere:
        tmp.unlink()
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [f"{'a' * 64}.lock"] + [f"{'b' * 64}{s}" for s in (".plan", ".plan.json", ".lock")])
    assert EngineCache(root).clear() == 1
    assert sorted(p.name for p in root.iterdir()) == sorted(f"{k * 64}.lock" for k in "ab")  # locks stay


def test_clear_keeps_the_lock_file_a_waiter_has_open(tmp_path):
    root = tmp_path / "engines"
    key = "a" * 64
    _entry(root, key)
    lock = EngineCache(root).paths(key)[2]
    waiter = os.open(lock, os.O_RDWR)  # a build opened the lock file and waits for clear() to let it go
    try:
        EngineCache(root).clear()
        fcntl.flock(waiter, fcntl.LOCK_EX | fcntl.LOCK_NB)  # clear() is done: the waiter holds the lock
        assert os.path.samestat(os.fstat(waiter), lock.stat())
        with pytest.raises(Timeout):  # a third build must wait for it, not lock a new file of the same name
            FileLock(str(lock), timeout=0).acquire()
    finally:
        os.close(waiter)


def test_list_skips_a_plan_removed_while_listing(tmp_path):
    root = tmp_path / "engines"
    _entry(root, "a" * 64)
    (root / ("c" * 64 + ".plan")).symlink_to(tmp_path / "gone.plan")  # listed by the folder, then not there
    env = {"TRTFLOW_CACHE_DIR": str(tmp_path)}
    listed = call_cli("cache", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [e["key"] for e in json.loads(listed.stdout)["engines"]] == ["a" * 64]
    assert [e["complete"] for e in EngineCache(root).entries()] == [True]
