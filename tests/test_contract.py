"""One contract test, run over every engine that loads here."""

from __future__ import annotations

import numpy as np
import pytest

import trtflow
from trtflow.errors import EngineError, InputDtypeError, InputNameError, InputShapeError


def _ort(tiny_onnx):
    return trtflow.load(tiny_onnx, engine="ort")


def _torch(tiny_onnx):
    import torch

    from tests.models.tiny import tiny_module

    return trtflow.load(
        tiny_module(), engine="torch", example_inputs={"x": torch.randn(2, 3, 16, 16)},
        dynamic={"x": {0: "batch"}}, output_names=["logits", "feat"], device="cpu",
    )


def _tensorrt(tiny_onnx):
    return trtflow.load(tiny_onnx, engine="tensorrt", cache=False)  # batch profile inferred: 1..16


ENGINES = {"ort": _ort, "torch": _torch, "tensorrt": _tensorrt}
MARKS = {"tensorrt": [pytest.mark.tensorrt_gpu]}  # executes only where a TensorRT runs on the GPU


@pytest.fixture(params=[pytest.param(name, marks=MARKS.get(name, ())) for name in sorted(ENGINES)])
def engine(request, tiny_onnx):
    eng = ENGINES[request.param](tiny_onnx)
    yield eng
    eng.close()


def test_specs_are_named(engine):
    assert [s.name for s in engine.inputs] == ["x"]
    assert [s.name for s in engine.outputs] == ["logits", "feat"]
    x = engine.inputs[0]
    assert x.dtype == "float32"
    assert x.rank == 4 and x.shape[1:] == (3, 16, 16)
    assert isinstance(x.shape[0], str)  # the dynamic batch dim is named


def test_numpy_in_numpy_out_matches_reference(engine):
    from tests.models.tiny import tiny_module
    import torch

    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    out = engine.infer({"x": x})
    assert list(out) == ["logits", "feat"]
    assert isinstance(out["logits"], np.ndarray) and out["logits"].shape == (3, 5)
    with torch.no_grad():
        ref = tiny_module()(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(out["logits"], ref, atol=1e-4, rtol=1e-4)


def test_torch_in_torch_out(engine):
    import torch

    x = torch.randn(2, 3, 16, 16)
    out = engine.infer({"x": x})
    assert isinstance(out["logits"], torch.Tensor) and out["logits"].device == x.device
    assert tuple(out["feat"].shape) == (2, 8)


def test_dlpack_object_accepted(engine):
    import torch

    class Capsule:  # any producer of __dlpack__ that is neither numpy nor torch
        def __init__(self, t):
            self.t = t

        def __dlpack__(self, **kw):
            return self.t.__dlpack__(**kw)

        def __dlpack_device__(self):
            return self.t.__dlpack_device__()

        @property
        def shape(self):
            return self.t.shape

        @property
        def dtype(self):
            return self.t.dtype

    out = engine.infer({"x": Capsule(torch.randn(1, 3, 16, 16))})
    assert tuple(out["logits"].shape) == (1, 5)


def test_lossless_cast_is_done(engine):
    x = np.random.default_rng(1).integers(0, 255, (1, 3, 16, 16)).astype(np.uint8)
    out = engine.infer({"x": x})
    ref = engine.infer({"x": x.astype(np.float32)})
    np.testing.assert_array_equal(out["logits"], ref["logits"])


@pytest.mark.parametrize(
    "feed, error, words",
    [
        ({"y": np.zeros((1, 3, 16, 16), np.float32)}, InputNameError, ["unknown ['y']", "missing ['x']"]),
        ({"x": np.zeros((3, 16, 16), np.float32)}, InputShapeError, ["rank 3", "batch dimension"]),
        ({"x": np.zeros((1, 4, 16, 16), np.float32)}, InputShapeError, ["dim 1 is 4"]),
        ({"x": np.zeros((1, 3, 16, 16), np.float64)}, InputDtypeError, ["float64", "float32", "astype"]),
    ],
)
def test_bad_feeds_raise_before_running(engine, feed, error, words):
    with pytest.raises(error) as info:
        engine.infer(feed)
    for w in words:
        assert w in str(info.value)
    assert isinstance(info.value, trtflow.errors.TrtflowError)


def test_closed_engine_refuses(tiny_onnx):
    eng = ENGINES["ort"](tiny_onnx)
    with eng:
        pass
    with pytest.raises(EngineError, match="closed"):
        eng.infer({"x": np.zeros((1, 3, 16, 16), np.float32)})


def test_engine_names_resolve_aliases_case_and_auto():
    from trtflow.backends import auto_engine, canonical_engine, engine_name

    assert canonical_engine("OnnxRuntime") == "ort" and canonical_engine("TRT") == "tensorrt"
    assert engine_name("AUTO", "model.plan") == "tensorrt" == engine_name("auto", "model.engine")
    assert engine_name("auto", "m.onnx") == auto_engine("m.onnx") and engine_name("pt", "m.onnx") == "torch"


def test_load_takes_engine_names_in_any_case(tiny_onnx):
    for name in ("AUTO", "Auto", "ORT", "OnnxRuntime"):
        with trtflow.load(tiny_onnx, engine=name) as eng:
            assert eng.name == "ort"


def test_engine_says_whether_it_runs_on_a_gpu(engine):
    assert engine.on_gpu is (engine.name == "tensorrt")  # ort on the CPU provider, torch on device="cpu"


def test_ort_engine_with_the_cuda_provider_says_it_runs_on_a_gpu(tiny_onnx):
    """The CUDA provider's answer, decided from the session's providers; the GPU run itself is not
    done here (no GPU): the providers are set after the engine loads on the CPU."""
    from trtflow.backends.onnxruntime.runner import OrtEngine

    with OrtEngine(tiny_onnx) as eng:
        assert eng.on_gpu is False
        eng.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        assert eng.on_gpu is True
