"""The edits from Python, without the CLI: each edit's function over its options dataclass,
``edits.apply`` with options or keyword fields, bad option values, and progress reports."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from trtflow import edits
from trtflow.cli.main import main
from trtflow.edits import (ExtractOptions, FixShapesOptions, Fp16Options, NmsOptions, PreprocessOptions,
                           QuantizeOptions, RenameOptions, SimplifyOptions, VerifyConfig)
from trtflow.edits.verify import run_ort
from trtflow.errors import UsageError
from trtflow.graph.io import onnx_specs


@pytest.fixture(scope="module")
def tiny(tiny_onnx):
    return onnx.load(str(tiny_onnx))


def _x(batch: int = 1) -> dict:
    return {"x": np.random.default_rng(0).standard_normal((batch, 3, 16, 16)).astype(np.float32)}


# -- each edit's own function, options as a dataclass -----------------------------------------

def test_simplify_model(tiny):
    new, report = edits.simplify_model(tiny, SimplifyOptions(skip="graph_fusion,weight_tying"))
    assert report["skipped"] == ["graph_fusion", "weight_tying"]
    assert (report["nodes_before"], report["nodes_after"]) == (5, 4)


def test_fix_shapes(tiny):
    new, report = edits.fix_shapes(tiny, FixShapesOptions(dims={"batch": 2}))
    assert onnx_specs(new)[0][0].shape == (2, 3, 16, 16) and report["still_dynamic"] == []
    new, _ = edits.fix_shapes(tiny, FixShapesOptions(shapes={"x": [4, 3, 16, 16]}, fold=False))
    assert onnx_specs(new)[0][0].shape == (4, 3, 16, 16)


def test_embed_preprocess(tiny):
    options = PreprocessOptions(layout="nchw", scale=1 / 255, mean=0.5, std=(0.25,))
    new, report = edits.embed_preprocess(tiny, options)
    assert report["input"] == {"name": "x", "dtype": "uint8", "shape": ["batch", 3, 16, 16], "layout": "nchw"}
    frames = np.random.default_rng(1).integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    expected = run_ort(tiny, {"x": ((frames / 255 - 0.5) / 0.25).astype(np.float32)})["logits"]
    np.testing.assert_allclose(run_ort(new, {"x": frames})["logits"], expected, atol=1e-4)


def test_to_fp16_with_range_check(tiny):
    new, report = edits.to_fp16(tiny, Fp16Options(keep_io_types=False), VerifyConfig(shapes={"x": (2, 3, 16, 16)}))
    assert onnx_specs(new)[0][0].dtype == "float16" and report["range_checked_feeds"] == 1
    _, report = edits.to_fp16(tiny, Fp16Options(range_check=False, block=["Relu"]))
    assert report["range_checked_feeds"] == 0 and report["kept_fp32_by_op"] == {"Relu": 1}


def test_rename_io(tiny):
    new, report = edits.rename_io(tiny, RenameOptions(inputs={"x": "pixels"}, outputs={"logits": "scores"}))
    assert report["input_map"] == {"x": "pixels"}
    assert set(run_ort(new, {"pixels": _x()["x"]})) == {"scores", "feat"}


def test_extract_subgraph(tiny):
    new, report = edits.extract_subgraph(tiny, ExtractOptions(outputs="logits", inputs=["/Relu_output_0"]))
    assert [s["name"] for s in report["inputs"]] == ["/Relu_output_0"] and report["nodes_kept"] == 3


def test_quantize_model(tiny, tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        np.save(tmp_path / f"s{i}.npy", rng.standard_normal((3, 16, 16)).astype(np.float32))
    steps = []
    options = QuantizeOptions(calib_dir=tmp_path, method="minmax", holdout=2)
    new, report = edits.quantize_model(tiny, options, progress=lambda step, done=None, total=None: steps.append(step))
    assert (report["calibration_samples"], report["holdout_samples"]) == (4, 2)
    assert any(n.op_type == "QuantizeLinear" for n in new.graph.node)
    assert "reading calibration samples" in steps and any(s.startswith("quantize: calibrating") for s in steps)


def test_add_nms(models_dir):
    from tests.models.detection import export_head

    head = export_head(models_dir / "api_head_yolov8.onnx", "yolov8")
    new, report = edits.add_nms(str(head), NmsOptions("yolov8", score_thr=0.5, max_det=9))
    assert report["outputs"] == ["num_detections", "boxes", "scores", "classes"]
    got = run_ort(new, {"images": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)})
    assert got["boxes"].shape == (1, 9, 4)


# -- edits.apply ----------------------------------------------------------------------------

def test_apply_keyword_fields_and_options(tiny_onnx):
    new, report = edits.apply("fp16", tiny_onnx, keep_io_types=False)
    assert onnx_specs(new)[0][0].dtype == "float16" and report["details"]["keep_io_types"] is False
    assert report["verification"]["atol"] == 0.1  # fp16's own tolerance: no VerifyConfig tolerance was set
    # fields given with options replace the options' fields
    _, report = edits.apply("fp16", tiny_onnx, Fp16Options(block=("Relu",)), range_check=False, verify=False)
    assert report["details"]["kept_fp32_by_op"] == {"Relu": 1} and report["verification"] is None
    with pytest.raises(UsageError, match=r"no option\(s\) \['keep_io_type'\].*'keep_io_types'"):
        edits.apply("fp16", tiny_onnx, keep_io_type=False)
    with pytest.raises(UsageError, match="verify_config must be a trtflow.edits.VerifyConfig"):
        edits.apply("simplify", tiny_onnx, verify_config={"atol": 1})


def test_apply_reports_progress(tiny_onnx):
    steps = []
    edits.apply("simplify", tiny_onnx, progress=lambda step, done=None, total=None: steps.append((step, done, total)))
    assert steps[0] == ("simplify: editing", None, None)
    assert ("verifying on random(seed=0)", 0, 1) in steps
    with pytest.raises(UsageError, match="progress must be a callable"):
        edits.apply("simplify", tiny_onnx, progress=True)


# -- bad option values ----------------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: FixShapesOptions(), "fix-shapes needs --shape"),
    (lambda: FixShapesOptions(shapes="x:1x3x16x16"), "parse_shapes"),
    (lambda: FixShapesOptions(shapes={"x": "1x3x16x16"}), "tuple of sizes"),
    (lambda: FixShapesOptions(dims={"batch": 0}), r"dims\['batch'\] is 0; give a value >= 1"),
    (lambda: FixShapesOptions(dims={"batch": 1.5}), "whole number"),
    (lambda: FixShapesOptions(dims={"batch": 1}, fold="no"), "fold: expected True or False"),
    (lambda: SimplifyOptions(skip="folding"), "unknown onnxslim pass"),
    (lambda: SimplifyOptions(size_threshold=-1), "size_threshold is -1"),
    (lambda: Fp16Options(keep_io_types="false"), "keep_io_types: expected True or False"),
    (lambda: Fp16Options(block="Resize", allow=["Resize"]), "both blocked and allowed"),
    (lambda: NmsOptions("yolov7"), "unknown detection format"),
    (lambda: NmsOptions("yolov8", score_thr=float("nan")), "score_thr is nan; give a finite number"),
    (lambda: NmsOptions("yolov8", iou_thr=1.5), "iou_thr is 1.5; give a value <= 1"),
    (lambda: NmsOptions("yolov8", max_det=0), "max_det is 0"),
    (lambda: NmsOptions("yolov8", variances=(0.1,)), "two numbers"),
    (lambda: NmsOptions("yolov8", plugin="batchednms"), "unknown --plugin"),
    (lambda: NmsOptions("yolov8", landmarks="lm"), "got names for"),
    (lambda: QuantizeOptions(calib_dir=None), "needs --calib-dir"),
    (lambda: QuantizeOptions("calib", method="kl"), "calibration method 'kl'"),
    (lambda: QuantizeOptions("calib", percentile=101), "percentile 101"),
    (lambda: QuantizeOptions("calib", holdout=-0.1), "holdout is -0.1"),
    (lambda: QuantizeOptions("calib", min_agreement=2), "min_agreement is 2"),
    (lambda: QuantizeOptions("calib", max_rel_error=0), "max_rel_error is 0; give a value > 0"),
    (lambda: QuantizeOptions("calib", calib_preprocess="size=224"), "unknown key 'size'"),
    (lambda: RenameOptions(), "nothing to rename"),
    (lambda: RenameOptions(inputs="x=y"), "parse_pairs"),
    (lambda: RenameOptions(inputs={"a": "z"}, outputs={"b": "z"}), "one new name to several tensors"),
    (lambda: ExtractOptions(outputs=""), "extract needs --outputs"),
    (lambda: ExtractOptions(outputs=[1]), "expected names"),
    (lambda: PreprocessOptions(layout="hwc"), "layout 'hwc'"),
    (lambda: PreprocessOptions(scale=0), "scale is 0"),
    (lambda: PreprocessOptions(std=(0.0,)), "holds a zero"),
    (lambda: PreprocessOptions(mean="0.5"), "mean is the string"),
    (lambda: PreprocessOptions(input_size=(720,)), r"\(height, width\)"),
    (lambda: PreprocessOptions(dtype="string"), "dtype 'string'"),
    (lambda: VerifyConfig(atol=-1), "atol is -1"),
    (lambda: VerifyConfig(rtol=float("inf")), "rtol is inf"),
    (lambda: VerifyConfig(seed=-1), "seed is -1"),
])
def test_bad_option_value_raises_usage_error(make, message):
    with pytest.raises(UsageError, match=message):
        make()


@pytest.mark.parametrize("argv, message", [
    (["add-nms", "--format", "yolov8", "--iou-thr", "nan"], "iou_thr is nan"),
    (["add-nms", "--format", "yolov8", "--variances", "0.1"], "expected two numbers"),
    (["embed-preprocess", "--scale", "1/0"], "bad --scale '1/0'"),
    (["embed-preprocess", "--mean", "a,b"], "bad --mean 'a,b'"),
    (["fix-shapes", "--dim", "batch=0"], "bad --dim 'batch=0'"),
    (["fix-shapes", "--dim", "batch=1", "--dim", "batch=2"], "--dim gives 'batch' twice"),
    (["quantize", "--calib-dir", "d", "--percentile", "0"], "percentile 0"),
    (["rename", "--rename-input", "x"], "bad --rename-input 'x'"),
    (["rename", "--input", "x=images"], "rename an input with --rename-input x=images"),
    (["rename", "--output", "logits=scores"], "is now spelled --rename-output logits=scores"),
    (["simplify", "--atol", "nan"], "bad --atol 'nan'"),
])
def test_cli_bad_flag_value_one_line_exit_2(tiny_onnx, tmp_path, capsys, argv, message):
    edit, *flags = argv
    code = main(["surgeon", edit, str(tiny_onnx), "-o", str(tmp_path / "out.onnx"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out.onnx").exists()


def test_rename_without_pairs_names_the_rename_flags(tiny_onnx, tmp_path):
    """The message said --input OLD=NEW, which surgeon rename refuses (it gives verification inputs)."""
    from tests.conftest import call_cli

    res = call_cli("surgeon", "rename", str(tiny_onnx), "-o", str(tmp_path / "r.onnx"))
    assert res.returncode == 2 and "--rename-input OLD=NEW" in res.stderr and "--rename-output" in res.stderr
    assert "give --input" not in res.stderr
    res = call_cli("surgeon", "rename", str(tiny_onnx), "-o", str(tmp_path / "r.onnx"), "--rename-input", "x=images")
    assert res.returncode == 0, res.stderr


def _passthrough_model():
    """y = Relu(x) with x also a graph output, and the initializer w an output too."""
    from onnx import helper, numpy_helper

    vi = lambda name: helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1, 4])  # noqa: E731
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(1, 4), "w")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [vi("x")], [vi("y"), vi("x"), vi("w")], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_rename_an_input_that_is_also_an_output_renames_both_and_verifies():
    model = _passthrough_model()
    new, report = edits.apply("rename", model, inputs={"x": "images"})
    assert report["details"]["output_map"] == {"x": "images"} and report["verification"]["passed"]
    assert [o.name for o in new.graph.output] == ["y", "images", "w"]
    _, report = edits.apply("rename", model, outputs={"x": "frames"})
    assert report["details"]["input_map"] == {"x": "frames"} and report["verification"]["passed"]
    with pytest.raises(UsageError, match="one tensor"):
        edits.rename_io(model, RenameOptions(inputs={"x": "a"}, outputs={"x": "b"}))



def test_rename_an_initializer_output_leaves_the_callers_model_unchanged():
    model = _passthrough_model()
    before = model.SerializeToString()
    new, report = edits.apply("rename", model, outputs={"w": "weights"})
    assert model.SerializeToString() == before and report["verification"]["passed"]
    assert [i.name for i in new.graph.initializer] == ["weights"]


def _documented_model():
    """y = Relu(x + w) with doc strings, a domain, a model version, metadata and a second opset domain."""
    from onnx import helper, numpy_helper

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])
    w = numpy_helper.from_array(np.ones(4, np.float32), "w")
    nodes = [helper.make_node("Add", ["x", "w"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], [w], doc_string="graph notes")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              doc_string="model notes", domain="org.example", model_version=7)
    helper.set_model_props(model, {"names": "a,b"})
    return model


@pytest.mark.parametrize("name,fields", [("simplify", {}), ("fix-shapes", {"dims": {"batch": 2}}), ("fp16", {}),
                                         ("rename", {"inputs": {"x": "images"}}), ("extract", {"outputs": "y"})])
def test_edits_keep_the_models_doc_strings_domain_version_metadata_and_opsets(name, fields):
    new, _ = edits.apply(name, _documented_model(), **fields)
    assert (new.doc_string, new.graph.doc_string, new.domain, new.model_version) == \
        ("model notes", "graph notes", "org.example", 7)
    assert {p.key: p.value for p in new.metadata_props} == {"names": "a,b"}
    assert {(o.domain, o.version) for o in new.opset_import} == {("", 17), ("com.microsoft", 1)}


@pytest.mark.parametrize("name,fields", [("simplify", {}), ("fp16", {}), ("rename", {"inputs": {"x": "images"}}),
                                         ("extract", {"outputs": "a"})])
def test_edits_of_an_ir3_model_pass_the_onnx_checker(name, fields):
    """IR 3 lists every initializer among the graph inputs; the edited graph does not, so it needs IR 4."""
    from onnx import helper, numpy_helper

    vi = lambda n: helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 4])  # noqa: E731
    w = numpy_helper.from_array(np.full((1, 4), 2, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["a"]), helper.make_node("Relu", ["a"], ["y"])],
                              "g", [vi("x"), vi("w")], [vi("y")], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)], ir_version=3)
    onnx.checker.check_model(model)
    new, _ = edits.apply(name, model, **fields)
    onnx.checker.check_model(new)


def _two_image_model(other_shape=(1, 4)):
    """y = Relu(x) on a 1x3x8x8 image x, plus z -> Relu(z) on another float input."""
    from onnx import helper

    vi = lambda n, shape, t=onnx.TensorProto.FLOAT: helper.make_tensor_value_info(n, t, list(shape))  # noqa: E731
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Add", ["z", "z"], ["w"])]
    graph = helper.make_graph(nodes, "g", [vi("z", other_shape), vi("x", (1, 3, 8, 8))],
                              [vi("y", (1, 3, 8, 8)), vi("w", other_shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("other_shape,message", [((1, 4), "NCHW"), ((4,), "NCHW")])
def test_embed_preprocess_on_a_named_input_that_is_no_image_is_refused(other_shape, message):
    with pytest.raises(UsageError, match=message):
        edits.embed_preprocess(_two_image_model(other_shape), PreprocessOptions(input_name="z"))


def test_embed_preprocess_on_an_integer_input_is_refused():
    from onnx import helper

    vi = lambda n: helper.make_tensor_value_info(n, onnx.TensorProto.INT64, [1, 3, 8, 8])  # noqa: E731
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [vi("x")], [vi("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UsageError, match="float"):
        edits.embed_preprocess(model, PreprocessOptions(input_name="x"))


def test_embed_preprocess_verifies_the_named_input_when_another_image_input_has_the_frames_dtype():
    """float32 frames: verification took the first 4-D float32 input (z) for the raw frames and failed."""
    new, report = edits.apply("embed-preprocess", _two_image_model((1, 3, 8, 8)), input_name="x", dtype="float32")
    assert report["verification"]["passed"] and report["details"]["input"]["shape"] == [1, 8, 8, 3]


@pytest.mark.parametrize("dtype", ["u1", np.uint8, np.dtype("uint8")])
def test_embed_preprocess_takes_any_spelling_of_the_frames_dtype(dtype):
    """'u1' or np.uint8 ended the verification in a raw StopIteration (the spec said 'uint8')."""
    assert PreprocessOptions(dtype=dtype).dtype == "uint8"
    _, report = edits.apply("embed-preprocess", _two_image_model(), dtype=dtype)
    assert report["verification"]["passed"] and report["details"]["input"]["dtype"] == "uint8"


def _batch_pair_model():
    """z = x + y, both inputs [batch, 4]."""
    from onnx import helper

    vi = lambda n: helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["batch", 4])  # noqa: E731
    graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"])], "g", [vi("x"), vi("y")], [vi("z")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("fold", [True, False])
def test_fix_shapes_shape_sizes_a_named_dim_for_every_input_using_it(fold):
    """--shape x:2x4 fixed x's batch only: y kept 'batch' (or onnxslim fixed it unreported) and verification
    fed y a batch of 1, refused as disagreeing with x's 2."""
    new, report = edits.apply("fix-shapes", _batch_pair_model(), shapes={"x": (2, 4)}, fold=fold)
    assert [s.shape for s in onnx_specs(new)[0]] == [(2, 4), (2, 4)]
    assert report["details"]["inputs"]["y"] == {"before": ["batch", 4], "after": [2, 4]}
    assert report["verification"]["passed"]


@pytest.mark.parametrize("options", [{"shapes": {"x": (2, 4), "y": (3, 4)}}, {"shapes": {"x": (2, 4)}, "dims": {"batch": 3}}])
def test_fix_shapes_two_sizes_for_one_named_dim_are_refused(options):
    with pytest.raises(UsageError, match="'batch'"):
        edits.fix_shapes(_batch_pair_model(), FixShapesOptions(**options))


def test_rename_to_a_name_used_inside_a_subgraph_is_refused():
    """x -> t where an If branch computes t: the branch's Mul(t, t) -> t read its own output (a cycle)."""
    from onnx import helper

    vi = lambda n: helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 4])  # noqa: E731
    then = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["t"])], "then", [], [vi("t")])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e")])
    graph = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "g",
                              [vi("x"), helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])], [vi("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for options in ({"inputs": {"x": "t"}}, {"outputs": {"y": "e"}}):
        with pytest.raises(UsageError, match="already has a tensor"):
            edits.rename_io(model, RenameOptions(**options))


def test_embed_preprocess_on_an_input_that_is_also_an_output_is_refused():
    """The image input passed through as an output too: the output was renamed x__preprocessed unannounced and
    verification reported output x missing."""
    from onnx import helper

    vi = lambda n: helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 3, 8, 8])  # noqa: E731
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [vi("x")], [vi("y"), vi("x")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UsageError, match="also a model output"):
        edits.embed_preprocess(model, PreprocessOptions())


def test_fix_shapes_sizes_the_named_dim_in_an_output_inference_cannot_shape():
    """After an op ONNX cannot infer (com.microsoft Gelu) the output kept ['batch', 4] and was reported still
    dynamic, though batch is now 2 everywhere."""
    from onnx import helper

    vi = lambda n: helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["batch", 4])  # noqa: E731
    nodes = [helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft"), helper.make_node("Relu", ["g"], ["y"])]
    graph = helper.make_graph(nodes, "g", [vi("x")], [vi("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    new, report = edits.fix_shapes(model, FixShapesOptions(dims={"batch": 2}))
    assert onnx_specs(new)[1][0].shape == (2, 4) and report["still_dynamic"] == []


def test_fix_shapes_keeps_an_output_of_unknown_rank_unranked():
    """A Loop's output of unknown rank came out with an empty shape, which ONNX reads as a scalar."""
    from onnx import helper, numpy_helper

    f = onnx.TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Concat", ["v_in", "v_in"], ["v_out"], axis=0)],
        "body", [helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, []), helper.make_tensor_value_info("v_in", f, None)],
        [helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", f, None)])
    graph = helper.make_graph([helper.make_node("Loop", ["n", "", "x"], ["v"], body=body), helper.make_node("Relu", ["v"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", f, ["batch", 4])], [helper.make_tensor_value_info("y", f, None)],
                              [numpy_helper.from_array(np.array(2, np.int64), "n")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for fold in (True, False):
        new, _ = edits.fix_shapes(model, FixShapesOptions(dims={"batch": 1}, fold=fold))
        assert not new.graph.output[0].type.tensor_type.HasField("shape")


@pytest.mark.parametrize("spelling", ["f.npz", "f.npz:frames"])
def test_embed_preprocess_verifies_on_frames_given_in_a_npz(tmp_path, spelling):
    """A .npz of frames crashed with a raw AttributeError ('NpzFile' has no astype); FILE.npz:KEY was 'not found'."""
    frames = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3)).astype(np.uint8)
    np.savez(tmp_path / "f.npz", x=frames, frames=frames)
    _, report = edits.apply("embed-preprocess", _two_image_model(),
                            verify_config=VerifyConfig(inputs={"x": str(tmp_path / spelling)}))
    assert [run["feed"] for run in report["verification"]["runs"]][0] == "given frames"


def test_embed_preprocess_on_a_dynamic_size_model_takes_the_given_frames_size(tmp_path):
    """Given frames sized the dynamic H/W of the raw input: verification asked for --shapes instead."""
    from onnx import helper

    vi = lambda n: helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["n", 3, "h", "w"])  # noqa: E731
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [vi("x")], [vi("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    np.save(tmp_path / "f.npy", np.random.default_rng(0).integers(0, 256, (2, 6, 10, 3)).astype(np.uint8))
    _, report = edits.apply("embed-preprocess", model, verify_config=VerifyConfig(inputs={"x": str(tmp_path / "f.npy")}))
    assert [run["feed"] for run in report["verification"]["runs"]][0] == "given frames"


@pytest.mark.parametrize("call", [
    lambda m: edits.convert_fp16(m), lambda m: edits.fix_shapes(m, FixShapesOptions(dims={"batch": 2})),
    lambda m: edits.simplify_model(m), lambda m: edits.rename_io(m, RenameOptions(inputs={"x": "pixels"})),
    lambda m: edits.extract_subgraph(m, ExtractOptions(outputs="logits")),
    lambda m: edits.embed_preprocess(m, PreprocessOptions()), lambda m: edits.to_fp16(m, Fp16Options(range_check=False)),
])
def test_each_edit_function_takes_a_path_or_bytes_as_apply_does(tiny_onnx, call):
    """A path gave a raw AttributeError ('str' object has no attribute 'graph'), or went to onnxslim unchecked."""
    from trtflow.errors import ModelLoadError

    for model in (str(tiny_onnx), tiny_onnx, tiny_onnx.read_bytes()):
        new, _ = call(model)
        assert isinstance(new, onnx.ModelProto)
    with pytest.raises(ModelLoadError):
        call(str(tiny_onnx) + ".missing")
