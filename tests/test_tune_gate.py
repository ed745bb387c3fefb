"""tune's accuracy gate, choice and saved key on edge cases: integer inputs on the torch engine,
top-1 agreement of each classifier output, a non-finite FP32 reference, the library versions of
the key, and the choice among fully and briefly timed configurations."""

from __future__ import annotations

import numpy as np
import pytest

import trtflow
from trtflow.errors import UsageError
from trtflow.tune import Bound, TuneOptions
from trtflow.tune.accuracy import check

from tests.models.export_zoo import embedding
from tests.models.tiny import export_tiny, tiny_module

FAST = dict(short_s=0.05, full_s=0.1, warmup_ms=10, accuracy_samples=4)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRTFLOW_CACHE_DIR", str(tmp_path / "cache"))


def test_torch_engine_tunes_a_model_with_integer_inputs():
    import torch

    model = embedding()
    ids = torch.randint(0, 10, (2, 5))
    result = trtflow.tune(model, engine="torch", precisions=("fp32",), example_inputs={"ids": ids},
                          options=TuneOptions(only=["fp32 eager"], **FAST))
    assert result.best.accepted, [(c.name, c.reason) for c in result.configs]
    with trtflow.load(model, engine="torch", tune=True, example_inputs=[ids]) as engine:
        assert engine.inputs[0].dtype == "int64"


def test_top1_needs_the_agreement_of_every_classifier_output():
    ref_a = np.eye(8, 3)
    ref_b = np.eye(8, 3)
    got_b = ref_b.copy()
    got_b[0] = [0.0, 1.0, 0.0]  # one of 8 rows of 'b' changes its class: 87.5 %
    ref, got = [{"a": ref_a, "b": ref_b}], [{"a": ref_a, "b": got_b}]
    acc = check(Bound("top1", min_agreement=0.9), ref, got)
    assert acc.failure is not None and "87.5%" in acc.failure  # not the pooled 15/16 = 93.8 %
    assert acc.top1_agreement == pytest.approx(0.875)
    assert check(Bound("top1", min_agreement=0.85), ref, got).failure is None


def test_non_finite_fp32_reference_is_refused_with_its_cause():
    import torch

    class Blows(torch.nn.Module):
        def forward(self, x):
            return torch.log(x)  # NaN for the negative random inputs

    with pytest.raises(UsageError, match="FP32 reference.*non-finite"):
        trtflow.tune(Blows(), shapes={"x": (2, 4)}, engine="torch", precisions=("fp32",),
                     options=TuneOptions(only=["fp32 eager"], save=False, **FAST))


def test_key_holds_the_engine_library_versions_whatever_their_wheel_is_called(monkeypatch):
    from importlib import metadata

    from trtflow.backends import tuned

    wheels = {"onnxruntime": ["onnxruntime-gpu"], "onnx": ["onnx"], "tensorrt_rtx": ["tensorrt_rtx_cu13"],
              "tensorrt": ["tensorrt-cu12"], "torch": ["torch"]}
    versions = {"onnxruntime-gpu": "1.20.1", "onnx": "1.17.0", "tensorrt_rtx_cu13": "1.1.0", "tensorrt-cu12": "10.8.0",
                "torch": "2.6.0"}

    def version(dist):
        if dist not in versions:
            raise metadata.PackageNotFoundError(dist)
        return versions[dist]

    monkeypatch.setattr(metadata, "packages_distributions", lambda: wheels)
    monkeypatch.setattr(metadata, "version", version)
    ort = tuned.library_versions("ort")
    assert "1.20.1" in str(ort) and "1.17.0" in str(ort)
    trt = tuned.library_versions("tensorrt")
    assert "10.8.0" in str(trt) and "1.1.0" in str(trt)
    assert "2.6.0" in str(tuned.library_versions("torch"))
    before = tuned.tuned_key(b"model", "ort", [[1, 3]])[0]
    versions["onnxruntime-gpu"] = "1.21.0"
    assert tuned.tuned_key(b"model", "ort", [[1, 3]])[0] != before


def test_tuned_key_and_engine_cache_key_hash_their_material_one_way(monkeypatch):
    """Both keys go through one function, and keep the values they had before it was shared."""
    from trtflow.backends import tuned
    from trtflow.backends.tensorrt.cache import cache_key
    from trtflow.backends.tensorrt.config import BuildConfig
    from trtflow.backends.tensorrt.flavor import Flavor

    monkeypatch.setattr(tuned, "device_identity", lambda *a, **k: {"kind": "cpu", "name": "Test CPU", "cores": 2,
                                                                    "machine": "x86_64"})
    monkeypatch.setattr(tuned, "library_versions", lambda engine: {"trtflow": "0.0"})
    key, material = tuned.tuned_key(b"model", "ort", [[1, 3]])
    assert key == tuned.material_key(material) == "4e189963b1aff45d6f7b831abb3f91fa396d4d29"
    gpu = {"name": "NVIDIA H200", "compute_capability": [9, 0]}
    engine_key = cache_key("ab" * 32, BuildConfig(), Flavor("tensorrt", "10.13.0.35", None), gpu)
    assert engine_key == "9870220d3b38398dca1dc7f987c337b80e61c9d4"
    assert engine_key == tuned.material_key({"onnx_sha256": "ab" * 32, "config": BuildConfig().key_dict(),
                                             "flavor": "tensorrt", "version": "10.13.0.35", "gpu": gpu})


def test_ort_tuned_key_names_its_providers_and_the_gpu_of_cuda_ones(monkeypatch):
    """A choice measured with the CUDA provider is not applied on another GPU, nor to a CPU session."""
    from trtflow.backends import tuned
    from trtflow.backends.tensorrt import flavor

    cpu_key, cpu = tuned.tuned_key(b"model", "ort", [[1, 3]])
    assert set(cpu["device"]) == {"kind", "name", "cores", "machine"}  # CPU-only keys as before
    for providers in (["cpu"], "CPU", ["CPUExecutionProvider"]):
        assert tuned.tuned_key(b"model", "ort", [[1, 3]], providers=providers)[0] == cpu_key
    monkeypatch.setattr(flavor, "gpu_info", lambda device=0: flavor.GpuInfo(device, f"GPU {device}", (9, 0)))
    cuda_key, cuda = tuned.tuned_key(b"model", "ort", [[1, 3]], providers=["cuda", "cpu"])
    assert cuda["device"]["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert cuda["device"]["gpu"] == {"name": "GPU 0", "compute_capability": [9, 0]}
    assert tuned.tuned_key(b"model", "ort", [[1, 3]], providers="cuda,cpu")[0] == cuda_key
    other_gpu = tuned.tuned_key(b"model", "ort", [[1, 3]], device=1, providers=["cuda", "cpu"])[0]
    monkeypatch.setattr(flavor, "gpu_info", lambda device=0: flavor.GpuInfo(device, "another GPU", (8, 9)))
    other_name = tuned.tuned_key(b"model", "ort", [[1, 3]], providers=["cuda", "cpu"])[0]
    assert len({cpu_key, cuda_key, other_gpu, other_name}) == 4


def test_choice_prefers_fully_timed_configurations():
    from trtflow.tune.result import ACCEPTED, CHOSEN, ConfigResult
    from trtflow.tune.search import choose

    full = ConfigResult("full", "ort", "fp32", throughput=100.0, accepted=True, status=ACCEPTED,
                        reason="within the bound", measured_s=1.0)
    short = ConfigResult("short", "ort", "fp16", throughput=120.0, accepted=True, status=ACCEPTED,
                         reason="within the bound; timed 0.3 s only (budget)", measured_s=0.3)
    assert choose([full, short], Bound(), full_s=1.0) is full and full.status == CHOSEN
    alone = ConfigResult("short", "ort", "fp16", throughput=120.0, accepted=True, status=ACCEPTED,
                         reason="within the bound; timed 0.3 s only (budget)", measured_s=0.3)
    assert choose([alone], Bound(), full_s=1.0) is alone  # nothing timed in full: the brief timing decides


def _two_input_onnx(path, b_shape):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Concat", ["a", "b"], ["y"], axis=0)], "two",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, b_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


ORT_FAST = TuneOptions(threads=(1,), ort_levels=("all",), **FAST)


def test_onnx_choice_is_keyed_by_input_name_not_by_the_order_shapes_are_given(tmp_path):
    other = _two_input_onnx(tmp_path / "other.onnx", ["m", 3])
    trtflow.tune(other, shapes={"a": (2, 3), "b": (4, 3)}, engine="ort", precisions=("fp32",), options=ORT_FAST)
    with trtflow.load(other, engine="ort", tune=True, shapes={"b": (4, 3), "a": (2, 3)}):
        pass  # the same shapes, given in another order
    with pytest.raises(UsageError, match="no tuned configuration"):
        trtflow.load(other, engine="ort", tune=True, shapes={"b": (2, 3), "a": (4, 3)})  # other shapes


def test_onnx_choice_takes_the_static_shapes_load_was_not_given(tmp_path):
    onnx_path = _two_input_onnx(tmp_path / "static_b.onnx", [1, 3])
    trtflow.tune(onnx_path, shapes={"a": (2, 3)}, engine="ort", precisions=("fp32",), options=ORT_FAST)
    with trtflow.load(onnx_path, engine="ort", tune=True, shapes={"a": (2, 3)}):
        pass


def test_torch_example_inputs_by_name_in_any_order():
    import torch

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fa, self.fb = torch.nn.Linear(3, 4), torch.nn.Linear(5, 4)

        def forward(self, a, b):
            return self.fa(a) + self.fb(b)

    torch.manual_seed(0)
    model = Two().eval()
    a, b = torch.randn(2, 3), torch.randn(2, 5)
    result = trtflow.tune(model, engine="torch", precisions=("fp32",), example_inputs={"b": b, "a": a},
                          options=TuneOptions(only=["fp32 eager"], **FAST))
    assert result.best.accepted, [(c.name, c.reason) for c in result.configs]
    for examples in ({"b": b, "a": a}, {"a": a, "b": b}, [a, b]):
        with trtflow.load(model, engine="torch", tune=True, example_inputs=examples) as engine:
            assert engine.infer({"a": a, "b": b})["output"].shape == (2, 4)


def test_saved_record_holds_tunes_wall_time(tmp_path):
    import json

    onnx_path = _two_input_onnx(tmp_path / "w.onnx", [1, 3])
    result = trtflow.tune(onnx_path, shapes={"a": (2, 3)}, engine="ort", precisions=("fp32",), options=ORT_FAST)
    record = json.loads(open(result.record_path).read())
    assert 0 < record["wall_s"] <= result.wall_s


def test_reduced_precision_choice_is_reused_on_every_load():
    import torch

    model = tiny_module()
    trtflow.tune(model, shapes={"x": (2, 3, 16, 16)}, engine="torch", precisions=("bf16",), metric="relative",
                 rtol=0.05, options=TuneOptions(only=["bf16 eager cl"], **FAST))
    x = torch.randn(2, 3, 16, 16)
    for _ in range(2):  # loading the bf16 choice must not change the model it is keyed by
        with trtflow.load(model, engine="torch", tune=True, example_inputs=[x]) as engine:
            assert engine.precision == "bf16"


def test_module_with_integer_inputs_is_exported_with_them_for_ort():
    import torch

    ids = torch.randint(0, 10, (2, 5))
    result = trtflow.tune(embedding(), engine="ort", precisions=("fp32",), example_inputs={"ids": ids},
                          options=ORT_FAST)
    assert result.best.accepted


def test_module_with_numpy_example_inputs_is_exported_for_ort():
    ids = np.random.default_rng(0).integers(0, 10, (2, 5))  # int64 numpy ids, not torch tensors
    result = trtflow.tune(embedding(), engine="ort", precisions=("fp32",), example_inputs={"ids": ids},
                          options=ORT_FAST)
    assert result.best.accepted


def test_relative_metric_refuses_an_atol_it_would_ignore():
    from trtflow.tune.search import make_bound

    with pytest.raises(UsageError, match="atol"):
        make_bound(0.5, 0.05, "relative", None)
    assert make_bound(None, 0.05, "relative", None).rtol == 0.05


def test_reduced_precision_configuration_leaves_fp32_ones_in_fp32():
    result = trtflow.tune(tiny_module(), shapes={"x": (2, 3, 16, 16)}, engine="torch", precisions=("bf16", "fp32"),
                          metric="relative", rtol=0.05, options=TuneOptions(only=["* eager"], save=False, **FAST))
    names = [c.name for c in result.configs]
    assert names.index("bf16 eager") < names.index("fp32 eager")
    assert result.configs[names.index("fp32 eager")].max_abs_err == 0.0


def test_tuned_torch_options_replace_the_callers_knobs_the_choice_leaves_off():
    import torch

    model = tiny_module()
    result = trtflow.tune(model, shapes={"x": (2, 3, 16, 16)}, engine="torch", precisions=("fp32",),
                          metric="relative", rtol=0.05, options=TuneOptions(only=["fp32 eager"], **FAST))
    assert "channels_last" not in result.best.options and "compile" not in result.best.options
    x = torch.randn(2, 3, 16, 16)
    with trtflow.load(model, engine="torch", tune=True, example_inputs=[x], channels_last=True,
                      compile="default") as engine:
        assert engine.channels_last is False and engine.compile_mode is None  # what was measured: plain eager


def test_key_of_an_onnx_file_covers_its_external_weights(tmp_path):
    import onnx

    from trtflow.backends.tuned import tuned_key

    proto = onnx.load(str(export_tiny(tmp_path / "tiny.onnx")))
    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    onnx.save_model(proto, str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    data = path.parent / "model.onnx.data"
    before = tuned_key(str(path), "ort", [[2, 3, 16, 16]])[0]
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF  # other weights, the same graph file
    data.write_bytes(bytes(raw))
    assert tuned_key(str(path), "ort", [[2, 3, 16, 16]])[0] != before


def test_onnx_model_with_float16_inputs_is_tuned(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "half",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "half.onnx"))
    result = trtflow.tune(str(tmp_path / "half.onnx"), engine="ort", precisions=("fp32",), options=ORT_FAST)
    assert result.best.accepted


def test_torch_model_tuned_with_float16_example_inputs():
    import torch

    x = torch.randn(2, 3, 16, 16).half()
    result = trtflow.tune(tiny_module(), engine="torch", precisions=("fp32",), example_inputs={"x": x},
                          metric="relative", rtol=0.05, options=TuneOptions(only=["fp32 eager"], save=False, **FAST))
    assert result.best.accepted


def test_held_back_accuracy_batches_hold_no_calibration_sample(tmp_path):
    from trtflow.tune.inputs import calibration_feeds

    samples = np.repeat(np.arange(12, dtype=np.float32)[:, None], 4, axis=1)  # sample i holds i
    np.savez(tmp_path / "calib.npz", x=samples)
    feeds = calibration_feeds(tmp_path / "calib.npz", {"x": (8, 4)}, {"x": "float32"}, 64)
    calibrated = {float(v) for b in feeds.calibration for v in b["x"][:, 0]}
    checked = {float(v) for b in feeds.accuracy for v in b["x"][:, 0]}
    assert calibrated and checked and not calibrated & checked, (calibrated, checked)


def test_output_of_another_shape_fails_the_gate():
    ref = [{"y": np.arange(10.0).reshape(2, 5)}]
    got = [{"y": np.arange(10.0).reshape(2, 5).T.copy()}]  # the same values laid out (5, 2)
    acc = check(Bound("relative", rtol=10.0), ref, got)
    assert acc.failure is not None and "shape" in acc.failure


def test_nan_tolerance_is_refused_not_a_gate_that_passes_everything():
    for kwargs in (dict(atol=float("nan")), dict(rtol=float("nan")), dict(metric="relative", rtol=float("nan"))):
        with pytest.raises(UsageError):
            Bound(**kwargs)


def test_nan_budget_is_refused(tmp_path):
    onnx_path = _two_input_onnx(tmp_path / "b.onnx", [1, 3])
    with pytest.raises(UsageError, match="budget"):
        trtflow.tune(onnx_path, shapes={"a": (2, 3)}, engine="ort", precisions=("fp32",), budget_s=float("nan"),
                     options=ORT_FAST)


def test_reduced_precision_module_with_random_batch_norms_is_tuned_against_fp32():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    result = trtflow.tune(model.bfloat16(), shapes={"x": (4, 3, 8, 8)}, engine="torch", precisions=("fp32",),
                          metric="relative", rtol=0.05, options=TuneOptions(only=["fp32 eager"], save=False, **FAST))
    assert result.best.accepted and any("re-estimated" in n for n in result.notes)


@pytest.mark.parametrize("tuned_io, callers_io", [(True, False), (False, True)])
def test_tuned_torch_choice_keeps_the_io_types_it_was_measured_with(tuned_io, callers_io):
    """A BF16 choice timed with FP32 inputs and outputs (cast inside) loads with them even when the
    caller asks for BF16 I/O, and one timed with BF16 I/O loads with BF16 I/O: the engine is the
    configuration measured, as for the other knobs."""
    import torch

    model = tiny_module()
    trtflow.tune(model, shapes={"x": (2, 3, 16, 16)}, engine="torch", precisions=("bf16",), metric="relative",
                 rtol=0.05, options=TuneOptions(only=["bf16 eager"], keep_io_types=tuned_io, **FAST))
    x = torch.randn(2, 3, 16, 16)
    with trtflow.load(model, engine="torch", tune=True, example_inputs=[x], keep_io_types=callers_io) as engine:
        assert engine.precision == "bf16"
        assert engine.inputs[0].dtype == ("float32" if tuned_io else "bfloat16")
