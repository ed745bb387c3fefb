"""tune on bad and edge inputs: the accuracy gate where the FP32 reference holds zeros, zero-sized
shapes, calibration files that are empty, unreadable or of mixed shapes, boolean inputs, a device
that does not exist, and the CLI's report when no configuration meets the bound."""

from __future__ import annotations

import numpy as np
import pytest

from trtflow.tune import Bound
from trtflow.tune.accuracy import check


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRTFLOW_CACHE_DIR", str(tmp_path / "cache"))


def test_allclose_with_atol_zero_fails_an_error_beside_an_exact_zero():
    """A 0/0 ratio where reference and output are both 0 (ReLU outputs) must not hide the others."""
    ref = [{"y": np.array([[0.0, 1.0]])}]
    got = [{"y": np.array([[0.0, 6.0]])}]
    acc = check(Bound("allclose", atol=0.0, rtol=0.01), ref, got)
    assert acc.failure and "max abs error 5" in acc.failure and acc.closeness == pytest.approx(500.0)
    assert check(Bound("allclose", atol=0.0, rtol=0.01), ref, ref).failure is None
    nonzero_err_at_zero = check(Bound("allclose", atol=0.0, rtol=0.01), ref, [{"y": np.array([[1e-3, 1.0]])}])
    assert nonzero_err_at_zero.failure and nonzero_err_at_zero.closeness == float("inf")


def test_batch_of_zero_is_a_usage_error(tiny_onnx):
    from tests.conftest import call_cli

    got = call_cli("tune", tiny_onnx, "--engine", "ort", "--shapes", "x:0x3x16x16", "--precisions", "fp32",
                   "--threads", "1", "--only", "* opt=all *", "--short-s", "0.05", "--full-s", "0.1", "--no-save")
    assert got.returncode == 2 and "batch size 0" in got.stderr and "x:1x" in got.stderr, got.stderr


def test_calibration_npz_without_samples_is_a_usage_error(tmp_path):
    from trtflow.errors import UsageError
    from trtflow.tune.inputs import calibration_feeds

    path = tmp_path / "empty.npz"
    np.savez(path, x=np.zeros((0, 3, 16, 16), np.float32))
    with pytest.raises(UsageError, match="no samples"):
        calibration_feeds(path, {"x": (2, 3, 16, 16)}, {}, 8)


@pytest.mark.parametrize("content", [b"not a zip file", b"PK\x03\x04 truncated"])
def test_calibration_npz_that_is_not_one_is_a_model_load_error(tmp_path, content):
    from trtflow.errors import ModelLoadError
    from trtflow.tune.inputs import calibration_feeds

    path = tmp_path / "calib.npz"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match="cannot read calibration data .*calib.npz"):
        calibration_feeds(path, {"x": (2, 3, 16, 16)}, {}, 8)


def test_calibration_folder_with_samples_of_another_shape_names_the_file(tmp_path):
    from trtflow.errors import UsageError
    from trtflow.tune.inputs import calibration_feeds

    np.save(tmp_path / "a.npy", np.ones((3, 16, 16), np.float32))
    np.save(tmp_path / "b.npy", np.ones((2, 3, 8, 8), np.float32))
    with pytest.raises(UsageError, match=r"b\.npy.*\(3, 8, 8\)"):
        calibration_feeds(tmp_path, {"x": (2, 3, 16, 16)}, {}, 8)


def _masked_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT), helper.make_node("Mul", ["x", "maskf"], ["y"])],
        "masked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
                   helper.make_tensor_value_info("mask", TensorProto.BOOL, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_boolean_input_gets_random_booleans(tmp_path):
    import trtflow
    from trtflow.tune import TuneOptions

    onnx_path = _masked_onnx(tmp_path / "masked.onnx")
    result = trtflow.tune(str(onnx_path), engine="ort", precisions=("fp32",),
                          options=TuneOptions(threads=(1,), ort_levels=("all",), save=False, short_s=0.05, full_s=0.1,
                                              warmup_ms=10, accuracy_samples=4))
    assert result.best.accepted and result.best.max_abs_err == 0.0


@pytest.mark.parametrize("device", ["bogus", "cuda:64"])
def test_torch_device_that_does_not_exist_is_a_usage_error(device):
    import trtflow
    from trtflow.errors import UsageError
    from trtflow.tune import TuneOptions

    from tests.models.tiny import tiny_module

    with pytest.raises(UsageError, match="device"):
        trtflow.tune(tiny_module(), shapes={"x": (2, 3, 16, 16)}, engine="torch", precisions=("fp32",), device=device,
                     options=TuneOptions(only=["* eager"], save=False, short_s=0.05, full_s=0.1, warmup_ms=10,
                                         accuracy_samples=4))


def test_cli_keeps_the_measurements_when_no_configuration_meets_the_bound(tiny_onnx):
    import json

    from tests.conftest import call_cli

    args = ["tune", tiny_onnx, "--engine", "ort", "--shapes", "x:2x3x16x16", "--precisions", "fp16", "--atol", "0",
            "--rtol", "0", "--threads", "1", "--only", "* opt=all *", "--short-s", "0.05", "--full-s", "0.1", "--no-save"]
    got = call_cli(*args, "--json")
    assert got.returncode == 1 and "closest is 'fp16 opt=all threads=1'" in got.stderr
    data = json.loads(got.stdout)
    assert data["ok"] is False and data["type"] == "MismatchError" and data["chosen"] is None
    (config,) = data["configs"]
    assert config["name"] == "fp16 opt=all threads=1" and config["accepted"] is False
    assert config["max_abs_err"] > 0 and config["reason"].startswith("fails accuracy")
    got = call_cli(*args)
    assert got.returncode == 1 and "no configuration within the bound" in got.stdout and "fails" in got.stdout, got.stdout


def test_repeated_threads_providers_and_levels_make_each_configuration_once():
    from trtflow.tune.space import ort_space, tensorrt_space

    cands, _ = ort_space(["fp32"], threads=[1, 1, 2], levels=("all", "all"), providers=[["cpu"], ["CPU"]])
    names = [c.name for c in cands]
    assert sorted(names) == ["fp32 opt=all threads=1", "fp32 opt=all threads=2"]
    cands, _ = tensorrt_space(["fp16"], levels=(3, 3))
    assert [c.name for c in cands] == ["fp16 opt-level=3"]


def test_cli_repeated_threads_report_the_chosen_configuration(tiny_onnx):
    import json

    from tests.conftest import call_cli

    got = call_cli("tune", tiny_onnx, "--engine", "ort", "--shapes", "x:2x3x16x16", "--precisions", "fp32", "--threads",
                   "1,1", "--only", "* opt=all *", "--short-s", "0.05", "--full-s", "0.1", "--no-save", "--json")
    data = json.loads(got.stdout)
    assert [c["name"] for c in data["configs"]] == ["fp32 opt=all threads=1"] and data["configs"][0]["status"] == "chosen"


def _tune_fp16(onnx_path):
    import trtflow
    from trtflow.tune import TuneOptions

    return trtflow.tune(str(onnx_path), shapes={"x": (2, 3, 16, 16)}, engine="ort", precisions=("fp16",),
                        metric="relative", rtol=0.05,
                        options=TuneOptions(threads=(1,), ort_levels=("all",), short_s=0.05, full_s=0.1, warmup_ms=10,
                                            accuracy_samples=4))


def test_saved_choice_with_its_converted_model_missing_says_to_tune_again(tiny_onnx):
    import json
    from pathlib import Path

    import trtflow
    from trtflow.errors import UsageError

    result = _tune_fp16(tiny_onnx)
    record = json.loads(Path(result.record_path).read_text())
    (Path(result.record_path).parent / record["model_file"]).unlink()
    with pytest.raises(UsageError, match=r"\.fp16\.onnx.*trtflow tune"):
        trtflow.load(str(tiny_onnx), engine="ort", tune=True, shapes={"x": (2, 3, 16, 16)})


@pytest.mark.parametrize("text", ["[1, 2]", "{broken", '"text"'])
def test_damaged_saved_choice_is_no_choice(tiny_onnx, text):
    from pathlib import Path

    import trtflow
    from trtflow.errors import UsageError

    result = _tune_fp16(tiny_onnx)
    Path(result.record_path).write_text(text)
    with pytest.raises(UsageError, match="no tuned configuration"):
        trtflow.load(str(tiny_onnx), engine="ort", tune=True, shapes={"x": (2, 3, 16, 16)})


def test_cli_plot_path_that_cannot_be_written_fails_before_tuning(tiny_onnx, tmp_path):
    from tests.conftest import call_cli

    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("")
    got = call_cli("tune", tiny_onnx, "--engine", "ort", "--shapes", "x:2x3x16x16", "--precisions", "fp32",
                   "--threads", "1", "--only", "* opt=all *", "--short-s", "0.05", "--full-s", "0.1",
                   "--plot", not_a_folder / "tune.png")
    assert got.returncode == 2 and "file.txt" in got.stderr
    assert not (tmp_path / "cache" / "tuned").exists() or not list((tmp_path / "cache" / "tuned").glob("*.json"))


@pytest.mark.parametrize("plot", ["dir.png", "tune.jpg", "", "missing/tune.png"])
def test_cli_plot_refuses_the_paths_bench_refuses_with_its_message(tiny_onnx, tmp_path, plot):
    """tune --plot checked only the suffix (an empty path was no --plot, a missing folder was created, a
    folder failed after the tuning); bench and loadgen refuse these before any work, with one message."""
    from tests.conftest import call_cli

    (tmp_path / "dir.png").mkdir()
    path = str(tmp_path / plot) if plot else ""
    tuned = call_cli("tune", tiny_onnx, "--engine", "ort", "--shapes", "x:2x3x16x16", "--precisions", "fp32",
                     "--threads", "1", "--short-s", "0.05", "--full-s", "0.1", "--plot", path)
    bench = call_cli("bench", tiny_onnx, "--plot", path)
    assert tuned.returncode == bench.returncode == 2, (tuned.stderr, bench.stderr)
    said = [proc.stderr.split("error: ", 1)[-1] for proc in (tuned, bench)]  # after "trtflow tune: error: "
    assert "--plot" in said[1] and said[0] == said[1], said
    assert not (tmp_path / "missing").exists()


def test_calibration_data_gives_the_accuracy_check_its_samples(tmp_path):
    """TuneOptions.accuracy_samples: the accuracy check runs that many held-back samples when the data has them."""
    from trtflow.tune.inputs import calibration_feeds

    samples = np.repeat(np.arange(100, dtype=np.float32)[:, None], 4, axis=1)  # sample i holds i
    np.savez(tmp_path / "calib.npz", x=samples)
    feeds = calibration_feeds(tmp_path / "calib.npz", {"x": (4, 4)}, {"x": "float32"}, 8)
    checked = [float(v) for b in feeds.accuracy for v in b["x"][:, 0]]
    calibrated = {float(v) for b in feeds.calibration for v in b["x"][:, 0]}
    assert len(set(checked)) == len(checked) == 8 and not calibrated & set(checked)
    assert "16 of 100 sample(s)" in feeds.source and "tiled" not in feeds.source, feeds.source


def test_python_api_takes_one_pattern_and_comma_separated_precisions_as_strings(tiny_onnx):
    import trtflow
    from trtflow.tune import TuneOptions

    result = trtflow.tune(str(tiny_onnx), shapes={"x": (2, 3, 16, 16)}, engine="ort", precisions="fp32, fp16",
                          options=TuneOptions(only="* opt=all *", threads=(1,), ort_levels=("all", "basic"), save=False,
                                              short_s=0.05, full_s=0.1, warmup_ms=10, accuracy_samples=4))
    assert sorted(c.name for c in result.configs) == ["fp16 opt=all threads=1", "fp32 opt=all threads=1"]


def _images(folder, sizes):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def _dynamic_hw_onnx(path):
    import torch

    from tests.models.tiny import tiny_module

    torch.onnx.export(tiny_module(), (torch.randn(2, 3, 16, 16),), str(path), input_names=["x"],
                      output_names=["logits", "feat"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}}, dynamo=False)
    return path


def test_calibration_images_of_other_sizes_than_the_tuned_shape_name_calib_preprocess(tmp_path):
    from trtflow.errors import UsageError
    from trtflow.graph.io import load_onnx
    from trtflow.tune.inputs import calibration_feeds

    folder = _images(tmp_path / "images", [(20, 30), (24, 30)])
    proto = load_onnx(str(_dynamic_hw_onnx(tmp_path / "dyn.onnx")))
    with pytest.raises(UsageError, match=r"\(3, 24, 30\).*\(2, 3, 16, 16\).*--calib-preprocess"):
        calibration_feeds(folder, {"x": (2, 3, 16, 16)}, {"x": "float32"}, 4, proto)
    feeds = calibration_feeds(folder, {"x": (2, 3, 16, 16)}, {"x": "float32"}, 4, proto, "resize=16,crop=16")
    assert feeds.accuracy[0]["x"].shape == (2, 3, 16, 16)


def test_calibration_folder_with_images_and_arrays_reads_both_for_onnx(tmp_path, tiny_onnx):
    from trtflow.graph.io import load_onnx
    from trtflow.tune.inputs import calibration_feeds

    folder = _images(tmp_path / "images", [(16, 16)] * 3)
    np.save(folder / "extra.npy", np.ones((3, 16, 16), np.float32))
    feeds = calibration_feeds(folder, {"x": (2, 3, 16, 16)}, {"x": "float32"}, 4, load_onnx(str(tiny_onnx)))
    assert "4 sample(s)" in feeds.source, feeds.source


def test_export_that_fails_verification_is_not_reused_by_the_next_tune():
    import torch

    import trtflow
    from trtflow.errors import MismatchError
    from trtflow.tune import TuneOptions

    class Noisy(torch.nn.Module):  # ONNX Runtime's random numbers are not PyTorch's: the export fails verification
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.linear(x) + torch.rand_like(x)

    model = Noisy().eval()
    for _ in range(2):
        with pytest.raises(MismatchError, match="does not match PyTorch"):
            trtflow.tune(model, shapes={"x": (2, 4)}, engine="ort", precisions=("fp32",), metric="relative", rtol=10.0,
                         options=TuneOptions(threads=(1,), ort_levels=("all",), save=False, short_s=0.05, full_s=0.1))


def test_module_exported_for_ort_under_other_input_names_is_exported_again():
    import torch

    import trtflow
    from trtflow.tune import TuneOptions

    model = torch.nn.Linear(4, 4).eval()
    opts = TuneOptions(threads=(1,), ort_levels=("all",), save=False, short_s=0.05, full_s=0.1, warmup_ms=10,
                       accuracy_samples=4)
    first = trtflow.tune(model, shapes={"a": (2, 4)}, engine="ort", precisions=("fp32",), options=opts)
    second = trtflow.tune(model, shapes={"x": (2, 4)}, engine="ort", precisions=("fp32",), options=opts)
    assert first.shapes == {"a": [2, 4]} and second.shapes == {"x": [2, 4]}


def test_nothing_to_try_says_why_each_precision_was_skipped():
    import trtflow
    from trtflow.errors import UsageError

    from tests.models.tiny import tiny_module

    with pytest.raises(UsageError, match="no configuration left to try.*int8: skipped: the torch engine has no INT8 path"):
        trtflow.tune(tiny_module(), shapes={"x": (2, 3, 16, 16)}, engine="torch", precisions=("int8",))


@pytest.mark.parametrize("shape", [(2, 3, 16), (2, 3, 17, 16)])
def test_onnx_shape_that_does_not_fit_the_input_is_a_usage_error_naming_the_input(tiny_onnx, shape):
    import trtflow
    from trtflow.errors import UsageError

    with pytest.raises(UsageError, match=r"'x'.*the model takes \(batch, 3, 16, 16\)"):
        trtflow.tune(str(tiny_onnx), shapes={"x": shape}, engine="ort", precisions=("fp32",))


def test_tensorrt_space_on_a_strongly_typed_flavor_has_no_precision_flags_it_refuses():
    from trtflow.tune.space import tensorrt_space

    cands, skips = tensorrt_space(["fp32", "fp16", "bf16", "int8"], levels=(3,), strongly_typed=True)
    by_name = {c.name: c for c in cands}
    assert by_name["int8 opt-level=3"].variant == "int8"
    assert not {"int8", "bf16"} & set(by_name["int8 opt-level=3"].options["build"])  # the Q/DQ model carries INT8
    assert by_name["fp16 opt-level=3"].options["build"]["fp16"] is True  # converted to FP16 before parsing
    assert [s.name for s in skips] == ["bf16"] and "strongly typed" in skips[0].reason
    cands, skips = tensorrt_space(["bf16", "int8"], levels=(3,))  # TensorRT 10: builder flags
    assert {c.name: c.options["build"].get("int8") for c in cands} == {"int8 opt-level=3": True, "bf16 opt-level=3": None}


def _matmul_onnx(path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_tensorrt_int8_is_built_on_a_strongly_typed_flavor(tmp_path):
    import trtflow
    from trtflow.backends import tensorrt_usable
    from trtflow.backends.tensorrt.flavor import flavor_available
    from trtflow.errors import UsageError
    from trtflow.tune import TuneOptions

    flavor = flavor_available()
    if flavor is None or not flavor.always_strongly_typed or tensorrt_usable():
        pytest.skip("needs a strongly typed TensorRT flavor (TensorRT-RTX) that builds but cannot execute here")
    with pytest.raises(UsageError, match="no configuration could be measured") as info:
        trtflow.tune(str(_matmul_onnx(tmp_path / "matmul.onnx")), engine="tensorrt", precisions=("int8", "bf16"),
                     options=TuneOptions(trt_levels=(3,), save=False, accuracy_samples=2))
    assert "int8 opt-level=3: failed: EngineIncompatibleError: built in" in str(info.value), str(info.value)


def test_a_scalar_input_stays_a_scalar_when_cast_for_the_torch_engine_and_in_batch_norm_recalibration():
    """np.ascontiguousarray made a 0-d feed (1,): the torch engine refused the cast scalar ("has shape (1,)"),
    and the module recalibrating its batch norms got a (1,) tensor for its scalar argument."""
    torch = pytest.importorskip("torch")
    from trtflow.backends.torch.runner import TorchEngine
    from trtflow.tune.inputs import recalibrate_batchnorm
    from trtflow.tune.search import _adapt

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm1d(2)
            self.ranks = []

        def forward(self, x, s):
            self.ranks.append(s.dim())
            return self.bn(x) * s

    module = Scaled()
    assert recalibrate_batchnorm(module, [{"x": np.ones((4, 2), np.float32), "s": np.array(2.0, np.float32)}]) == 1
    assert module.ranks == [0]
    engine = TorchEngine(module, {"x": torch.ones(4, 2), "s": torch.tensor(2)})
    feed = _adapt(engine, {"x": np.ones((4, 2), np.float32), "s": np.array(3, np.int32)})  # cast to int64
    assert tuple(feed["s"].shape) == () and feed["s"].dtype == torch.int64
    assert engine.infer(feed)
