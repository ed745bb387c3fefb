"""The engine cache with real builds: hit, miss, invalidation, concurrent builders, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, call_cli
from trtflow.backends.tensorrt.cache import EngineCache
from trtflow.backends.tensorrt.config import BuildConfig
from trtflow.backends.tensorrt.sidecar import read_sidecar
from trtflow.spec import make_profile

PROFILE = make_profile({"x": (1, 3, 16, 16)}, {"x": (2, 3, 16, 16)}, {"x": (4, 3, 16, 16)})

pytestmark = pytest.mark.usefixtures("flavor")


@pytest.fixture
def store(tmp_path):
    return EngineCache(tmp_path / "engines")


def test_cache_dir_env_override(tmp_path, monkeypatch):
    from trtflow.cache_dir import cache_dir

    monkeypatch.setenv("TRTFLOW_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    assert EngineCache().root == tmp_path / "c" / "engines"


def test_miss_then_hit(store, tiny_onnx, flavor):
    config = BuildConfig(profiles=[PROFILE])
    first = store.get_or_build(tiny_onnx, config)
    assert not first.hit and first.plan_path.exists()
    meta = read_sidecar(first.plan_path)
    assert meta["key"] == first.key and meta["flavor"] == flavor.name and meta["version"] == flavor.version
    assert meta["inputs"][0]["bounds"]["max"] == [4, 3, 16, 16] and meta["build_seconds"] > 0
    assert meta["trtflow_version"] and meta["target"]["name"]
    second = store.get_or_build(tiny_onnx, config)
    assert second.hit and second.key == first.key and second.plan() == first.plan()
    assert len(store.entries()) == 1


def test_changed_config_or_onnx_is_a_new_key(store, tiny_onnx, models_dir):
    import onnx

    base = store.get_or_build(tiny_onnx, BuildConfig(profiles=[PROFILE]))
    other_config = store.get_or_build(tiny_onnx, BuildConfig(profiles=[PROFILE], max_batch=8))
    proto = onnx.load(str(tiny_onnx))
    proto.doc_string = "changed bytes"
    changed = store.get_or_build(proto.SerializeToString(), BuildConfig(profiles=[PROFILE]))
    assert len({base.key, other_config.key, changed.key}) == 3
    assert not other_config.hit and not changed.hit


def test_faked_sidecar_version_rebuilds(store, tiny_onnx):
    config = BuildConfig(profiles=[PROFILE])
    entry = store.get_or_build(tiny_onnx, config)
    side = entry.plan_path.with_name(entry.plan_path.name + ".json")
    meta = json.loads(side.read_text())
    meta["version"] = "0.0.1"
    side.write_text(json.dumps(meta))
    again = store.get_or_build(tiny_onnx, config)
    assert not again.hit and "0.0.1" in again.rebuilt_because
    assert read_sidecar(again.plan_path)["version"] != "0.0.1"


def test_corrupt_plan_rebuilds(store, tiny_onnx):
    config = BuildConfig(profiles=[PROFILE])
    entry = store.get_or_build(tiny_onnx, config)
    entry.plan_path.write_bytes(entry.plan()[:100])
    again = store.get_or_build(tiny_onnx, config)
    assert not again.hit and "SHA-256" in again.rebuilt_because
    assert again.plan_path.stat().st_size == again.meta["engine_bytes"]


BUILD_ONE = """
import sys
from trtflow.backends.tensorrt.cache import EngineCache
from trtflow.backends.tensorrt.config import BuildConfig
entry = EngineCache(sys.argv[1]).get_or_build(sys.argv[2], BuildConfig(max_batch=4))
print(entry.key, entry.hit)
"""


def test_two_processes_building_one_key(tmp_path, tiny_onnx):
    root = tmp_path / "engines"
    procs = [
        subprocess.Popen([sys.executable, "-c", BUILD_ONE, str(root), str(tiny_onnx)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    keys = {o[0].split()[0] for o in outs}
    hits = sorted(o[0].split()[1] for o in outs)
    assert len(keys) == 1 and hits == ["False", "True"]  # one built it, the other waited and reused it
    store = EngineCache(root)
    assert [p.name for p in sorted(root.glob("*.plan"))] == [f"{keys.pop()}.plan"]
    assert not list(root.glob("*.tmp")) and not list(root.glob(".*.tmp"))
    entry = store.entries()[0]
    meta, why = store.check(entry["key"], *_here())
    assert meta is not None and why is None


def _here():
    from trtflow.backends.tensorrt.flavor import load_flavor, target_of

    return load_flavor(), target_of()


def test_cli_cache_list_and_clear(tmp_path, tiny_onnx):
    env = {"TRTFLOW_CACHE_DIR": str(tmp_path)}
    EngineCache(tmp_path / "engines").get_or_build(tiny_onnx, BuildConfig(profiles=[PROFILE]))
    listed = call_cli("cache", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert len(data["engines"]) == 1 and data["engines"][0]["source"] == str(tiny_onnx)
    table = call_cli("cache", "list", env=env)
    assert table.returncode == 0 and "1 cached engine" in table.stdout
    cleared = call_cli("cache", "clear", "--json", env=env)
    assert json.loads(cleared.stdout)["removed"] == 1
    assert json.loads(call_cli("cache", "list", "--json", env=env).stdout)["engines"] == []


def test_tuned_key_and_engine_cache_read_external_weights_once(store, tiny_onnx, tmp_path, monkeypatch):
    import os
    import time

    import onnx

    from trtflow.backends import tuned

    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    onnx.save_model(onnx.load(str(tiny_onnx)), str(path), save_as_external_data=True, location="model.onnx.data",
                    size_threshold=0)
    data = path.parent / "model.onnx.data"
    hour_ago = time.time_ns() - 3600 * 10**9  # files changed a moment ago are read again: their mtime may not move
    for p in (path, data):
        os.utime(p, ns=(hour_ago, hour_ago))
    read = []
    hash_file = tuned._hash_file
    monkeypatch.setattr(tuned, "_hash_file", lambda p, onnx: read.append(p.name) or hash_file(p, onnx))
    monkeypatch.setattr(tuned, "_FILE_DIGESTS", {})
    config = BuildConfig(profiles=[PROFILE])

    key, _ = tuned.tuned_key(str(path), "tensorrt", [[2, 3, 16, 16]])
    entry = store.get_or_build(path, config)
    assert store.get_or_build(str(path), config).key == entry.key
    assert sorted(read) == ["model.onnx", "model.onnx.data"]  # each file read once in this process
    assert entry.meta["onnx_sha256"] == tuned.model_digest(path)

    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF  # other weights, the same graph file and size
    data.write_bytes(bytes(raw))
    assert tuned.tuned_key(str(path), "tensorrt", [[2, 3, 16, 16]])[0] != key
    changed = store.get_or_build(path, config)
    assert changed.key != entry.key and not changed.hit
    assert sorted(read) == ["model.onnx", "model.onnx.data", "model.onnx.data", "model.onnx.data"]  # not memoized yet


def test_file_digest_keeps_one_entry_per_file(tmp_path, monkeypatch):
    """A changed file replaces its remembered digest: a long process does not pile up one per version."""
    import os
    import time

    from trtflow.backends import tuned

    monkeypatch.setattr(tuned, "_FILE_DIGESTS", {})
    path = tmp_path / "model.plan"
    digests = set()
    for i, content in enumerate((b"first", b"other")):
        path.write_bytes(content)
        old = time.time_ns() - (3600 + i) * 10**9
        os.utime(path, ns=(old, old))
        digests.add(tuned.file_digest(path)[0])
    assert len(digests) == 2 and list(tuned._FILE_DIGESTS) == [(str(path.absolute()), False)]


def test_model_digest_reads_the_external_weights_of_an_onnx_file_of_any_name(tiny_onnx, tmp_path):
    """``load`` takes any file but a plan or .pt2 as ONNX: the engine cache key of ``model.bin`` hashed
    its graph file alone, so other weights beside it kept the key (and the stale engine)."""
    import onnx

    from trtflow.backends.tuned import model_digest

    path = tmp_path / "model.bin"
    onnx.save_model(onnx.load(str(tiny_onnx)), str(path), save_as_external_data=True, location="weights",
                    size_threshold=0)
    before = model_digest(path)
    raw = bytearray((tmp_path / "weights").read_bytes())
    raw[0] ^= 0xFF
    (tmp_path / "weights").write_bytes(bytes(raw))
    assert model_digest(path) != before


def test_hit_survives_a_clear_right_after_the_check(store, tiny_onnx):
    """``trtflow cache clear`` in another process between the cache's check of a hit and the caller's
    read of the plan: the caller gets the plan that was checked, not a FileNotFoundError."""
    config = BuildConfig(profiles=[PROFILE])
    built = store.get_or_build(tiny_onnx, config).plan()
    entry = store.get_or_build(tiny_onnx, config)
    assert entry.hit
    assert EngineCache(store.root).clear() == 1 and not entry.plan_path.exists()
    assert entry.plan() == built
