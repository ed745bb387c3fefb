"""Tasks and their results on odd inputs: models giving NaN or infinite outputs, frames of odd sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trtflow.tasks import Detections


def test_detections_draw_skips_non_finite_boxes_and_points():
    """A model's NaN box is reported as is (JSON "nan"); drawing leaves it out and draws the rest,
    instead of failing the video's write stage on int(nan)."""
    pytest.importorskip("cv2")
    frame = np.zeros((40, 60, 3), np.uint8)
    boxes = np.array([[5, 5, 30, 30], [np.nan, 1, 2, np.nan], [np.inf, 2, 3, 4]], np.float32)
    points = np.full((3, 5, 2), 10, np.float32)
    points[0, 1] = np.nan
    det = Detections(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.zeros(3, np.int32), ["a", "b", "c"], points)
    drawn = det.draw(frame)
    assert drawn.shape == frame.shape and drawn.any()
    alone = Detections(boxes[:1], np.array([0.9], np.float32), np.zeros(1, np.int32), ["a"], points[:1]).draw(frame)
    assert np.array_equal(drawn, alone)
    assert np.isnan(det.to_dict()["detections"][1]["box"][0])


def tiny_onnx(value: np.ndarray) -> bytes:
    """A model with input x [N, 3, H, W] giving ``value`` for every image: out = value + 0 * mean(x)."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    value = np.asarray(value, np.float32)
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Reshape", ["z", "shape"], ["zr"]),
             helper.make_node("Add", ["zr", "value"], ["out"])]
    inits = [numpy_helper.from_array(np.array(0, np.float32), "zero"),
             numpy_helper.from_array(np.array([-1] + [1] * value.ndim, np.int64), "shape"),
             numpy_helper.from_array(value, "value")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", *value.shape])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_classify_infinite_logit_wins():
    """An fp16 engine's logit that overflowed to +inf is the top class with probability 1, not NaN for every class."""
    pytest.importorskip("onnxruntime")
    from trtflow.tasks import make_task

    task = make_task("classify", tiny_onnx([1.0, np.inf, 0.5, -np.inf]), engine="ort", input_size=8, top_k=4)
    (result,) = task.predict([np.zeros((3, 5, 3), np.uint8)])
    assert [(t["class"], t["score"]) for t in result.topk[:2]] == [(1, 1.0), (0, 0.0)]
    two = make_task("classify", tiny_onnx([np.inf, 2.0, np.inf]), engine="ort", input_size=8, top_k=3)
    assert [(t["class"], t["score"]) for t in two.predict([np.zeros((1, 1, 3), np.uint8)])[0].topk] == \
        [(0, 0.5), (2, 0.5), (1, 0.0)]


def sr_onnx(scale: int = 2, margin: int = 3) -> bytes:
    """A nearest-neighbour ``scale``x upscaler that loses ``margin`` input pixels per side, as waifu2x's
    unpadded convolutions do: x [N, 3, H, W] -> [N, 3, scale * (H - 2 * margin), ...]."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["big"], mode="nearest"),
             helper.make_node("Slice", ["big", "starts", "ends", "axes"], ["out"])]
    inits = [numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "scales"),
             numpy_helper.from_array(np.array([margin * scale] * 2, np.int64), "starts"),
             numpy_helper.from_array(np.array([-margin * scale] * 2, np.int64), "ends"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "axes")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("option", [{"align": -2}, {"align": 0}, {"align": 1.5}, {"scale": 0}, {"scale": 2.5},
                                    {"margin": -1}, {"margin": 1.5}, {"tile": 2.5}])
def test_sr_refuses_sizes_that_are_not_whole_counts(option):
    """align=-2 gave a 16 x 16 image for a 9 x 9 frame (not 2x); such options are refused when the task is made."""
    pytest.importorskip("onnxruntime")
    from trtflow.errors import UsageError
    from trtflow.tasks import make_task

    with pytest.raises(UsageError, match=next(iter(option))):
        make_task("sr", sr_onnx(), engine="ort", **option)


def test_sr_odd_frames_exactly_2x():
    """1 x 1, 1 x 50 and 13 x 9 frames in one batch, tiles of 8 with a 3-pixel margin: each frame exactly
    its nearest-neighbour 2x, whatever the options that are whole numbers (scale 2.0, align 2)."""
    pytest.importorskip("onnxruntime")
    from trtflow.tasks import make_task

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(1, 1), (1, 50), (13, 9), (33, 17)]]
    for options in ({}, {"align": 2, "scale": 2.0, "margin": 3}):
        task = make_task("sr", sr_onnx(), engine="ort", tile=8, **options)
        for frame, result in zip(frames, task.predict(frames)):
            assert np.array_equal(result.image, frame.repeat(2, 0).repeat(2, 1))


@pytest.mark.parametrize("task, option", [
    ("detect", {"score_threshold": float("nan")}), ("detect", {"score_threshold": "abc"}),
    ("detect", {"iou_threshold": None}), ("detect", {"iou_threshold": 1.5}), ("detect", {"max_det": 0}),
    ("detect", {"max_det": 2.5}), ("segment", {"threshold": float("nan")}), ("segment", {"threshold": "x"}),
    ("classify", {"top_k": 2.7}), ("classify", {"top_k": "many"}),
])
def test_task_numbers_refused_when_made(task, option):
    """A NaN threshold made every mask empty without a word (p > nan is false), a string one failed with
    Python's ValueError, max_det=0 only at the first batch: each is a UsageError naming the option."""
    pytest.importorskip("onnxruntime")
    from trtflow.errors import UsageError
    from trtflow.tasks.classify import ClassifyTask
    from trtflow.tasks.detect import DetectTask
    from trtflow.tasks.segment import SegmentTask
    from trtflow.backends import load

    if task == "detect":
        head = np.zeros((6, 8), np.float32)
        make = lambda: DetectTask(load(tiny_onnx(head), engine="ort"), format="yolov8", **option)  # noqa: E731
    elif task == "segment":
        make = lambda: SegmentTask(load(tiny_onnx(np.zeros((1, 4, 4))), engine="ort"), kind="probability",  # noqa: E731
                                   **option)
    else:
        make = lambda: ClassifyTask(load(tiny_onnx([1.0, 2.0, 3.0]), engine="ort"), **option)  # noqa: E731
    with pytest.raises(UsageError, match=next(iter(option))):
        make()


def test_imagenet_top_k_infinite_logit_wins():
    """vision.imagenet.top_k on an fp16 engine's overflowed logit: that class with score 1, not NaN everywhere."""
    from trtflow.vision.imagenet import top_k

    logits = np.zeros((2, 1000), np.float32)
    logits[0, 281] = np.inf
    logits[1, 967] = 5.0
    best = top_k(logits, 2)
    assert (best[0][0]["label"], best[0][0]["score"], best[0][1]["score"]) == ("tabby", 1.0, 0.0)
    assert best[1][0]["label"] == "espresso" and 0 < best[1][0]["score"] < 1


def test_sr_measures_the_margin_of_a_fixed_batch_engine(tmp_path):
    """arch=None runs the engine once to measure its margin; with a batch fixed at 2 that probe of one
    image was refused (InputShapeError) although the task pads batches to the engine's range."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from trtflow.tasks import make_task

    model = onnx.load_from_string(sr_onnx(2, 3))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    path = tmp_path / "sr_batch2.onnx"
    onnx.save(model, str(path))
    task = make_task("sr", path, engine="ort", tile=8)
    assert task.margin == 3
    frames = [np.random.default_rng(1).integers(0, 256, (5, 11, 3), dtype=np.uint8)] * 3
    for result in task.predict(frames):
        assert np.array_equal(result.image, frames[0].repeat(2, 0).repeat(2, 1))


def test_mobilenet_cache_with_a_damaged_meta_file_is_stale(tmp_path):
    """A meta file cut short (a process killed while writing it) failed every later call with
    json's JSONDecodeError; it is stale like a meta of another version: the model is exported again."""
    from trtflow.tasks.models import cached_meta

    model, meta = tmp_path / "mobilenet_v2.onnx", tmp_path / "mobilenet_v2.json"
    model.write_bytes(b"a model")
    key = {"trtflow": "1", "weights": "w.pth", "weights_bytes": 5}
    meta.write_text('{"key": {"trtflow"')
    assert cached_meta(model, meta, key) is None
    meta.write_text(json.dumps({"key": key, "export": {}}))
    assert cached_meta(model, meta, key) == {"key": key, "export": {}}
    assert cached_meta(model, meta, {**key, "trtflow": "2"}) is None
    meta.write_text("[1, 2]")  # JSON, not a meta
    assert cached_meta(model, meta, key) is None


def test_sr_tiles_of_a_mixed_batch_follow_its_largest_frame():
    """A 1 x 1 frame beside a 200 x 300 one cut the large frame into 60,000 tiles of 1 x 1 (the batch's
    tile followed its smallest frame: 162 MB of input for 60,000 pixels). Small frames are edge-padded
    up to the batch's tile instead; every frame is still exactly 2x."""
    pytest.importorskip("onnxruntime")
    from trtflow.tasks import make_task

    task = make_task("sr", sr_onnx(2, 7), engine="ort", tile=256)
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (1, 1, 3), dtype=np.uint8), rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)]
    feed, metas = task.prepare(frames)
    assert feed["x"].shape == (1 + 2, 3, 200 + 14, 256 + 14)  # the small frame one tile, the large one two
    for frame, result in zip(frames, task.finish(task.infer(feed), metas)):
        assert np.array_equal(result.image, frame.repeat(2, 0).repeat(2, 1))
    whole = make_task("sr", sr_onnx(2, 7), engine="ort", tile=0)
    assert whole.prepare(frames)[0]["x"].shape == (2, 3, 214, 314)  # tile=0: one tile per frame


@pytest.mark.parametrize("size", [True, (640.7, 480), ("640", 2.5), [True, 3]])
def test_input_size_refuses_fractions_and_bools(size):
    """input_size=(640.7, 480) ran at 640 x 480 and input_size=True at 1 x 1 without a word."""
    from trtflow.errors import UsageError
    from trtflow.tasks.prepare import as_size

    with pytest.raises(UsageError, match="input size"):
        as_size(size)


def test_input_size_forms_taken():
    from trtflow.tasks.prepare import as_size

    assert as_size(640) == as_size("640") == as_size(np.int64(640)) == as_size((640.0, 640)) == (640, 640)
    assert as_size("480x640") == as_size([480, 640]) == as_size("480,640") == (480, 640)


def test_task_labels_file_given_to_the_class_is_read(tmp_path):
    """DetectTask(engine, labels="coco.txt") took the path's characters as class names ('c', 'o', ...);
    the task classes read a labels file as make_task does."""
    pytest.importorskip("onnxruntime")
    from trtflow.backends import load
    from trtflow.tasks.detect import DetectTask

    path = tmp_path / "names.txt"
    path.write_text("person\nbicycle\n", encoding="utf-8")
    head = np.zeros((6, 8), np.float32)
    head[0:4, 0], head[5, 0] = [10, 10, 4, 4], 0.9
    for labels in (str(path), path):
        task = DetectTask(load(tiny_onnx(head), engine="ort"), format="yolov8", labels=labels)
        assert task.labels == ["person", "bicycle"]
        assert task.predict([np.zeros((640, 640, 3), np.uint8)])[0].labels == ["bicycle"]


def uint8_input_onnx() -> bytes:
    """x [N, 3, H, W] uint8 (raw pixels) -> out [N]: the mean pixel value."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["out"], axes=[1, 2, 3], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_integer_engine_input_gets_raw_pixels_or_a_clear_error():
    """An engine reading uint8 pixels got the 0..1 (or mean/std) floats cast to uint8: all 0 or 1, without
    a word. Scaling preprocessing is refused naming prep=Prep(scale=1.0); with it the pixels arrive rounded."""
    pytest.importorskip("onnxruntime")
    from trtflow.errors import UsageError
    from trtflow.tasks import make_task
    from trtflow.tasks.prepare import Prep

    def post(outputs, metas):
        return [{"mean": float(v)} for v in outputs["out"]]

    frame = np.full((8, 8, 3), 200, np.uint8)
    task = make_task("custom", uint8_input_onnx(), engine="ort", post=post, input_size=8, resize="stretch")
    with pytest.raises(UsageError, match=r"uint8.*scale=1\.0"):
        task.predict([frame])
    raw = make_task("custom", uint8_input_onnx(), engine="ort", post=post, input_size=16, resize="stretch",
                    prep=Prep(scale=1.0))
    assert raw.predict([frame])[0].to_dict() == {"mean": 200.0}
    feed, _ = raw.prepare([np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8)])  # 1 x 2 -> 16 x 16, bilinear
    assert feed["x"].dtype == np.uint8 and feed["x"][0, 0, 0].tolist()[7:9] == [112, 143]  # rounded (111.6, 143.4)


def test_segment_probability_kind_refuses_a_map_of_several_channels():
    """kind probability on a [N, 3, H, W] output thresholded channel 0 alone (for a softmax head, the
    background's probability: an inverted mask) without a word; refused like logits on one channel."""
    pytest.importorskip("onnxruntime")
    from trtflow.backends import load
    from trtflow.errors import UsageError
    from trtflow.tasks.segment import SegmentTask

    with pytest.raises(UsageError, match="probability.*3 channels"):
        SegmentTask(load(tiny_onnx(np.zeros((3, 4, 4))), engine="ort"), kind="probability")
    assert SegmentTask(load(tiny_onnx(np.zeros((3, 4, 4))), engine="ort")).kind == "logits"
    assert SegmentTask(load(tiny_onnx(np.zeros((1, 4, 4))), engine="ort"), kind="probability").kind == "probability"


def test_input_size_takes_the_engines_one_fixed_side(tmp_path):
    """An engine of input [N, 3, 320, W] was fed the default 640 x 640 (InputShapeError at the first batch,
    "resize the input"); the fixed side is taken, the other from input_size or the default, and an
    input_size that contradicts the fixed side is refused when the task is made."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from trtflow.errors import UsageError
    from trtflow.tasks import make_task

    head = np.zeros((6, 8), np.float32)
    head[0:4, 0], head[4, 0] = [100, 100, 20, 20], 0.9
    model = onnx.load_from_string(tiny_onnx(head))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 320
    path = tmp_path / "h320.onnx"
    onnx.save(model, str(path))
    task = make_task("detect", path, engine="ort", format="yolov8")
    assert task.prep.size == (320, 640)
    (found,) = task.predict([np.zeros((160, 320, 3), np.uint8)])
    assert found.boxes.tolist() == [[45.0, 45.0, 55.0, 55.0]]
    assert make_task("detect", path, engine="ort", format="yolov8", input_size="320x480").prep.size == (320, 480)
    with pytest.raises(UsageError, match="320"):
        make_task("detect", path, engine="ort", format="yolov8", input_size=640)


def multi_onnx(values: dict) -> bytes:
    """Like ``tiny_onnx`` with one output per name: each gives its value for every image."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"])]
    inits = [numpy_helper.from_array(np.array(0, np.float32), "zero")]
    outputs = []
    for name, value in values.items():
        value = np.asarray(value)
        cast = f"{name}_z"
        nodes += [helper.make_node("Reshape", ["z", f"{name}_shape"], [f"{name}_r"]),
                  helper.make_node("Cast", [f"{name}_r"], [cast], to=helper.np_dtype_to_tensor_dtype(value.dtype)),
                  helper.make_node("Add", [cast, f"{name}_value"], [name])]
        inits += [numpy_helper.from_array(np.array([-1] + [1] * value.ndim, np.int64), f"{name}_shape"),
                  numpy_helper.from_array(value, f"{name}_value")]
        outputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                                     ["N", *value.shape]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("points", [np.arange(20, dtype=np.float32).reshape(2, 10),
                                    np.arange(20, dtype=np.float32).reshape(2, 5, 2)])
def test_nms_graph_landmarks_flat_or_as_points(points):
    """A graph ending in NMS whose landmarks are [N, K, 5, 2] (points, not the flat [N, K, 10]) failed
    with numpy's reshape error; both layouts give [K, 5, 2] landmarks in source pixels."""
    pytest.importorskip("onnxruntime")
    from trtflow.tasks import make_task

    model = multi_onnx({"num_detections": np.array([1], np.int32),
                        "boxes": np.array([[10, 20, 30, 40], [0, 0, 0, 0]], np.float32),
                        "scores": np.array([0.9, 0.0], np.float32), "classes": np.array([0, -1], np.int32),
                        "landmarks": points})
    task = make_task("detect", model, engine="ort", input_size=64)
    assert task.format == "nms"
    (found,) = task.predict([np.zeros((32, 64, 3), np.uint8)])  # letterbox: scale 1, 16 rows of padding on top
    assert found.boxes.tolist() == [[10, 4, 30, 24]]
    assert found.landmarks.shape == (1, 5, 2)
    assert found.landmarks[0, 1].tolist() == [2.0, 0.0] and found.landmarks[0, 4].tolist() == [8.0, 0.0]
    none = make_task("detect", multi_onnx({"num_detections": np.array([0], np.int32),
                                           "boxes": np.zeros((2, 4), np.float32), "scores": np.zeros(2, np.float32),
                                           "classes": np.full(2, -1, np.int32), "landmarks": points}),
                     engine="ort", input_size=64)
    (empty,) = none.predict([np.zeros((32, 64, 3), np.uint8)])
    assert len(empty) == 0 and empty.landmarks.shape == (0, 5, 2)


@pytest.mark.parametrize("noise", [True, False, 1.0, 4, -2, "1"])
def test_waifu2x_noise_refuses_bools_and_levels_the_package_lacks(noise):
    from trtflow.errors import UsageError
    from trtflow.tasks.models import waifu2x_onnx

    with pytest.raises(UsageError, match=f"noise level {noise!r}.*-1 \\(none\\), 0, 1, 2 or 3"):
        waifu2x_onnx("upconv_7", noise=noise)


def test_fcn_export_waits_for_the_folder_lock_another_process_holds(tmp_path, monkeypatch):
    import subprocess
    import sys
    import threading

    from trtflow.tasks.models import fcn_onnx

    monkeypatch.setenv("TRTFLOW_CACHE_DIR", str(tmp_path))
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "fcn_argmax_21.onnx").write_bytes(b"cached")  # the waiter need not export once it has the lock
    hold = ("import sys, filelock; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); "
            "sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(folder / "export.lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = []
        waiter = threading.Thread(target=lambda: done.append(fcn_onnx()), daemon=True)
        waiter.start()
        waiter.join(1.5)
        assert not done, "fcn_onnx went on while another process held the export lock"
    finally:
        holder.communicate("", timeout=10)  # releases the lock
    waiter.join(3)
    assert done == [folder / "fcn_argmax_21.onnx"]


def test_fcn_export_to_a_given_path_waits_for_that_paths_lock(tmp_path):
    """fcn_onnx(path=...) exported without a lock: two processes writing one file could interleave. It holds
    ``<path>.lock`` (as the cached export holds its folder's) while it exports."""
    pytest.importorskip("torch")
    import subprocess
    import sys
    import threading
    import time

    from trtflow.tasks.models import fcn_onnx

    out, lock_file = tmp_path / "fcn.onnx", tmp_path / "fcn.onnx.lock"

    def waiting_for_the_lock(thread) -> bool:  # the thread's stack is in a FileLock.acquire of that file
        frame = sys._current_frames().get(thread.ident)
        while frame is not None:
            lock = frame.f_locals.get("self")
            if frame.f_code.co_name == "acquire" and str(getattr(lock, "lock_file", "")) == str(lock_file):
                return True
            frame = frame.f_back
        return False

    hold = ("import sys, filelock; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); "
            "sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(lock_file)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = []  # the export's first step: its progress report, stopped there (the export itself is not the point)

        class Stop(Exception):
            pass

        def first_step(*_):
            started.append(time.monotonic())
            raise Stop

        def export():
            with pytest.raises(Stop):
                fcn_onnx(out, classes=3, progress=first_step)

        waiter = threading.Thread(target=export, daemon=True)
        waiter.start()
        deadline = time.monotonic() + 120
        while not started and not waiting_for_the_lock(waiter) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not started, "fcn_onnx(path=) started exporting while another process held the path's lock"
        assert waiting_for_the_lock(waiter)
        released = time.monotonic()
    finally:
        holder.communicate("", timeout=10)  # releases the lock
    waiter.join(120)
    assert started and started[0] >= released  # the export began once the lock was free


def test_sr_non_finite_output_is_an_error_naming_the_count_and_frame():
    """A NaN the SR model gave became a black pixel (uint8 0) without a word. The engine error names how
    many values of which frame were not finite; frames without any upscale as before."""
    pytest.importorskip("onnxruntime")
    from onnx import helper, load_from_string

    from trtflow.errors import EngineError
    from trtflow.tasks import make_task

    model = load_from_string(sr_onnx(margin=1))  # the upscaled pixels times big / big: NaN where a pixel is 0
    model.graph.node[0].output[0] = "pixels"
    model.graph.node.insert(1, helper.make_node("Div", ["pixels", "pixels"], ["ratio"]))
    model.graph.node.insert(2, helper.make_node("Mul", ["pixels", "ratio"], ["big"]))
    task = make_task("sr", model.SerializeToString(), engine="ort", tile=8, margin=1)
    clean = np.full((5, 9, 3), 7, np.uint8)
    dark = clean.copy()
    dark[1, 2] = (0, 5, 0)  # two zero values -> 2 x 2 x 2 NaN values after a 2x upscale
    assert np.array_equal(task.predict([clean])[0].image, clean.repeat(2, 0).repeat(2, 1))
    with pytest.raises(EngineError, match=r"8 non-finite .* frame 1 "):
        task.predict([clean, dark])


def test_sr_checks_a_batch_for_non_finite_values_once():
    """The SR task counted each frame's non-finite values on its own (three reductions per frame on the
    GPU). One check over the batch's output is enough; frames are counted only when it finds some."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from trtflow.tasks import make_task

    task = make_task("sr", sr_onnx(margin=1), engine="ort", tile=4, margin=1)
    frames = [np.full((5, 9, 3), 7, np.uint8), np.full((3, 3, 3), 9, np.uint8), np.full((6, 4, 3), 11, np.uint8)]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        images = task.predict(frames)
    checks = sum(event.count for event in prof.key_averages() if event.key == "aten::isfinite")
    assert checks == 1
    assert [image.image.shape for image in images] == [(10, 18, 3), (6, 6, 3), (12, 8, 3)]


def test_segment_dynamic_channels_that_turn_out_one_are_a_probability_map():
    """An output [N, C, H, W] with C dynamic was read as logits; at one channel the argmax made every pixel
    class 0. One channel at run time is thresholded as a static one-channel map is (kind auto); kind logits
    on one channel, or probability on several, is refused as for a static channel count."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from trtflow.backends import load
    from trtflow.errors import UsageError
    from trtflow.tasks.segment import SegmentTask

    scores = np.full((1, 4, 4), 0.1, np.float32)
    scores[0, 1:3, 2:] = 0.9
    model = onnx.load_from_string(tiny_onnx(scores))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "C"
    frame = np.zeros((32, 32, 3), np.uint8)
    static = SegmentTask(load(tiny_onnx(scores), engine="ort")).predict([frame])[0].mask
    assert static.sum() == 2 * 2 * 8 * 8
    task = SegmentTask(load(model.SerializeToString(), engine="ort"))
    assert np.array_equal(task.predict([frame])[0].mask, static)
    logits = SegmentTask(load(model.SerializeToString(), engine="ort"), kind="logits")
    with pytest.raises(UsageError, match="one channel"):
        logits.predict([frame])
    three = onnx.load_from_string(tiny_onnx(np.zeros((3, 4, 4), np.float32)))
    three.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "C"
    with pytest.raises(UsageError, match="probability.*3 channels"):
        SegmentTask(load(three.SerializeToString(), engine="ort"), kind="probability").predict([frame])


def test_segment_fixed_engine_with_resize_none_refuses_frames_of_another_size(tmp_path):
    """resize="none" on an engine of fixed 64 x 64 input fed a 100 x 80 frame as is: the engine's own shape
    error. The task says the engine's size and the resize modes that fit frames to it; frames that pad to
    it run."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from trtflow.backends import load
    from trtflow.errors import UsageError
    from trtflow.tasks.segment import SegmentTask

    model = onnx.load_from_string(tiny_onnx(np.full((1, 4, 4), 0.9, np.float32)))
    for axis in (2, 3):
        model.graph.input[0].type.tensor_type.shape.dim[axis].dim_value = 64
    task = SegmentTask(load(model.SerializeToString(), engine="ort"), resize="none")
    with pytest.raises(UsageError, match=r"100 x 80.*128 x 96.*64 x 64.*letterbox"):
        task.predict([np.zeros((100, 80, 3), np.uint8)])
    assert task.predict([np.zeros((64, 50, 3), np.uint8)])[0].mask.shape == (64, 50)  # padded to 64 x 64


def test_read_only_frames_are_prepared_without_torch_warning():
    """Frames PyAV or np.frombuffer give are read-only; torch.from_numpy on them warned "The given NumPy array
    is not writable" (once per process: checked in a fresh one). They are prepared without the warning, to
    the same feed as writeable frames."""
    pytest.importorskip("torch")
    from tests.conftest import assert_no_not_writable_warning
    from trtflow.tasks.prepare import Prep, prepare_frames

    assert_no_not_writable_warning(
        "import numpy as np\nfrom trtflow.tasks.prepare import Prep, prepare_frames\n"
        "frame = np.frombuffer(bytes(range(48)), np.uint8).reshape(4, 4, 3)\n"
        "assert not frame.flags.writeable\n"
        "prepare_frames([frame, frame[:, ::2]], Prep(mode='none'))\nprepare_frames(frame[None], Prep(size=(8, 8)))\n")
    frame = np.frombuffer(bytes(range(48)), np.uint8).reshape(4, 4, 3)
    x, _, _ = prepare_frames([frame], Prep(mode="none"))
    assert np.array_equal(x.numpy(), prepare_frames([frame.copy()], Prep(mode="none"))[0].numpy())


@pytest.mark.parametrize("name", ["detect", "custom", "classify"])
def test_fixed_engine_with_resize_none_refuses_frames_of_another_size_in_every_task(name):
    """As segment: resize="none" on an engine of fixed 64 x 64 input fed a 100 x 80 frame reached the engine
    and failed with its shape error. Every task refuses it in prepare, naming both sizes and the resize modes
    that fit (before any preprocessing work); a frame that pads to 64 x 64 is prepared."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from trtflow.backends import load
    from trtflow.errors import UsageError
    from trtflow.tasks.classify import ClassifyTask
    from trtflow.tasks.custom import CustomTask
    from trtflow.tasks.detect import DetectTask

    model = onnx.load_from_string(tiny_onnx(np.zeros((5, 8), np.float32)))
    for axis in (2, 3):
        model.graph.input[0].type.tensor_type.shape.dim[axis].dim_value = 64
    engine = load(model.SerializeToString(), engine="ort")
    task = {"detect": lambda: DetectTask(engine, format="yolov8", resize="none"),
            "custom": lambda: CustomTask(engine, post=lambda outputs, metas: [{}] * len(metas), resize="none"),
            "classify": lambda: ClassifyTask(engine, resize="none")}[name]()
    with pytest.raises(UsageError, match=r"100 x 80.*64 x 64.*letterbox"):
        task.prepare([np.zeros((100, 80, 3), np.uint8)])
    width = 64 if name == "classify" else 50  # classify pads to a multiple of 1, the others of 32
    feed, metas = task.prepare([np.zeros((64, width, 3), np.uint8)])
    assert feed["x"].shape == (1, 3, 64, 64) and metas[0].size == (64, width)


def test_an_engine_with_only_its_height_fixed_refuses_frames_of_another_height_under_resize_none():
    """Height fixed at 64, width dynamic: a 100-row frame reached the engine's shape error (the check needed
    both fixed); it is refused in prepare, naming the fixed height, while any width that pads runs."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from trtflow.backends import load
    from trtflow.errors import UsageError
    from trtflow.tasks.detect import DetectTask

    model = onnx.load_from_string(tiny_onnx(np.zeros((5, 8), np.float32)))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 64
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    task = DetectTask(load(model.SerializeToString(), engine="ort"), format="yolov8", resize="none")
    with pytest.raises(UsageError, match=r"100 x 80.*128 x 96.*fixed at 64 x any.*letterbox"):
        task.prepare([np.zeros((100, 80, 3), np.uint8)])
    feed, metas = task.prepare([np.zeros((60, 150, 3), np.uint8)])
    assert feed["x"].shape == (1, 3, 64, 160) and metas[0].size == (60, 150)
