"""The TensorRT runner's bookkeeping, driven by a test double of TensorRT and CUDA.

TensorRT cannot execute on the machines these tests run on, so ``tests/fake_tensorrt.py`` (a test
double, not TensorRT) stands in for the ``tensorrt`` module and for CUDA, and enforces the rules
TensorRT documents. The runner itself is the real one: only its flavor (``load_flavor``) and its
CUDA seam (``open_device`` -> ``CudaOps``) are swapped. Tests named ``test_defect_*`` each catch
one runtime defect that the runner used to have; the ``tensorrt_gpu`` tests in
``test_tensorrt_engine.py`` run the real thing where a TensorRT executes.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import threading
import weakref

import numpy as np
import pytest

import trtflow
from tests import fake_tensorrt as fake
from trtflow.backends.tensorrt import flavor as flavor_mod
from trtflow.backends.tensorrt import runner
from trtflow.backends.tensorrt.flavor import Flavor, GpuInfo
from trtflow.errors import EngineError, EngineIncompatibleError, UsageError

P0 = {"x": [(1, 4), (2, 4), (4, 4)]}
P1 = {"x": [(5, 4), (8, 4), (16, 4)]}


class Double:
    """The fake CUDA and TensorRT one test runs against."""

    def __init__(self, monkeypatch, flavor_name: str = "tensorrt"):
        self.cuda = fake.FakeCuda()
        self.trt = fake.FakeTensorRT(self.cuda)
        self.flavor = Flavor(flavor_name, "1.7.1.116" if flavor_name == "tensorrt_rtx" else self.trt.__version__, self.trt)
        monkeypatch.setattr(runner, "open_device", self._open)
        monkeypatch.setattr(runner, "load_flavor", lambda: self.flavor)

    def _open(self, index: int) -> fake.FakeCuda:
        self.cuda.index = index
        return self.cuda

    def calls(self, method: str | None = None) -> list[tuple]:
        return [c for c in self.trt.calls if method is None or c[1] == method]


@pytest.fixture
def double(monkeypatch) -> Double:
    return Double(monkeypatch)


def plan_file(tmp_path, model: str, profiles=(P0, P1), sidecar: dict | None = None, name: str = "m", **options):
    """A fake plan file; ``sidecar``: fields of its sidecar beyond the required ones."""
    path = tmp_path / f"{name}.plan"
    data = fake.plan_bytes(model, list(profiles), **options)
    path.write_bytes(data)
    if sidecar is not None:
        meta = {"plan_sha256": hashlib.sha256(data).hexdigest(), "engine_bytes": len(data), "inputs": [], "outputs": [], "profiles": []}
        path.with_name(path.name + ".json").write_text(json.dumps({**meta, **sidecar}))
    return path


def x_of(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 4)).astype(np.float32)


def check_affine(out: dict, x: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(out["y"]), 2 * x + 1, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["s"]), x.sum(axis=1), rtol=1e-5)


# -- the runtime's bookkeeping --------------------------------------------------------------------

def test_profiles_chosen_and_switched_with_shapes_after_the_profile(double, tmp_path):
    with trtflow.load(plan_file(tmp_path, "affine"), engine="tensorrt") as eng:
        assert eng.inputs[0].bounds.min == (1, 4) and eng.inputs[0].bounds.max == (16, 4)
        for batch in (2, 8, 3, 3):
            x = x_of(batch, batch)
            out = eng.infer({"x": x})
            assert list(out) == ["y", "s"] and isinstance(out["y"], np.ndarray)
            check_affine(out, x)
    assert [c[2] for c in double.calls("set_optimization_profile_async")] == [0, 1, 0]  # kept while it covers
    shapes = [c[2] for c in double.calls("set_input_shape")]
    assert shapes == [("x", (2, 4)), ("x", (8, 4)), ("x", (3, 4)), ("x", (3, 4))]


def test_every_input_gets_a_shape_and_an_address(double, tmp_path):
    with trtflow.load(plan_file(tmp_path, "add", profiles=[{"a": [(1, 4), (2, 4), (4, 4)], "b": [(1, 4), (2, 4), (4, 4)]}]), engine="tensorrt") as eng:
        a, b = x_of(3, 1), x_of(3, 2)
        np.testing.assert_allclose(eng.infer({"a": a, "b": b})["c"], a + b)
    assert sorted(c[2][0] for c in double.calls("set_input_shape")) == ["a", "b"]
    assert sorted(c[2][0] for c in double.calls("set_tensor_address")) == ["a", "b", "c"]


def test_device_inputs_bound_in_place_and_output_buffers_reused(double, tmp_path):
    with trtflow.load(plan_file(tmp_path, "affine"), engine="tensorrt") as eng:
        xs = [double.cuda.to_device(x_of(b, b)) for b in (4, 2, 4)]
        for x in xs:
            out = eng.infer({"x": x})
            check_affine(out, x.numpy())
        out_a = eng.infer({"x": xs[0]})["y"]
        eng.infer({"x": xs[1]})
        check_affine({"y": out_a, "s": xs[0].numpy().sum(axis=1)}, xs[0].numpy())  # a clone, not overwritten
    bound = {}
    for _, _, (name, address) in double.calls("set_tensor_address"):
        bound.setdefault(name, []).append(address)
    assert bound["x"][:3] == [x.data_ptr() for x in xs]  # zero copy
    assert double.cuda.kept_alive[:3] == bound["x"][:3]
    assert len(set(bound["y"])) == 1 and len(set(bound["s"])) == 1  # one buffer each, reused for batch 2


def test_output_allocator_for_data_dependent_outputs(double, tmp_path):
    with trtflow.load(plan_file(tmp_path, "nonzero", profiles=[{"x": [(1,), (8,), (64,)]}]), engine="tensorrt") as eng:
        for x in (np.array([1, -1, 2, 0, 3], np.float32), np.array([-1, 5], np.float32)):
            out = eng.infer({"x": x})
            np.testing.assert_array_equal(out["idx"], np.nonzero(x > 0)[0])
            np.testing.assert_array_equal(out["vals"], x[x > 0])
            assert out["idx"].dtype == np.int64
    assert [c[2] for c in double.calls("set_output_allocator")] == ["idx", "vals"]  # once each, kept
    order = [(c[1], c[2]) for c in double.calls() if c[1] in ("reallocate_output_async", "notify_shape")]
    assert order[:4] == [("reallocate_output_async", "idx"), ("notify_shape", "idx"), ("reallocate_output_async", "vals"), ("notify_shape", "vals")]


def test_cuda_graph_captured_once_then_replayed(double, tmp_path):
    with trtflow.load(plan_file(tmp_path, "affine"), engine="tensorrt", use_cuda_graph=True) as eng:
        for seed in range(4):
            x = x_of(3, seed)
            check_affine(eng.infer({"x": x}), x)
    runs = [c[2] for c in double.calls("execute_async_v3")]
    assert runs == ["run", "capture"] and len(double.calls("graph_replay")) == 3


def test_close_while_a_call_is_in_flight(double, tmp_path):
    eng = trtflow.load(plan_file(tmp_path, "affine"), engine="tensorrt")
    engine_ref = weakref.ref(eng._engine)
    started, go, result = threading.Event(), threading.Event(), {}

    def hold(ctx):
        started.set()
        assert go.wait(10)

    double.trt.before_execute = hold
    x = x_of(2)
    worker = threading.Thread(target=lambda: result.update(eng.infer({"x": x})), daemon=True)
    worker.start()
    assert started.wait(10)
    eng.close()  # returns at once; the call in flight keeps its context and the engine
    assert engine_ref() is not None and double.trt.contexts_alive == 1
    with pytest.raises(EngineError, match="closed"):
        eng.infer({"x": x})
    go.set()
    worker.join(10)
    check_affine(result, x)
    gc.collect()
    assert double.trt.contexts_alive == 0 and engine_ref() is None  # contexts first, then the engine
    assert double.calls()[-1][1] == "destroyed"


# -- one test per defect the runner had -----------------------------------------------------------

def test_defect_1_failed_capture_falls_back_to_enqueue_with_a_reason(double, tmp_path, caplog):
    with caplog.at_level(logging.WARNING), trtflow.load(
        plan_file(tmp_path, "affine", capture_fails=True), engine="tensorrt", use_cuda_graph=True
    ) as eng:
        for seed in range(3):  # the old runner replayed an empty graph: outputs of the first call
            x = x_of(2, seed)
            check_affine(eng.infer({"x": x}), x)
    assert "capture failed" in caplog.text and "plain enqueue" in caplog.text
    assert [c[2] for c in double.calls("execute_async_v3")] == ["run", "capture", "run", "run"]


def test_defect_1_uncapturable_context_is_not_captured(double, tmp_path, caplog):
    with caplog.at_level(logging.WARNING), trtflow.load(
        plan_file(tmp_path, "affine", capturable=False), engine="tensorrt", use_cuda_graph=True
    ) as eng:
        for seed in range(2):
            x = x_of(2, seed)
            check_affine(eng.infer({"x": x}), x)
    assert "cannot be captured" in caplog.text
    assert [c[2] for c in double.calls("execute_async_v3")] == ["run", "run"]


def test_defect_1_rtx_graphs_need_require_user_allocation(monkeypatch, tmp_path):
    Double(monkeypatch, "tensorrt_rtx")
    bare = plan_file(tmp_path, "affine", name="bare")
    with pytest.raises(UsageError, match="REQUIRE_USER_ALLOCATION"):
        trtflow.load(bare, engine="tensorrt", use_cuda_graph=True)
    trtflow.load(bare, engine="tensorrt").close()  # without graphs it loads
    meta = {"flavor": "tensorrt_rtx", "version": "1.7.1.116", "config": {}}
    with pytest.raises(UsageError, match="its sidecar says it was built without it"):
        trtflow.load(plan_file(tmp_path, "affine", sidecar=meta, name="without"), engine="tensorrt", use_cuda_graph=True)
    meta["config"] = {"require_user_allocation": True}
    with trtflow.load(plan_file(tmp_path, "affine", sidecar=meta), engine="tensorrt", use_cuda_graph=True) as eng:
        x = x_of(2)
        check_affine(eng.infer({"x": x}), x)


def test_defect_1_rtx_build_sets_require_user_allocation(monkeypatch, tmp_path, tiny_onnx):
    """trtflow.load(onnx, use_cuda_graph=True) on TensorRT-RTX builds (for real, on the CPU) with the flag."""
    import dataclasses

    from trtflow.backends.tensorrt import builder

    rtx = flavor_mod.flavor_available()
    if rtx is None or not rtx.is_rtx:
        pytest.skip("TensorRT-RTX is not installed")
    double = Double(monkeypatch, "tensorrt_rtx")
    flags, real_configure, real_build = [], builder._configure, builder.build_engine

    def configure(trt, b, config, *rest):
        cfg = real_configure(trt, b, config, *rest)
        flags.append(cfg.get_flag(trt.BuilderFlag.REQUIRE_USER_ALLOCATION))
        return cfg

    def build(onnx, config=None, **kw):  # the real build, then a plan the double can run
        result = real_build(onnx, config, **{**kw, "flavor": rtx})
        return dataclasses.replace(result, plan=fake.plan_bytes("affine", [P0]))

    monkeypatch.setattr(builder, "_configure", configure)
    monkeypatch.setattr(builder, "build_engine", build)
    monkeypatch.setenv("TRTFLOW_CACHE_DIR", str(tmp_path))
    with trtflow.load(tiny_onnx, engine="tensorrt", use_cuda_graph=True) as eng:
        assert eng.meta["config"]["require_user_allocation"] is True
        check_affine(eng.infer({"x": x_of(2)}), x_of(2))
    assert flags == [True] and [c[2] for c in double.calls("execute_async_v3")] == ["run", "capture"]


def test_defect_2_profile_switch_enqueues_once_before_replaying_a_graph(double, tmp_path):
    with trtflow.load(plan_file(tmp_path, "affine"), engine="tensorrt", use_cuda_graph=True) as eng:
        for i, batch in enumerate((8, 2, 2, 8, 2, 2)):  # batch 8 first: later calls reuse its buffers
            x = x_of(batch, i)
            check_affine(eng.infer({"x": x}), x)
    seq = [(c[1], c[2]) for c in double.calls() if c[1] in ("set_optimization_profile_async", "execute_async_v3", "graph_replay")]
    assert seq == [
        ("set_optimization_profile_async", 1), ("execute_async_v3", "run"), ("execute_async_v3", "capture"),
        ("set_optimization_profile_async", 0), ("execute_async_v3", "run"), ("execute_async_v3", "capture"),
        ("graph_replay", 0),
        ("set_optimization_profile_async", 1), ("execute_async_v3", "run"),  # its graph waits for this enqueue
        ("set_optimization_profile_async", 0), ("execute_async_v3", "run"),
        ("graph_replay", 0),
    ]


def test_defect_3_profile_switch_failure_is_an_engine_error(double, tmp_path):
    with trtflow.load(plan_file(tmp_path, "affine", profile_switch_raises=True), engine="tensorrt") as eng:
        with pytest.raises(EngineError, match="optimization profile 0"):
            eng.infer({"x": x_of(2)})


def test_defect_4_misaligned_device_input_is_staged(double, tmp_path):
    with trtflow.load(plan_file(tmp_path, "affine"), engine="tensorrt") as eng:
        whole = double.cuda.to_device(x_of(4))
        part = whole[1:]  # contiguous, 16 bytes past a 256-byte boundary
        assert part.is_contiguous() and part.data_ptr() % 256
        check_affine(eng.infer({"x": part}), part.numpy())
    address = [c[2][1] for c in double.calls("set_tensor_address") if c[2][0] == "x"][0]
    assert address != part.data_ptr() and address % 256 == 0


def test_defect_4_refused_address_or_allocator_is_an_engine_error(double, tmp_path):
    with trtflow.load(plan_file(tmp_path, "affine", refuse_address=["y"]), engine="tensorrt") as eng:
        with pytest.raises(EngineError, match="address of 'y'"):
            eng.infer({"x": x_of(2)})
    plan = plan_file(tmp_path, "nonzero", profiles=[{"x": [(1,), (8,), (64,)]}], refuse_allocator=["vals"], name="nz")
    with trtflow.load(plan, engine="tensorrt") as eng:
        with pytest.raises(EngineError, match="output allocator for 'vals'"):
            eng.infer({"x": np.ones(3, np.float32)})


def test_defect_5_contexts_are_bounded_and_reused_across_threads(double, tmp_path):
    with trtflow.load(plan_file(tmp_path, "affine"), engine="tensorrt", max_contexts=2) as eng:
        for i in range(10):  # short-lived threads, one after another: one context serves them all
            x = x_of(2, i)
            t = threading.Thread(target=lambda: check_affine(eng.infer({"x": x}), x), daemon=True)
            t.start()
            t.join(10)
            assert not t.is_alive()
        assert double.trt.contexts_created == 1
        barrier, errors = threading.Barrier(2, timeout=10), []
        double.trt.before_execute = lambda ctx: barrier.wait()  # two calls overlap inside TensorRT

        def work(i):
            try:
                x = x_of(3, 100 + i)
                check_affine(eng.infer({"x": x}), x)
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert not errors and double.trt.contexts_created == 2 and eng._pool.alive == 2
    gc.collect()
    assert double.trt.contexts_alive == 0


def test_defect_6_fp8_io_is_refused_at_load(double, tmp_path):
    with pytest.raises(EngineError, match=r"'y' \(FP8\).*float16/float32"):
        trtflow.load(plan_file(tmp_path, "fp8"), engine="tensorrt")


def test_defect_7_device_n_for_cache_key_sidecar_and_compatibility(double, monkeypatch, tmp_path, tiny_onnx):
    gpus = {0: GpuInfo(0, "NVIDIA L4", (8, 9)), 1: GpuInfo(1, "NVIDIA RTX A6000", (8, 6))}
    monkeypatch.setattr(flavor_mod, "gpu_info", lambda device=0: gpus.get(device))
    meta = {"flavor": "tensorrt", "version": double.flavor.version, "target": gpus[1].to_dict(), "config": {}}
    plan = plan_file(tmp_path, "affine", sidecar=meta)
    with trtflow.load(plan, engine="tensorrt", device=1) as eng:
        assert eng.device_index == 1 and double.cuda.index == 1
    with pytest.raises(EngineIncompatibleError, match="A6000.*this machine has NVIDIA L4"):
        trtflow.load(plan, engine="tensorrt", device=0)
    bad = tmp_path / "bad.plan"
    bad.write_bytes(b"not a plan")
    with pytest.raises(EngineIncompatibleError, match="on NVIDIA RTX A6000"):
        trtflow.load(bad, engine="tensorrt", device=1)

    rtx = flavor_mod.flavor_available()
    if rtx is None:
        return
    from trtflow.backends.tensorrt.cache import EngineCache, cache_key
    from trtflow.backends.tensorrt.config import BuildConfig
    from trtflow.backends.tuned import model_digest

    entry = EngineCache(tmp_path / "cache").get_or_build(tiny_onnx, BuildConfig(), flavor=rtx, device=1)
    assert entry.meta["target"]["name"] == "NVIDIA RTX A6000"
    data = model_digest(tiny_onnx)
    assert entry.key == cache_key(data, BuildConfig(), rtx, flavor_mod.target_of(1)) != cache_key(data, BuildConfig(), rtx, flavor_mod.target_of(0))


def test_defect_8_host_located_outputs_get_host_memory(double, tmp_path):
    with trtflow.load(plan_file(tmp_path, "count"), engine="tensorrt") as eng:
        x = x_of(3)
        out = eng.infer({"x": x})
        np.testing.assert_array_equal(out["n"], [3])
        np.testing.assert_allclose(out["y"], 2 * x)
        dev = eng.infer({"x": double.cuda.to_device(x_of(2))})
        assert dev["n"].tolist() == [2]
        bound = {name: address for _, _, (name, address) in double.calls("set_tensor_address")}
        assert double.cuda.kind_of(bound["n"]) == "host" and double.cuda.kind_of(bound["y"]) == "device"


def test_defect_9_graphs_of_replaced_buffers_are_evicted(double, tmp_path):
    with trtflow.load(plan_file(tmp_path, "affine"), engine="tensorrt", use_cuda_graph=True) as eng:
        for round_ in range(2):
            for batch in (1, 2, 3, 4):  # each new batch grows the pooled buffers: new addresses
                x = x_of(batch, round_)
                check_affine(eng.infer({"x": x}), x)
        gc.collect()
        graphs = list(double.cuda.graphs)
        assert len(graphs) == 4  # one per (profile, shapes); the old runner kept 8
        assert all(double.cuda.kind_of(a) is not None for g in graphs for a in g.addresses)


# -- the pieces on their own ----------------------------------------------------------------------

def test_graph_cache_keeps_one_graph_per_key_and_the_most_recent_keys():
    from trtflow.backends.tensorrt.graphs import MISSING, GraphCache

    cache = GraphCache(limit=2)
    cache.store((0, ("x", (1, 4))), (10, 20), "g1")
    assert cache.lookup((0, ("x", (1, 4))), (10, 20)) == "g1"
    assert cache.lookup((0, ("x", (1, 4))), (10, 99)) is MISSING and len(cache) == 0  # buffer replaced
    for i in range(3):
        cache.store((0, ("x", (i, 4))), (i,), f"g{i}")
    assert len(cache) == 2 and cache.lookup((0, ("x", (0, 4))), (0,)) is MISSING and cache.evictions == 2


def test_context_pool_survives_a_failed_context_creation():
    from trtflow.backends.tensorrt.contexts import ContextPool

    class State:
        closed = False

        def close(self):
            self.closed = True

    made, fail, drained = [], [True], []

    def make():
        if fail.pop() if fail else False:
            raise EngineError("out of memory")
        made.append(State())
        return made[-1]

    with pytest.raises(UsageError, match="max_contexts"):
        ContextPool(make, limit=0)
    pool = ContextPool(make, limit=1, on_drained=lambda: drained.append(True))
    with pytest.raises(EngineError):
        with pool.acquire():
            pass
    with pool.acquire() as state:  # the failed creation gave its slot back
        assert state is made[0] and pool.alive == 1
    pool.close()
    assert made[0].closed and drained == [True] and pool.alive == 0
    with pytest.raises(EngineError, match="closed"):
        with pool.acquire():
            pass


def test_rebuild_of_a_plan_file_is_refused(double, tmp_path):
    """rebuild=True reached only the engine cache: a plan file loaded its old plan without a word."""
    path = plan_file(tmp_path, "affine")
    with pytest.raises(UsageError, match=r"rebuild=True.*trtflow build MODEL\.onnx --saveEngine .*m\.plan"):
        trtflow.load(path, engine="tensorrt", rebuild=True)
    with trtflow.load(path, engine="tensorrt") as eng:  # without rebuild it loads
        check_affine(eng.infer({"x": x_of(2)}), x_of(2))
