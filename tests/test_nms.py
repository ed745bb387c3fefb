"""add-nms: in-graph NMS (ONNX Runtime) vs the numpy reference and decode_detections, per format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.models.detection import export_head, export_ssd, tiny_ssd_priors
from trtflow.errors import GraphError, MismatchError, UsageError
from trtflow.edits.nms import NmsOptions, add_nms, verify_nms
from trtflow.vision.formats import DetectionConfig
from trtflow.vision.nms_ref import reference_detections

BOX_TOL = 1e-4


def ort_run(proto, feed):
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString() if hasattr(proto, "SerializeToString") else str(proto))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def assert_same_detections(ref, got, tol=BOX_TOL):
    assert set(ref) == set(got)
    np.testing.assert_array_equal(got["num_detections"], ref["num_detections"])
    np.testing.assert_array_equal(got["classes"], ref["classes"])
    for name in ("boxes", "scores", "landmarks"):
        if name in ref:
            np.testing.assert_allclose(got[name], ref[name], atol=tol, rtol=0)


@pytest.fixture(scope="module")
def heads(models_dir):
    return {fmt: export_head(models_dir / f"head_{fmt}.onnx", fmt) for fmt in ("yolov8", "yolov5", "boxes-scores")}


def _image(batch, seed=0, size=32):
    return {"images": np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)}


@pytest.mark.parametrize("agnostic", [False, True], ids=["per-class", "agnostic"])
@pytest.mark.parametrize("fmt", ["yolov8", "yolov5", "boxes-scores"])
def test_add_nms_matches_numpy_reference(heads, fmt, agnostic):
    import onnx

    from trtflow.vision import detect

    config = DetectionConfig(fmt, score_thr=0.3 if fmt == "yolov5" else 0.55, iou_thr=0.5, max_det=30,
                             class_agnostic=agnostic)
    new, report = add_nms(str(heads[fmt]), config)
    assert report["outputs"] == ["num_detections", "boxes", "scores", "classes"]
    ops = {n.op_type for n in new.graph.node}
    assert "NonMaxSuppression" in ops
    for batch in (1, 3):  # dynamic batch
        feed = _image(batch, seed=batch)
        raw = ort_run(onnx.load(str(heads[fmt])), feed)
        ref = reference_detections(raw, config)
        got = ort_run(new, feed)
        assert ref["num_detections"].min() > 0, "the test model should give detections"
        assert got["boxes"].shape == (batch, 30, 4) and got["num_detections"].dtype == np.int32
        assert_same_detections(ref, got)
        # the same raw outputs through decode_detections (torch)
        torch_out = detect.decode_detections(raw, fmt, config.score_thr, config.iou_thr, config.max_det, agnostic)
        assert_same_detections(ref, torch_out)
        # sorted by score, padding after num_detections
        n0 = int(got["num_detections"][0, 0])
        assert np.all(np.diff(got["scores"][0, :n0]) <= 0)
        assert np.all(got["classes"][0, n0:] == -1) and np.all(got["boxes"][0, n0:] == 0)


def test_yolov5_score_is_objectness_times_class(heads):
    import onnx

    config = DetectionConfig("yolov5", score_thr=0.3, iou_thr=0.5, max_det=10)
    raw = ort_run(onnx.load(str(heads["yolov5"])), _image(1))["output0"]
    got = ort_run(add_nms(str(heads["yolov5"]), config)[0], _image(1))
    best = (raw[0, :, 5:] * raw[0, :, 4:5]).max()
    assert got["scores"][0, 0] == pytest.approx(float(best), abs=1e-6)


def test_no_detections_pads_everything(heads):
    config = DetectionConfig("yolov8", score_thr=1.0, max_det=5)
    got = ort_run(add_nms(str(heads["yolov8"]), config)[0], _image(2))
    assert got["num_detections"].tolist() == [[0], [0]]
    assert np.all(got["classes"] == -1) and np.all(got["boxes"] == 0) and np.all(got["scores"] == 0)


def test_ssd_dynamic_hw_and_background(models_dir):
    import onnx

    path = export_ssd(models_dir / "tiny_ssd.onnx")
    config = DetectionConfig("ssd", score_thr=0.5, iou_thr=0.4, max_det=20, priors=tiny_ssd_priors())
    new, _ = add_nms(str(path), config)
    for shape in ((1, 3, 64, 96), (2, 3, 128, 64), (1, 3, 100, 70)):  # H/W not multiples of the strides too
        feed = {"image": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
        raw = ort_run(onnx.load(str(path)), feed)
        ref = reference_detections(raw, config, input_size=shape[2:])
        got = ort_run(new, feed)
        assert ref["num_detections"].min() > 0
        assert_same_detections(ref, got)
        n0 = int(got["num_detections"][0, 0])
        assert np.all(got["classes"][0, :n0] >= 1), "class 0 is the background and never reported"


def test_verify_catches_a_mismatch(heads):
    import dataclasses

    import onnx

    options = NmsOptions("yolov8", score_thr=0.55, iou_thr=0.5)
    before = onnx.load(str(heads["yolov8"]))
    after, _ = add_nms(before, options)
    report = verify_nms(before, after, options, None, [("given", _image(2))])
    assert report["passed"] and report["detections_compared"] > 0 and report["max_box_error"] <= BOX_TOL
    assert (report["atol"], report["rtol"]) == (1e-4, 1e-5)  # add-nms's own tolerances
    stricter = dataclasses.replace(options, iou_thr=0.2)  # the reference now suppresses more than the graph does
    with pytest.raises(MismatchError, match="differ from the numpy reference"):
        verify_nms(before, after, stricter, None, [("given", _image(2))])


def test_options_and_detection_config_agree(heads):
    config = DetectionConfig("retinaface", score_thr=0.5, iou_thr=0.4, max_det=20, names={"loc": "a", "conf": "b"})
    options = NmsOptions.from_detection(config, plugin="efficientnms")
    assert (options.boxes, options.scores, options.plugin) == ("a", "b", "efficientnms")
    assert options.detection_config() == config
    with pytest.raises(UsageError, match="NmsOptions or a DetectionConfig"):
        add_nms(str(heads["yolov8"]), {"format": "yolov8"})


def test_efficientnms_plugin_node(heads):
    options = NmsOptions("yolov8", score_thr=0.4, iou_thr=0.6, max_det=7, class_agnostic=True, plugin="efficientnms")
    new, report = add_nms(str(heads["yolov8"]), options)
    node = next(n for n in new.graph.node if n.op_type == "EfficientNMS_TRT")
    attrs = {a.name: a for a in node.attribute}
    assert attrs["max_output_boxes"].i == 7 and attrs["class_agnostic"].i == 1
    assert attrs["background_class"].i == -1 and abs(attrs["iou_threshold"].f - 0.6) < 1e-7
    assert [o.name for o in new.graph.output] == ["num_detections", "boxes", "scores", "classes"]
    assert "not verified" in report["verification"]
    skipped = verify_nms(None, new, options)
    assert skipped["passed"] is None and "ONNX Runtime cannot run it" in skipped["skipped"]


def test_bad_requests(heads, tiny_onnx):
    with pytest.raises(UsageError, match="unknown detection format"):
        DetectionConfig("yolov7")
    with pytest.raises(UsageError, match="not among the outputs"):
        add_nms(str(heads["yolov8"]), DetectionConfig("yolov8", names={"head": "nope"}))
    with pytest.raises(UsageError, match="--plugin"):
        add_nms(str(heads["yolov8"]), NmsOptions("yolov8", plugin="batchednms"))
    import onnx

    old = onnx.load(str(heads["yolov8"]))
    old.opset_import[0].version = 10
    with pytest.raises(GraphError, match="opset >= 11"):
        add_nms(old, DetectionConfig("yolov8"))


def test_surgeon_cli_add_nms(heads, tmp_path):
    out = tmp_path / "nms.onnx"
    res = run_cli("surgeon", "add-nms", str(heads["boxes-scores"]), "-o", str(out), "--format", "boxes-scores",
                  "--boxes", "boxes", "--scores", "scores", "--score-thr", "0.55", "--max-det", "12", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["verification"]["passed"] is True
    assert report["verification"]["detections_compared"] > 0
    got = ort_run(str(out), _image(2))
    assert got["boxes"].shape == (2, 12, 4)


def test_cli_ssd_with_priors_file(models_dir, tmp_path):
    """--priors FILE.npy embeds fixed priors: the model then runs at that input size only."""
    from trtflow.vision.priors import make_priors

    model = export_ssd(models_dir / "tiny_ssd_cli.onnx")
    priors = tmp_path / "priors.npy"
    np.save(priors, make_priors(tiny_ssd_priors(), 64, 96))
    out = tmp_path / "ssd_nms.onnx"
    res = run_cli("surgeon", "add-nms", str(model), "-o", str(out), "--format", "ssd", "--priors", str(priors),
                  "--score-thr", "0.5", "--shapes", "image:2x3x64x96", "--json")
    assert res.returncode == 0, res.stderr
    verification = json.loads(res.stdout)["verification"]
    assert verification["passed"] is True and verification["detections_compared"] > 0


def test_add_nms_keeps_the_models_metadata(heads):
    """Class names, stride and the like (Ultralytics' metadata_props) survive add-nms, as every other edit."""
    import onnx

    model = onnx.load(str(heads["boxes-scores"]))
    onnx.helper.set_model_props(model, {"names": "{0: 'cat'}", "stride": "32"})
    new, _ = add_nms(model, NmsOptions("boxes-scores"))
    assert {p.key: p.value for p in new.metadata_props} == {"names": "{0: 'cat'}", "stride": "32"}
    assert new.ir_version == model.ir_version


def test_verify_takes_per_output_tolerances():
    """--atol boxes=X was ignored by add-nms's verification (only the global atol/rtol were read)."""
    import onnx
    from onnx import TensorProto, helper

    from trtflow.edits.verify import VerifyConfig

    def model(factor):
        nodes = [helper.make_node("Mul", ["b", "f"], ["boxes"]), helper.make_node("Identity", ["s"], ["scores"])]
        graph = helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4, 4]),
                         helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 4, 2])],
            [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4, 4]),
             helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4, 2])],
            initializer=[onnx.numpy_helper.from_array(np.array(factor, np.float32), "f")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    options = NmsOptions("boxes-scores", check_format=False)
    before = model(1.0)
    after, _ = add_nms(model(1.001), options)  # boxes 0.1% off
    b = np.array([[[0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 60, 30], [0, 50, 30, 60]]], np.float32)
    feed = [("given", {"b": b, "s": np.full((1, 4, 2), 0.6, np.float32)})]
    with pytest.raises(MismatchError):
        verify_nms(before, after, options, None, feed)
    report = verify_nms(before, after, options, VerifyConfig(per_output_atol={"boxes": 0.1}), feed)
    assert report["passed"] and report["detections_compared"] == 8


def test_new_outputs_take_the_heads_batch_dim():
    """An extra static output listed before the head gave the NMS outputs its batch of 1 instead of 'batch'."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMax", ["s"], ["feat"], keepdims=0),
             helper.make_node("Identity", ["b"], ["boxes"]), helper.make_node("Identity", ["s"], ["scores"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 4, 4]),
                     helper.make_tensor_value_info("s", TensorProto.FLOAT, ["batch", 4, 2])],
        [helper.make_tensor_value_info("feat", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", 4, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    new, report = add_nms(model, NmsOptions("boxes-scores", check_format=False))
    dims = {o.name: o.type.tensor_type.shape.dim[0] for o in new.graph.output}
    assert report["kept_outputs"] == ["feat"]
    assert all(dims[n].dim_param == "batch" for n in ("num_detections", "boxes", "scores", "classes"))


def test_a_graph_input_named_like_a_new_output_is_refused_naming_rename():
    """A post-processing model whose inputs are called boxes/scores: add-nms renamed them boxes_raw/scores_raw,
    so the model's inputs changed name and its verification fed names it no longer had."""
    from onnx import TensorProto, helper

    from trtflow.errors import UsageError

    graph = helper.make_graph(
        [helper.make_node("Identity", ["boxes"], ["b"]), helper.make_node("Identity", ["scores"], ["s"])], "g",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4, 2])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4, 4]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 4, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(UsageError, match="rename-input boxes="):
        add_nms(model, NmsOptions("boxes-scores", check_format=False))
