"""A head that does not fit --format is refused (add-nms CLI and API, decode_detections), naming the format it looks like."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.models.detection import export_head, export_ssd, retinaface_onnx, tiny_ssd_priors
from trtflow.cli.main import main
from trtflow.edits.nms import NmsOptions, add_nms, verify_nms
from trtflow.errors import UsageError
from trtflow.vision.detect import decode_detections
from trtflow.vision.formats import FORMATS, DetectionConfig
from trtflow.vision.head_fit import check_head, guess_format

RETINAFACE = retinaface_onnx()
ACTUAL = ["yolov8", "yolov5", "boxes-scores", "ssd"] + (["retinaface"] if RETINAFACE else [])
WRONG = [(actual, given) for actual in ACTUAL for given in FORMATS if given != actual]
INPUT = {"yolov8": ("images", (1, 3, 32, 32)), "yolov5": ("images", (1, 3, 32, 32)),
         "boxes-scores": ("images", (2, 3, 32, 32)), "ssd": ("image", (1, 3, 64, 96)),
         "retinaface": ("input", (1, 3, 64, 64))}


@pytest.fixture(scope="module")
def models(models_dir):
    """YOLO heads with 80 classes ([1, 84, A] and [1, A, 85], as the real ones), boxes + scores, SSD, RetinaFace."""
    paths = {fmt: export_head(models_dir / f"fit_{fmt}.onnx", fmt, classes=80) for fmt in ("yolov8", "yolov5")}
    paths["boxes-scores"] = export_head(models_dir / "fit_boxes_scores.onnx", "boxes-scores")
    paths["ssd"] = export_ssd(models_dir / "fit_ssd.onnx")
    if RETINAFACE:
        paths["retinaface"] = models_dir / "fit_retinaface.onnx"
        paths["retinaface"].write_bytes(RETINAFACE)
    return paths


def _feed(actual):
    name, shape = INPUT[actual]
    return {name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}


@pytest.fixture(scope="module")
def raw(models):
    """Each model's raw head outputs on a random image (ONNX Runtime)."""
    import onnxruntime as ort

    out = {}
    for actual, path in models.items():
        session = ort.InferenceSession(str(path))
        names = [o.name for o in session.get_outputs()]
        out[actual] = dict(zip(names, session.run(names, _feed(actual))))
    return out


def _priors_for(given):
    return tiny_ssd_priors() if given == "ssd" else None


@pytest.mark.parametrize("actual, given", WRONG)
def test_cli_refuses_a_head_of_another_format(models, tmp_path, capsys, actual, given):
    out = tmp_path / "nms.onnx"
    code = main(["surgeon", "add-nms", str(models[actual]), "-o", str(out), "--format", given])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"does not fit --format {given}" in err and f"use --format {actual}" in err, err
    assert not out.exists()


@pytest.mark.parametrize("actual, given", WRONG)
def test_api_refuses_a_head_of_another_format(models, raw, actual, given):
    size = INPUT[actual][1][2:]
    with pytest.raises(UsageError, match=f"use --format {actual}"):
        add_nms(str(models[actual]), NmsOptions(given, priors=_priors_for(given)))
    with pytest.raises(UsageError, match=f"does not fit --format {given}.*use --format {actual}"):
        decode_detections(raw[actual], given, input_size=size, priors=_priors_for(given))


def test_the_reported_case_yolov8_head_read_as_yolov5(models, raw, capsys, tmp_path):
    """[1, 84, A] read as YOLOv5 decoded to class ids in the thousands; now refused, and --no-format-check still runs."""
    code = main(["surgeon", "add-nms", str(models["yolov8"]), "-o", str(tmp_path / "a.onnx"), "--format", "yolov5"])
    err = capsys.readouterr().err
    assert code == 2
    assert "the head 'output0' (1, 84, 256) does not fit --format yolov5: objectness outside [0, 1]" in err
    assert "looks like yolov8 (channels-first [N, 4+C, A], no objectness); use --format yolov8" in err
    new, report = add_nms(str(models["yolov8"]), NmsOptions("yolov5", check_format=False))
    assert report["format_checked_on"] is None
    with pytest.raises(UsageError, match="use --format yolov8"):  # the verification checks its feeds too
        verify_nms(onnx.load(str(models["yolov8"])), new, NmsOptions("yolov5"), None, [("given", _feed("yolov8"))])
    garbage = decode_detections(raw["yolov8"], "yolov5", check_format=False)
    assert garbage["classes"].max() >= 80 or garbage["scores"].max() > 1, "unchecked, the misread is garbage"


@pytest.mark.parametrize("actual", ACTUAL)
def test_right_format_passes_cli_and_api(models, raw, tmp_path, capsys, actual):
    extra = []
    if actual == "ssd":
        from trtflow.vision.priors import make_priors

        np.save(tmp_path / "priors.npy", make_priors(tiny_ssd_priors(), 64, 96))
        extra = ["--priors", str(tmp_path / "priors.npy"), "--shapes", "image:1x3x64x96"]
    out = tmp_path / "nms.onnx"
    code = main(["surgeon", "add-nms", str(models[actual]), "-o", str(out), "--format", actual, "--json", *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["verification"]["passed"] is True
    assert report["details"]["format_checked_on"].startswith("raw outputs on ")
    found = decode_detections(raw[actual], actual, input_size=INPUT[actual][1][2:], priors=_priors_for(actual))
    assert found["boxes"].shape[-1] == 4
    assert guess_format(raw[actual]) == actual


def test_values_decide_over_orientation(models_dir):
    """A YOLOv5 head with fewer anchors than columns (a tiny input) fits by its values."""
    path = export_head(models_dir / "fit_yolov5_wide.onnx", "yolov5", classes=300)  # [1, 256, 305]
    _, report = add_nms(str(path), NmsOptions("yolov5"))
    assert report["format_checked_on"] == "raw outputs on random(seed=0)"
    with pytest.raises(UsageError, match="more channels"):  # from the shape alone it would not
        check_head(DetectionConfig("yolov5"), {"output0": (1, 256, 305)})


@pytest.mark.parametrize("shape, given, looks", [
    ((1, 84, 8400), "yolov5", "yolov8"),
    (("batch", 84, 8400), "yolov5", "yolov8"),
    ((1, 25200, 85), "yolov8", "yolov5"),
    ((1, 8400, 4), "yolov5", None),
])
def test_static_shapes(shape, given, looks):
    with pytest.raises(UsageError) as info:
        check_head(DetectionConfig(given), {"output0": shape})
    message = str(info.value)
    assert f"does not fit --format {given}" in message and "\n" not in message
    assert (f"use --format {looks}" in message) if looks else "no format fits" in message
    check_head(DetectionConfig(looks or "boxes-scores"),
               {"output0": shape} if looks else {"boxes": shape, "scores": (1, 8400, 80)})


def test_model_onnxruntime_cannot_run_is_checked_on_static_shapes(models):
    """A custom op at the end: no probe run; the declared output shape decides."""
    model = onnx.load(str(models["yolov8"]))
    out = model.graph.output[0]
    for node in model.graph.node:
        node.output[:] = ["pre" if o == out.name else o for o in node.output]
    model.graph.node.append(helper.make_node("MyIdentity", ["pre"], [out.name], domain="custom.ai"))
    model.opset_import.append(helper.make_opsetid("custom.ai", 1))
    for dim, size in zip(out.type.tensor_type.shape.dim[1:], (84, 256)):
        dim.dim_value = size
    with pytest.raises(UsageError, match=r"more channels \(256\) than anchors \(84\).*use --format yolov8"):
        add_nms(model, NmsOptions("yolov5"))
    _, report = add_nms(model, NmsOptions("yolov8"))
    assert report["format_checked_on"] == "static output shapes"


def test_ssd_priors_that_do_not_match_are_refused(models, raw):
    with pytest.raises(UsageError, match=r"\d+ priors for a 256x256 input \(ssd300\), but 'loc' has \d+ anchors; give"):
        add_nms(str(models["ssd"]), NmsOptions("ssd"))
    with pytest.raises(UsageError, match="priors"):
        decode_detections(raw["ssd"], "ssd", input_size=(64, 96))


@pytest.mark.parametrize("strides, shapes", [((0,), [[(16, 16)]]), ((-8,), [[(16, 16)]]), ((8,), [[(16,)]]),
                                             ((8,), [(16, 16)]), ((8,), [[(16, -2)]]), ((float("nan"),), [[(4, 4)]])])
def test_prior_config_refuses_bad_strides_and_shapes(strides, shapes):
    """stride 0 failed with ZeroDivisionError, -8 with numpy's ValueError, a one-number shape (16,) was
    taken as a 16 x 16 square by broadcasting."""
    from trtflow.errors import UsageError
    from trtflow.vision.priors import PriorConfig

    with pytest.raises(UsageError, match="prior config"):
        PriorConfig(strides, shapes)
