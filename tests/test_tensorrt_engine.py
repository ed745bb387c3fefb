"""The TensorRT runtime engine.

The bookkeeping (dtype mapping, profile choice, buffer reuse, sidecar I/O, refusing to run
where no TensorRT can execute) runs here for real; the runner's execution bookkeeping runs
against a test double in ``test_tensorrt_double.py``. Tests that execute an engine carry
``tensorrt_gpu`` and run only where a TensorRT can execute on the GPU.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import trtflow
from tests.trt_models import MB_PROFILES, mobilenet_onnx, nms_model
from trtflow.backends.tensorrt.config import BuildConfig
from trtflow.backends.tensorrt.buffers import BufferPool, choose_profile, dtype_from_trt, torch_pool, union_bounds
from trtflow.backends.tensorrt.runner import runtime_blocker, runtime_usable
from trtflow.errors import EngineIncompatibleError, InputShapeError
from trtflow.spec import make_profile

P0 = make_profile({"x": (1, 3, 16, 16)}, {"x": (2, 3, 16, 16)}, {"x": (4, 3, 16, 16)})
P1 = make_profile({"x": (5, 3, 16, 16)}, {"x": (8, 3, 16, 16)}, {"x": (16, 3, 16, 16)})
@pytest.fixture(scope="module")
def tiny_plan(flavor, tiny_onnx, tmp_path_factory):
    """A plan with two profiles plus its sidecar, built by the installed flavor."""
    from trtflow.backends.tensorrt import build_engine
    from trtflow.backends.tensorrt.sidecar import write_plan

    config = BuildConfig(profiles=[P0, P1])
    result = build_engine(tiny_onnx, config)
    path = tmp_path_factory.mktemp("plans") / "tiny.plan"
    write_plan(path, result, config=config.key_dict())
    return path, result


# -- plain-Python runtime pieces, executed here ----------------------------------------------

def test_every_tensorrt_datatype_maps_or_says_why(flavor):
    import torch

    for name, member in flavor.trt.DataType.__members__.items():
        if name in ("INT4", "FP4", "E8M0"):
            with pytest.raises(TypeError, match=name):
                dtype_from_trt(member)
        else:
            assert isinstance(getattr(torch, dtype_from_trt(member)), torch.dtype)
    assert dtype_from_trt(flavor.trt.DataType.HALF) == "float16"


def test_profile_choice():
    profiles = [P0, P1]
    assert choose_profile(profiles, {"x": (3, 3, 16, 16)}) == 0
    assert choose_profile(profiles, {"x": (12, 3, 16, 16)}, current=0) == 1
    assert choose_profile(profiles, {"x": (2, 3, 16, 16)}, current=1) == 0
    with pytest.raises(InputShapeError) as info:
        choose_profile(profiles, {"x": (20, 3, 16, 16)})
    assert "x:20x3x16x16" in str(info.value) and "profile 1: x 5x3x16x16..16x3x16x16" in str(info.value)
    assert union_bounds(profiles, "x").min == (1, 3, 16, 16) and union_bounds(profiles, "x").max == (16, 3, 16, 16)


def test_buffers_reused_while_they_fit():
    pool = torch_pool("cpu")
    a = pool.get("out", (4, 5), "float32")
    b = pool.get("out", (4, 5), "float32")
    c = pool.get("out", (2, 5), "float32")
    assert a.data_ptr() == b.data_ptr() == c.data_ptr() and tuple(c.shape) == (2, 5) and pool.allocations == 1
    d = pool.get("out", (8, 5), "float32")
    assert tuple(d.shape) == (8, 5) and pool.allocations == 2
    pool.get("out", (8, 5), "float16")
    assert pool.allocations == 3 and pool.shapes() == {"out": (8, 5)}
    assert isinstance(pool, BufferPool)


def test_runtime_usable_is_a_cheap_bool_that_matches_the_reason():
    assert runtime_usable() is (runtime_blocker() is None)
    assert runtime_usable() is runtime_usable()  # cached, never raises


def test_engine_refuses_where_no_tensorrt_executes(tiny_onnx, flavor):
    if runtime_usable():
        pytest.skip("a TensorRT executes here")
    with pytest.raises(EngineIncompatibleError) as info:
        trtflow.load(tiny_onnx, engine="tensorrt")
    assert runtime_blocker() in str(info.value) and "--engine ort" in str(info.value)


def test_plan_io_read_from_engine_or_sidecar(tiny_plan):
    from trtflow.backends.tensorrt.runner import read_plan_io

    path, result = tiny_plan
    io = read_plan_io(path)
    assert io["source"] == ("engine" if runtime_usable() else "sidecar")
    assert io["inputs"] == result.inputs and [o.name for o in io["outputs"]] == ["logits", "feat"]
    assert io["profiles"] == [P0, P1]
    if io["source"] == "sidecar":
        assert "cannot load" in io["reason"]


def test_plan_without_sidecar_and_no_gpu(tiny_plan, tmp_path):
    from trtflow.backends.tensorrt.runner import read_plan_io

    if runtime_usable():
        pytest.skip("the plan deserializes here")
    bare = tmp_path / "bare.plan"
    bare.write_bytes(tiny_plan[1].plan)
    with pytest.raises(EngineIncompatibleError, match="rebuild it here"):
        read_plan_io(bare)


def test_sidecar_names_both_versions_and_gpus(flavor):
    from trtflow.backends.tensorrt.sidecar import incompatibility

    here = {"name": "NVIDIA L4", "compute_capability": "8.9"}
    other = {"flavor": flavor.name, "version": "0.0.1", "target": here, "config": {}}
    assert "0.0.1" in incompatibility(other, flavor, here) and flavor.version in incompatibility(other, flavor, here)
    built_elsewhere = {"flavor": flavor.name, "version": flavor.version, "target": {"name": "NVIDIA A100", "compute_capability": "8.0"}, "config": {}}
    msg = incompatibility(built_elsewhere, flavor, here)
    assert "A100" in msg and "L4" in msg
    portable = {**built_elsewhere, "config": {"hardware_compatibility_level": "ampere+"}}
    assert incompatibility(portable, flavor, here) is None


# -- executing TensorRT ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def mobilenet(models_dir):
    return mobilenet_onnx(models_dir / "mobilenet_v2_rt.onnx")


@pytest.fixture(scope="module")
def mb_engine(mobilenet, tmp_path_factory):
    import os

    before = os.environ.get("TRTFLOW_CACHE_DIR")
    os.environ["TRTFLOW_CACHE_DIR"] = str(tmp_path_factory.mktemp("trt_cache"))  # builds through the cache
    try:
        eng = trtflow.load(mobilenet, engine="tensorrt", profiles=MB_PROFILES)
        yield eng
        eng.close()
    finally:
        if before is None:
            os.environ.pop("TRTFLOW_CACHE_DIR", None)
        else:
            os.environ["TRTFLOW_CACHE_DIR"] = before


@pytest.fixture(scope="module")
def mb_reference(mobilenet):
    ort = trtflow.load(mobilenet, engine="ort")
    yield ort
    ort.close()


@pytest.mark.tensorrt_gpu
def test_matches_onnxruntime_across_profiles(mb_engine, mb_reference):
    assert mb_engine.inputs[0].bounds.max == (32, 3, 224, 224)
    for batch in (2, 12, 2, 32):  # switches profile 0 -> 1 -> 0 -> 1
        x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
        got = mb_engine.infer({"input": x})["logits"]
        assert isinstance(got, np.ndarray) and got.shape == (batch, 1000)
        np.testing.assert_allclose(got, mb_reference.infer({"input": x})["logits"], atol=2e-2, rtol=2e-2)


@pytest.mark.tensorrt_gpu
def test_cuda_tensors_in_place_and_results_not_overwritten(mb_engine):
    import torch

    a = torch.randn(4, 3, 224, 224, device="cuda")
    b = torch.randn(4, 3, 224, 224, device="cuda")
    out_a = mb_engine.infer({"input": a})["logits"]
    first = out_a.clone()
    out_b = mb_engine.infer({"input": b})["logits"]
    assert out_a.device.type == "cuda" and torch.equal(out_a, first) and not torch.equal(out_a, out_b)


@pytest.mark.tensorrt_gpu
def test_threads_share_one_engine(mb_engine, mb_reference):
    xs = [np.random.default_rng(i).standard_normal((3, 3, 224, 224)).astype(np.float32) for i in range(4)]
    results: dict[int, np.ndarray] = {}

    def work(i):
        results[i] = mb_engine.infer({"input": xs[i]})["logits"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, x in enumerate(xs):
        np.testing.assert_allclose(results[i], mb_reference.infer({"input": x})["logits"], atol=2e-2, rtol=2e-2)


@pytest.mark.tensorrt_gpu
def test_cuda_graph_replay(mobilenet, mb_reference):
    eng = trtflow.load(mobilenet, engine="tensorrt", profiles=MB_PROFILES, use_cuda_graph=True)
    with eng:
        for seed in (0, 1, 2):
            x = np.random.default_rng(seed).standard_normal((4, 3, 224, 224)).astype(np.float32)
            np.testing.assert_allclose(eng.infer({"input": x})["logits"], mb_reference.infer({"input": x})["logits"], atol=2e-2, rtol=2e-2)


@pytest.mark.tensorrt_gpu
def test_plan_file_and_incompatible_sidecar(tiny_plan, tmp_path):
    import json
    import shutil

    path, _ = tiny_plan
    with trtflow.load(path, engine="tensorrt") as eng:
        out = eng.infer({"x": np.zeros((2, 3, 16, 16), np.float32)})
        assert out["logits"].shape == (2, 5)
    stale = tmp_path / "stale.plan"
    shutil.copy(path, stale)
    meta = json.loads((path.parent / "tiny.plan.json").read_text())
    meta["version"] = "0.0.1"
    (tmp_path / "stale.plan.json").write_text(json.dumps(meta))
    with pytest.raises(EngineIncompatibleError, match="0.0.1"):
        trtflow.load(stale, engine="tensorrt")


@pytest.mark.tensorrt_gpu
def test_data_dependent_nms_output(flavor, models_dir):
    if flavor.is_rtx:
        pytest.skip("TensorRT-RTX has no NonMaxSuppression kernel (see test_nms_fails_on_rtx_with_the_fix)")
    model = nms_model(models_dir / "rt_nms.onnx")
    boxes = np.array([[[0, 0, 1, 1]] * 50 + [[2, 2, 3, 3]] * 50], np.float32)
    scores = np.linspace(0.2, 0.9, 100, dtype=np.float32).reshape(1, 1, 100)
    with trtflow.load(model, engine="tensorrt") as eng, trtflow.load(model, engine="ort") as ref:
        got = eng.infer({"boxes": boxes, "scores": scores})["selected"]
        np.testing.assert_array_equal(got, ref.infer({"boxes": boxes, "scores": scores})["selected"])


@pytest.mark.tensorrt_gpu
def test_cuda_graphs_across_profile_switches(mobilenet, mb_reference):
    with trtflow.load(mobilenet, engine="tensorrt", profiles=MB_PROFILES, use_cuda_graph=True) as eng:
        for i, batch in enumerate((12, 2, 2, 12, 2, 2)):  # profile 1, 0, 0 (replay), 1, 0 (enqueue first), 0
            x = np.random.default_rng(i).standard_normal((batch, 3, 224, 224)).astype(np.float32)
            np.testing.assert_allclose(eng.infer({"input": x})["logits"], mb_reference.infer({"input": x})["logits"], atol=2e-2, rtol=2e-2)


@pytest.mark.tensorrt_gpu
def test_misaligned_cuda_input_is_copied(mb_engine, mb_reference):
    import torch

    n = 2 * 3 * 224 * 224
    flat = torch.randn(n + 1, device="cuda")
    x = flat[1:].view(2, 3, 224, 224)  # contiguous, 4 bytes past an aligned address
    assert x.data_ptr() % 256
    got = mb_engine.infer({"input": x})["logits"].cpu().numpy()
    np.testing.assert_allclose(got, mb_reference.infer({"input": x.cpu().numpy()})["logits"], atol=2e-2, rtol=2e-2)


@pytest.mark.tensorrt_gpu
def test_short_lived_threads_reuse_contexts(mb_engine):
    x = np.zeros((1, 3, 224, 224), np.float32)
    for _ in range(8):
        t = threading.Thread(target=lambda: mb_engine.infer({"input": x}))
        t.start()
        t.join()
    assert mb_engine._pool.alive <= 4
