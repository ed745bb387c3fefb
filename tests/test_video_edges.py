"""trtflow video edge cases: frames of changing sizes, outputs that fail to open, error paths."""

from __future__ import annotations

import os

import numpy as np
import pytest

av = pytest.importorskip("av")

from tests.test_video import mean_model, mean_task, read_jsonl, red_of  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return mean_model(tmp_path_factory.mktemp("video_edges") / "mean.onnx")


def test_folder_of_mixed_sizes_keeps_frame_order(tmp_path, model):
    """Frames of one stream that change size inside a batch still leave in order."""
    from trtflow.video import VideoConfig, run_video

    folder = tmp_path / "images"
    folder.mkdir()
    sizes = [(16, 16), (24, 20), (16, 16), (24, 20), (17, 33), (16, 16)]
    for i, (h, w) in enumerate(sizes):
        img = np.full((h, w, 3), (red_of(i), 40, 128), np.uint8)
        av.VideoFrame.from_ndarray(img, format="rgb24").save(str(folder / f"{i:03d}.png"))
    out = tmp_path / "out.jsonl"
    summary = run_video([str(folder)], mean_task(model), VideoConfig(batch=8, push_timeout_ms=500, jsonl=str(out)))
    records = read_jsonl(out)
    assert summary.frames_out == len(sizes)
    assert [r["frame"] for r in records] == list(range(len(sizes)))
    assert [round(r["mean"][0]) for r in records] == [red_of(i) for i in range(len(sizes))]


def test_outputs_that_cannot_open_close_the_sources_and_other_outputs(tmp_path, model, monkeypatch):
    """A --jsonl that cannot be written fails the run before any work, leaving no file or source open."""
    from tests.test_video import make_clip
    from trtflow.errors import UsageError
    from trtflow.video import VideoConfig, pipeline, run_video

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=3)
    opened, writers = [], []
    real_open = pipeline.open_sources

    def open_sources(*args, **kwargs):
        opened.extend(real_open(*args, **kwargs))
        return opened

    class Writer(pipeline.VideoWriter):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            writers.append(self)

    monkeypatch.setattr(pipeline, "open_sources", open_sources)
    monkeypatch.setattr(pipeline, "VideoWriter", Writer)
    config = VideoConfig(out=str(tmp_path / "out.mp4"), jsonl=str(tmp_path / "missing" / "out.jsonl"))
    with pytest.raises(UsageError, match="--jsonl"):
        run_video([str(clip)], mean_task(model), config)
    assert opened and all(s.container is None for s in opened)
    assert writers and all(w.container is None for w in writers)


@pytest.fixture
def unstartable(tmp_path, monkeypatch):
    """A 3-frame clip, the sources opened from it (recorded), and pipelines that cannot start."""
    from tests.test_video import make_clip
    from trtflow.video import pipeline, sources

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=3)
    opened = []
    real_open = sources.open_sources

    def recording_open(*args, **kwargs):
        opened.extend(real_open(*args, **kwargs))
        return opened

    monkeypatch.setattr(sources, "open_sources", recording_open)
    monkeypatch.setattr(pipeline, "open_sources", recording_open)

    def broken_lane(*args, **kwargs):
        raise RuntimeError("no such device")

    monkeypatch.setattr(pipeline, "Lane", broken_lane)
    return clip, opened


def test_a_pipeline_that_cannot_start_closes_its_sources(model, unstartable):
    from trtflow.video import VideoConfig, run_video

    clip, opened = unstartable
    with pytest.raises(RuntimeError, match="no such device"):
        run_video([str(clip)], mean_task(model), VideoConfig())
    assert opened and all(s.container is None for s in opened)


def test_a_predictor_stream_that_cannot_start_closes_its_sources(model, unstartable):
    from trtflow.video.predictor import Predictor

    clip, opened = unstartable
    with pytest.raises(RuntimeError, match="no such device"):
        next(Predictor(task=mean_task(model)).stream(str(clip)))
    assert opened and all(s.container is None for s in opened)


def _audio_only(path) -> None:
    """A WAV file under an image name: FFmpeg opens it, but it holds no picture."""
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)


def test_folder_file_without_a_picture_is_skipped_and_counted(tmp_path, model):
    from trtflow.video import VideoConfig, run_video

    folder = tmp_path / "images"
    folder.mkdir()
    for i in (0, 2):
        img = np.full((16, 16, 3), (red_of(i), 40, 128), np.uint8)
        av.VideoFrame.from_ndarray(img, format="rgb24").save(str(folder / f"{i:03d}.png"))
    _audio_only(folder / "001.png")
    out = tmp_path / "out.jsonl"
    summary = run_video([str(folder)], mean_task(model), VideoConfig(batch=2, jsonl=str(out)))
    assert summary.frames_out == 2 and summary.corrupt == 1
    assert [round(r["mean"][0]) for r in read_jsonl(out)] == [red_of(0), red_of(2)]


def test_predict_on_a_file_without_a_picture_is_a_usage_error(tmp_path):
    from trtflow.errors import UsageError
    from trtflow.video.predictor import to_rgb

    _audio_only(tmp_path / "sound.png")
    with pytest.raises(UsageError, match="sound.png"):
        to_rgb(str(tmp_path / "sound.png"))


@pytest.mark.parametrize("suffix", ["mkv", "flv"])
def test_truncated_file_without_a_frame_count_is_marked_ended_early(tmp_path, suffix):
    """Matroska and FLV declare their duration, not a frame count: a cut copy still ends early."""
    from tests.test_video import make_clip
    from trtflow.video.sources import Source

    clip = tmp_path / f"clip.{suffix}"
    make_clip(clip, frames=60, width=96, height=64, noise=True)
    whole = Source(str(clip))
    assert sum(1 for _ in whole.frames()) == 60 and not whole.stats.ended_early
    whole.close()
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(clip.read_bytes()[: len(clip.read_bytes()) // 2])
    source = Source(str(cut))
    decoded = sum(1 for _ in source.frames())
    source.close()
    assert 0 < decoded < 60
    assert source.stats.ended_early and "ended early" in source.stats.errors[-1]


def test_complete_matroska_with_longer_audio_is_not_ended_early(tmp_path):
    from tests.test_video import encode
    from trtflow.video.sources import Source

    clip = tmp_path / "clip.mkv"
    with av.open(str(clip), "w") as out:  # 12 frames at 24/s (0.5 s) and 2 s of audio
        video = out.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "mono"
        encode(out, video, [np.full((32, 32, 3), 9 * i, np.uint8) for i in range(12)])
        for k in range(0, 96000, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, k
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    source = Source(str(clip), audio=True)
    assert sum(1 for _ in source.frames()) == 12
    source.close()
    assert not source.stats.ended_early, source.stats.errors


@pytest.mark.parametrize("suffix", ["mkv", "flv", "mp4"])
def test_complete_file_starting_late_is_not_ended_early(tmp_path, suffix):
    """Timestamps from 10 s on: Matroska's DURATION tag is the end time, not the length."""
    from trtflow.video.sources import Source

    clip = tmp_path / f"late.{suffix}"
    with av.open(str(clip), "w") as out:
        video = out.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        for i in range(24):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 5 * i, np.uint8), format="rgb24")
            frame.pts = 240 + i
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    source = Source(str(clip))
    assert sum(1 for _ in source.frames()) == 24
    source.close()
    assert not source.stats.ended_early, source.stats.errors


def test_read_error_mid_file_keeps_the_frames_the_decoder_holds(tmp_path):
    """A read error (I/O, network) ends the stream; frames already inside the (threaded) decoder come out."""
    from tests.test_video import make_clip
    from trtflow.video.sources import Source

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=40, width=128, height=96, noise=True)  # no B-frames: one packet, one frame

    class FailingReads:
        def __init__(self, container):
            self.container = container

        def __getattr__(self, name):
            return getattr(self.container, name)

        def demux(self, *streams):
            for i, packet in enumerate(self.container.demux(*streams)):
                if i == 20:
                    raise av.error.FFmpegError(5, "Input/output error")
                yield packet

    source = Source(str(clip))
    source.container = FailingReads(source.container)
    frames = list(source.frames())
    source.close()
    assert [f.index for f in frames] == list(range(20))  # the 20 packets read, all decoded
    assert source.stats.ended_early and "reading stopped" in source.stats.errors[0]


def test_out_with_frames_changing_size_names_a_fix_that_exists(tmp_path, model):
    """--out writes one size per file; a folder of mixed sizes is refused with what to do instead."""
    from trtflow.errors import UsageError
    from trtflow.video import VideoConfig, run_video

    folder = tmp_path / "images"
    folder.mkdir()
    for i, (h, w) in enumerate([(16, 16), (24, 20)]):
        av.VideoFrame.from_ndarray(np.zeros((h, w, 3), np.uint8), format="rgb24").save(str(folder / f"{i}.png"))
    with pytest.raises(UsageError) as info:
        run_video([str(folder)], mean_task(model), VideoConfig(batch=1, out=str(tmp_path / "out.mp4")))
    message = str(info.value)
    assert "20x24" in message and "--jsonl" in message and "one stream per output" not in message


def test_predictor_with_a_ready_task_refuses_task_options(model):
    """resize=, input_size= and engine= shape a task being made; with a ready Task they are refused, not ignored."""
    import trtflow
    from trtflow.errors import UsageError

    task = mean_task(model)
    for options in ({"input_size": 32}, {"resize": "letterbox"}, {"engine": "torch"}):
        with pytest.raises(UsageError, match="ready Task"):
            trtflow.Predictor(task=task, **options)
    assert trtflow.Predictor(task=task, batch=2, device="cpu").task is task


def test_frames_closed_early_by_the_caller_is_not_ended_early(tmp_path):
    """Stopping to read (closing the frames() generator) is the caller's choice, not a short file."""
    from tests.test_video import make_clip
    from trtflow.video.sources import Source

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=12)
    source = Source(str(clip))
    frames = source.frames()
    assert [next(frames).index for _ in range(3)] == [0, 1, 2]
    frames.close()
    source.close()
    assert not source.stats.ended_early and not source.stats.errors


def test_muxer_does_not_wait_for_frames_that_cannot_come():
    """Queues smaller than the batch: once every open stream's queue is full, its sources are
    blocked, so the batch leaves at once instead of after the push timeout."""
    import time

    from trtflow.video.muxer import Muxer
    from trtflow.video.sources import Frame

    mux = Muxer(2, batch=8, push_timeout_s=2.0, capacity=2)
    for stream in (0, 1):
        for i in range(2):
            mux.put(Frame(stream, i, i, None, None))
    start = time.perf_counter()
    batch = mux.next_batch()
    assert len(batch) == 4 and time.perf_counter() - start < 1.0
    mux.put(Frame(0, 2, 2, None, None))  # stream 1 has room left: its next frame may still come
    start = time.perf_counter()
    mux.push_timeout_s = 0.3
    assert [f.index for f in mux.next_batch()] == [2] and time.perf_counter() - start >= 0.25


def test_max_frames_zero_reads_no_frame_from_a_file_as_from_a_folder(tmp_path):
    from tests.test_video import make_clip
    from trtflow.video.sources import Source

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=4)
    folder = tmp_path / "images"
    folder.mkdir()
    av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24").save(str(folder / "0.png"))
    for uri in (clip, folder):
        source = Source(str(uri), max_frames=0)
        assert list(source.frames()) == [] and not source.stats.ended_early
        source.close()


def test_predictor_stream_unknown_option_is_a_usage_error(tmp_path, model):
    import trtflow
    from trtflow.errors import UsageError

    from tests.test_video import make_clip

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=2)
    predictor = trtflow.Predictor(task=mean_task(model))
    with pytest.raises(UsageError, match="max_frame.*max_frames"):
        next(predictor.stream(str(clip), max_frame=1))
    with pytest.raises(UsageError, match="batch"):
        next(predictor.stream(str(clip), batch=4))


def test_predictor_stream_names_an_unknown_option(model):
    from trtflow.errors import UsageError
    from trtflow.video.predictor import Predictor

    with pytest.raises(UsageError, match=r"unknown option\(s\) colour; it takes .*max_frames"):
        next(Predictor(task=mean_task(model)).stream("clip.mp4", colour="red"))


def test_the_video_command_closes_its_sources_when_the_pipeline_cannot_start(model, unstartable):
    from tests.conftest import call_cli

    clip, opened = unstartable
    proc = call_cli("video", str(clip), "--task", "classify", "--model", str(model), "--engine", "ort")
    assert proc.returncode != 0 and "no such device" in proc.stderr, proc.stderr
    assert opened and all(s.container is None for s in opened)


def test_out_with_one_pixel_high_or_wide_frames_writes_them(tmp_path, model):
    """H.264 (yuv420p) needs even sides: an odd side is cropped, but a side of 1 pixel became 0 and the
    write stage failed with IndexError. It is padded to 2 instead; every frame reaches the file."""
    from trtflow.video import VideoConfig, run_video

    for h, w in [(1, 5), (7, 1), (1, 1)]:
        folder = tmp_path / f"images{h}x{w}"
        folder.mkdir()
        for i in range(3):
            image = np.full((h, w, 3), (red_of(i), 40, 128), np.uint8)
            av.VideoFrame.from_ndarray(image, format="rgb24").save(str(folder / f"{i}.png"))
        out, jsonl = tmp_path / f"out{h}x{w}.mp4", tmp_path / f"out{h}x{w}.jsonl"
        summary = run_video([str(folder)], mean_task(model), VideoConfig(batch=2, out=str(out), jsonl=str(jsonl)))
        assert summary.frames_out == 3 and [r["frame"] for r in read_jsonl(jsonl)] == [0, 1, 2]
        with av.open(str(out)) as written:
            stream = written.streams.video[0]
            assert (stream.height, stream.width) == (max(h - h % 2, 2), max(w - w % 2, 2))
            assert sum(1 for _ in written.decode(video=0)) == 3


def post_not_finite(outputs: dict, metas: list) -> list:
    """Custom post-processing whose numbers are not all finite (a model that gave NaN)."""
    return [{"score": float("nan"), "range": [float("inf"), -float("inf"), 1.5]} for _ in metas]


def test_jsonl_records_with_nan_or_infinity_are_strict_json(tmp_path, model):
    """json.dumps wrote bare NaN and Infinity, which JSON parsers refuse (a JSON Lines reader
    failed on the record); they are written as "nan", "inf", "-inf", as --json writes them."""
    import json

    from tests.test_video import SIZE, make_clip
    from trtflow.tasks import make_task
    from trtflow.video import VideoConfig, run_video

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=3)
    task = make_task("custom", str(model), engine="ort", post=post_not_finite, resize="stretch", input_size=SIZE)
    out = tmp_path / "out.jsonl"
    run_video([str(clip)], task, VideoConfig(batch=2, jsonl=str(out)))

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    records = [json.loads(line, parse_constant=refuse) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert records[0]["score"] == "nan" and records[0]["range"] == ["inf", "-inf", 1.5]


def test_damage_mid_file_that_reads_to_its_end_is_not_ended_early(tmp_path):
    """An MP4 damaged in the middle: the frames lost there are counted missing, and the last frame
    comes through. It was also marked ended early ("ended early after 43 frames of 48"), as a cut file is."""
    from tests.test_video import make_clip
    from trtflow.video.sources import Source

    clip = tmp_path / "clip.mp4"
    pts = make_clip(clip, frames=48, width=96, height=64, noise=True, options={"movflags": "faststart"})
    data = bytearray(clip.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 3000] = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    source = Source(str(bad))
    frames = list(source.frames())
    source.close()
    assert frames[-1].pts == pts[-1] and len(frames) < 48 and source.stats.missing > 0  # the damage lost frames
    assert not source.stats.ended_early, source.stats.errors


def test_out_from_a_stream_without_timestamps_keeps_one_frame_per_frame_time(tmp_path, model):
    """A raw H.264 file has no timestamps (time base 1/1200000): the annotated frames were given pts
    0, 1, 2... ticks, so the whole video lasted microseconds and every frame showed at time 0."""
    from tests.test_video import encode
    from trtflow.video import VideoConfig, run_video

    raw = tmp_path / "clip.h264"
    with av.open(str(raw), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        encode(out, stream, [np.full((32, 32, 3), (red_of(i), 40, 128), np.uint8) for i in range(6)])
    video = tmp_path / "out.mp4"
    run_video([str(raw)], mean_task(model), VideoConfig(batch=4, out=str(video)))
    with av.open(str(video)) as written:
        times = [frame.time for frame in written.decode(video=0)]
    assert len(times) == 6
    np.testing.assert_allclose(np.diff(times), 1 / 25, atol=1e-3)  # the source's (guessed) 25 frames/s


def test_an_output_that_is_a_source_or_the_other_output_is_refused(tmp_path, model, monkeypatch):
    """--out or --jsonl naming the input file truncated it while it was being read (the input was
    lost); --out and --jsonl naming one file wrote both into it."""
    from tests.test_video import make_clip
    from trtflow.errors import UsageError
    from trtflow.video import VideoConfig, run_video

    monkeypatch.chdir(tmp_path)
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=6)
    data = clip.read_bytes()
    (tmp_path / "link.mp4").symlink_to(clip)
    for options, words in ((dict(out=str(clip)), r"--out '.*clip.mp4' is source 'clip.mp4'"),
                           (dict(jsonl="link.mp4"), r"--jsonl 'link.mp4' is source 'clip.mp4'"),
                           (dict(out="x.mkv", jsonl=str(tmp_path / "x.mkv")), r"--jsonl '.*x.mkv' is the --out file")):
        with pytest.raises(UsageError, match=words):
            run_video(["clip.mp4"], mean_task(model), VideoConfig(batch=2, **options))
        assert clip.read_bytes() == data
    other = tmp_path / "out-s1.mp4"  # several sources: OUT-s1.mp4 is the second one
    make_clip(other, frames=4, stream=1)
    second = other.read_bytes()
    with pytest.raises(UsageError, match=r"--out '.*out-s1.mp4' is source"):
        run_video(["clip.mp4", str(other)], mean_task(model), VideoConfig(out="out.mp4"))
    assert other.read_bytes() == second and clip.read_bytes() == data


def test_folder_subfolder_with_an_image_name_is_not_a_frame(tmp_path):
    """A subfolder named like an image ('thumbs.png/') was listed as a frame, then counted corrupt
    and in the expected total."""
    from trtflow.video.sources import Source

    folder = tmp_path / "images"
    (folder / "thumbs.png").mkdir(parents=True)
    av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24").save(str(folder / "0.png"))
    source = Source(str(folder))
    assert [f.index for f in source.frames()] == [0]
    assert source.stats.expected == 1 and source.stats.corrupt == 0 and not source.stats.errors
    (folder / "0.png").unlink()
    from trtflow.errors import UsageError

    with pytest.raises(UsageError, match="holds no images"):
        Source(str(folder))


def test_file_url_of_a_folder_or_a_file_is_read(tmp_path):
    """file:///path/to/folder was taken for a folder, then listed as the path 'file:///...' (no such
    folder); FILE:// named a file for source_kind but was opened with its scheme."""
    from tests.test_video import make_clip
    from trtflow.video.sources import Source

    folder = tmp_path / "images"
    folder.mkdir()
    av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24").save(str(folder / "0.png"))
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=3)
    for uri, frames in ((f"file://{folder}", 1), (f"FILE://{clip}", 3)):
        source = Source(uri)
        assert len(list(source.frames())) == frames
        source.close()


def post_with_a_frame_field(outputs: dict, metas: list) -> list:
    """Custom post-processing returning a field named like a record's tag."""
    return [{"frame": "cat", "time": 0.5} for _ in metas]


def test_a_result_field_named_like_a_record_tag_is_refused(tmp_path, model):
    """A --post function returning {"frame": ...} overwrote the record's frame number (and "time" its
    time): the JSONL records no longer said which frame they were for."""
    from tests.test_video import SIZE, make_clip
    from trtflow.errors import UsageError
    from trtflow.tasks import make_task
    from trtflow.video import VideoConfig, run_video

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=3)
    task = make_task("custom", str(model), engine="ort", post=post_with_a_frame_field, resize="stretch",
                     input_size=SIZE)
    with pytest.raises(UsageError, match=r"stream 0 frame 0 has the field\(s\) frame, time, .*rename"):
        run_video([str(clip)], task, VideoConfig(batch=2, jsonl=str(tmp_path / "out.jsonl")))


def test_predict_on_an_array_that_is_not_numbers_is_a_usage_error():
    """Text, complex numbers or a ragged nested list raised ValueError from numpy (or, for complex
    numbers, dropped the imaginary part)."""
    from trtflow.errors import UsageError
    from trtflow.video.predictor import to_rgb

    for bad in (np.full((2, 2, 3), "a"), np.zeros((2, 2, 3), complex),
                [np.zeros((2, 2, 3)), np.zeros((3, 3, 3))]):
        with pytest.raises(UsageError, match="an image must"):
            to_rgb(bad)


@pytest.mark.parametrize("suffix", ["mkv", "flv"])
def test_file_cut_before_its_first_frame_is_marked_ended_early(tmp_path, suffix):
    """A Matroska or FLV file cut inside its first frame declares 2.5 s and gives no frame: it was
    reported complete (no frame time to compare with the declared end)."""
    from tests.test_video import make_clip
    from trtflow.video.sources import Source

    clip = tmp_path / f"clip.{suffix}"
    make_clip(clip, frames=60, width=96, height=64, noise=True)
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(clip.read_bytes()[: len(clip.read_bytes()) // 50])
    source = Source(str(cut))
    assert sum(1 for _ in source.frames()) == 0
    source.close()
    assert source.stats.ended_early and "ended early after 0 frames" in source.stats.errors[-1]


def test_summary_lists_only_the_video_files_written(tmp_path, model):
    """A run that gave no frame (every image of the folder broken) writes no video file, but the
    summary listed --out among the files written."""
    from trtflow.video import VideoConfig, run_video

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "0.png").write_bytes(b"not a png")
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    summary = run_video([str(folder)], mean_task(model), VideoConfig(out=str(out), jsonl=str(jsonl)))
    assert summary.frames_out == 0 and summary.corrupt == 1
    assert not out.exists() and summary.outputs == [str(jsonl)]


def test_source_options_given_as_numbers_reach_ffmpeg(tmp_path, model):
    """FFmpeg options are text: {"probesize": 5000000} (as a Python caller writes a number) raised
    PyAV's TypeError 'expected str, got int'."""
    from tests.test_video import make_clip
    from trtflow.video.sources import Source

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=3)
    source = Source(str(clip), options={"probesize": 5000000, "fflags": "+genpts", "ignore_editlist": True})
    assert sum(1 for _ in source.frames()) == 3
    source.close()


def test_encoder_options_as_numbers_work_and_bad_ones_are_usage_errors(tmp_path, model):
    """encoder_options={"crf": 18} raised PyAV's TypeError 'expected str, got int'; an option x264
    refuses ({"preset": "fastest"}) failed the write stage with av's ArgumentError."""
    from tests.test_video import make_clip
    from trtflow.errors import UsageError
    from trtflow.video import VideoConfig, run_video

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=3)
    out = tmp_path / "out.mp4"
    summary = run_video([str(clip)], mean_task(model), VideoConfig(out=str(out), encoder_options={"crf": 18, "g": 2}))
    assert summary.frames_out == 3 and summary.outputs == [str(out)]
    with pytest.raises(UsageError, match=r"libx264 refused the encoder options .*'preset': 'fastest'.*encoder_options"):
        run_video([str(clip)], mean_task(model), VideoConfig(out=str(out), encoder_options={"preset": "fastest"}))


@pytest.mark.parametrize("suffix", ["webm", "gif", "png"])
def test_out_in_a_container_that_cannot_hold_h264_is_refused_before_any_work(tmp_path, model, suffix):
    """--out x.webm (or .gif, .png) failed the write stage at the first frame with "EngineError: ...
    ValueError: 'webm' format does not support 'libx264' codec", after decoding and inference had begun."""
    from tests.test_video import make_clip
    from trtflow.errors import UsageError
    from trtflow.video import VideoConfig, run_video

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=3)
    task = mean_task(model)
    calls = []
    task.prepare = lambda frames, prepare=task.prepare: calls.append(len(frames)) or prepare(frames)
    with pytest.raises(UsageError, match=rf"--out '.*out.{suffix}': .*cannot hold libx264.*\.mp4, \.mkv or \.mov"):
        run_video([str(clip)], task, VideoConfig(out=str(tmp_path / f"out.{suffix}")))
    assert not calls
    ts = tmp_path / "out.ts"  # MPEG-TS does not list its codecs, but holds H.264
    assert run_video([str(clip)], task, VideoConfig(out=str(ts))).outputs == [str(ts)] and calls


def _clip_with_audio(path, codec: str) -> None:
    """12 frames of H.264 and half a second of ``codec`` audio (opus, flac...)."""
    from tests.test_video import encode

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = out.add_stream(codec, rate=48000)
        audio.layout = "mono"
        encode(out, video, [np.full((32, 32, 3), 9 * i, np.uint8) for i in range(12)])
        size = audio.codec_context.frame_size or 1024
        for k in range(0, 24000, size):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, size), np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = 48000, k
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)


@pytest.mark.parametrize("codec, suffix", [("libopus", "avi"), ("libopus", "mov"), ("flac", "mov")])
def test_out_that_cannot_hold_the_source_audio_names_no_audio(tmp_path, model, codec, suffix):
    """Opus audio copied into .avi raised a bare ValueError from PyAV; Opus or FLAC into .mov failed
    the write stage (av ArgumentError from the header). Both are a UsageError naming --no-audio, and
    the same run with audio=False writes the video."""
    from trtflow.errors import UsageError
    from trtflow.video import VideoConfig, run_video

    clip = tmp_path / "clip.mkv"
    _clip_with_audio(clip, codec)
    out = tmp_path / f"out.{suffix}"
    with pytest.raises(UsageError, match=rf"--out '.*out.{suffix}'.*{codec.replace('lib', '')} audio.*--no-audio"):
        run_video([str(clip)], mean_task(model), VideoConfig(batch=4, out=str(out)))
    summary = run_video([str(clip)], mean_task(model), VideoConfig(batch=4, out=str(out), audio=False))
    assert summary.frames_out == 12 and summary.outputs == [str(out)]


def test_mp4_cut_inside_its_last_frames_is_ended_early(tmp_path):
    """A frame count of 30 and 29 or 28 frames read: the cut file ends early, even though its last
    frame is within the few frames of slack a declared duration alone is given."""
    from tests.test_video import make_clip
    from trtflow.video.sources import Source

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=30, width=96, height=64, noise=True, options={"movflags": "faststart"})
    data = clip.read_bytes()
    for cut in (100, 3000):
        short = tmp_path / "short.mp4"
        short.write_bytes(data[:-cut])
        source = Source(str(short))
        decoded = sum(1 for _ in source.frames())
        source.close()
        assert 27 <= decoded < 30 and source.stats.ended_early, (cut, decoded, source.stats)


@pytest.mark.parametrize("suffix", ["y4m", "ogv"])
def test_out_whose_header_ffmpeg_refuses_is_a_usage_error(tmp_path, model, suffix):
    """.y4m holds raw video only and Ogg no H.264: FFmpeg refuses the header at the first packet, which
    failed the write stage with av's InvalidDataError or ArgumentError."""
    from tests.test_video import make_clip
    from trtflow.errors import UsageError
    from trtflow.video import VideoConfig, run_video

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=3)
    with pytest.raises(UsageError, match=rf"--out '.*out.{suffix}': FFmpeg cannot write libx264 video .*\.mp4, \.mkv"):
        run_video([str(clip)], mean_task(model), VideoConfig(out=str(tmp_path / f"out.{suffix}")))


def test_video_device_that_cannot_run_is_a_usage_error(tmp_path, model):
    """VideoConfig(device="gpu") raised torch's RuntimeError while building the pipeline; "cuda"
    without a GPU failed the h2d stage with an AssertionError."""
    import torch

    from tests.test_video import make_clip
    from trtflow.errors import UsageError
    from trtflow.video import VideoConfig, run_video

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=2)
    for device in ["gpu"] + ([] if torch.cuda.is_available() else ["cuda"]):
        with pytest.raises(UsageError, match=rf"device '{device}'"):
            run_video([str(clip)], mean_task(model), VideoConfig(device=device))


def test_predictor_batch_that_is_not_a_whole_number_is_refused(model):
    """batch="8" raised TypeError ('<' between str and int); batch=2.5 ran batches of 2."""
    import trtflow
    from trtflow.errors import UsageError

    for batch in ("8", 2.5, True, 0):
        with pytest.raises(UsageError, match="batch must be a whole number, at least 1"):
            trtflow.Predictor(task=mean_task(model), batch=batch)
    assert trtflow.Predictor(task=mean_task(model), batch=np.int64(3)).batch == 3


def test_folder_jpeg_cut_short_is_kept_and_counted_corrupt(tmp_path):
    """FFmpeg conceals a JPEG cut short (the missing part grey), and the frame was counted as a
    good one: a folder source said nothing of the damage a video source reports."""
    from PIL import Image

    from trtflow.video.sources import Source

    folder = tmp_path / "images"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    for name in ("0.jpg", "1.jpg"):
        Image.fromarray(pixels).save(folder / name)
    whole = (folder / "1.jpg").read_bytes()
    (folder / "1.jpg").write_bytes(whole[: len(whole) // 2])
    source = Source(str(folder))
    frames = list(source.frames())
    assert [f.index for f in frames] == [0, 1] and frames[1].image.shape == (32, 32, 3)
    assert source.stats.corrupt == 1 and "1.jpg" in source.stats.errors[0]
    source.close()


def test_relative_names_with_a_colon_are_files_not_ffmpeg_protocols(tmp_path, model, monkeypatch):
    """FFmpeg reads 'cam:2024.mp4' as the protocol 'cam': a relative file name with a colon (a
    timestamp) was 'not a video file', an image of the folder '.' was skipped as corrupt, and
    --out refused to write there."""
    from tests.test_video import make_clip
    from trtflow.video import VideoConfig, run_video
    from trtflow.video.sources import Source

    monkeypatch.chdir(tmp_path)
    make_clip(tmp_path / "cam-2024T10:00:00.mp4", frames=3)
    av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24").save(str(tmp_path / "shot:1.png"))
    source = Source("cam-2024T10:00:00.mp4")
    assert sum(1 for _ in source.frames()) == 3
    source.close()
    folder = Source(".")
    assert sum(1 for _ in folder.frames()) == 1 and folder.stats.corrupt == 0
    summary = run_video(["cam-2024T10:00:00.mp4"], mean_task(model), VideoConfig(out="out:1.mp4"))
    assert summary.frames_out == 3
    with av.open(str(tmp_path / "out:1.mp4")) as written:
        assert sum(1 for _ in written.decode(video=0)) == 3


@pytest.mark.parametrize("option", ["probesize=abc", "fflags=+nonsense"])
def test_av_option_ffmpeg_refuses_is_named_not_blamed_on_the_file(tmp_path, option, capsys):
    """A value FFmpeg refuses (--av-option probesize=abc) said the good file was 'not a video file
    FFmpeg can read: Invalid argument'."""
    from tests.test_video import make_clip, video_cli

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=2)
    assert video_cli(clip, "--task", "classify", "--av-option", option) == 2
    err = capsys.readouterr().err
    assert option.split("=")[0] in err and "--av-option" in err and "not a video file" not in err, err


def test_av_option_no_ffmpeg_part_knows_is_refused_naming_it(tmp_path, capsys):
    """FFmpeg leaves an option it does not know unused, without a word: --av-option rtsp_transprot=udp
    (a typo) ran the stream over the default transport. Names no FFmpeg demuxer, device, protocol or
    decoder has are refused by name; known ones (probesize, a decoder's threads, mov's ignore_editlist)
    still reach FFmpeg."""
    from tests.test_video import make_clip, video_cli
    from trtflow.errors import UsageError
    from trtflow.video.sources import Source

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=2)
    assert video_cli(clip, "--task", "classify", "--av-option", "rtsp_transprot=udp", "--av-option",
                     "probesize=5000000", "--av-option", "max_dealy=0") == 2
    err = capsys.readouterr().err
    assert "rtsp_transprot, max_dealy" in err and "probesize" not in err and "--av-option" in err, err
    with pytest.raises(UsageError, match="rtsp_transprot"):
        Source(str(clip), options={"rtsp_transprot": "udp"})
    source = Source(str(clip), options={"probesize": 5000000, "threads": 1, "ignore_editlist": True})
    assert sum(1 for _ in source.frames()) == 2
    source.close()


def test_ffmpeg_libraries_are_loaded_only_for_options_and_a_load_failure_leaves_sources_open(
        tmp_path, monkeypatch, caplog):
    """The option-name check loaded FFmpeg's libraries through ctypes for every Source, options or
    not, and an OSError from loading them broke every Source. A missing library is simulated by a
    loader that raises; the real PyAV still decodes."""
    import ctypes

    from tests.test_video import make_clip
    from trtflow.video import ffmpeg_options
    from trtflow.video.sources import Source

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=2)

    def no_tables():
        raise AssertionError("FFmpeg's option tables were loaded for a source without options")

    monkeypatch.setattr(ffmpeg_options, "_option_tables", no_tables)
    source = Source(str(clip))
    assert sum(1 for _ in source.frames()) == 2
    source.close()
    monkeypatch.undo()

    def missing(path, *args, **kwargs):
        raise OSError(f"{path}: cannot open shared object file")

    ffmpeg_options._option_tables.cache_clear()
    monkeypatch.setattr(ctypes, "CDLL", missing)
    try:
        with caplog.at_level("WARNING", logger=ffmpeg_options.__name__):
            assert _frames_read(clip, {"probesize": 5000000}) == 2
    finally:
        monkeypatch.undo()
        ffmpeg_options._option_tables.cache_clear()
    assert "option names are not checked" in caplog.text


def _frames_read(clip, options) -> int:
    from trtflow.video.sources import Source

    source = Source(str(clip), options=options)
    try:
        return sum(1 for _ in source.frames())
    finally:
        source.close()


def test_ffmpeg_option_check_uses_the_libraries_pyav_loaded_and_only_logs_for_the_systems(
        tmp_path, monkeypatch, caplog):
    """Without PyAV's av.libs folder (conda, source builds) find_library may find the system's
    FFmpeg, whose option tables can differ from the one PyAV linked: the libraries mapped into the
    process are used, and names only the system's libraries lack are passed on with a warning."""
    import ctypes.util

    from tests.test_video import make_clip
    from trtflow.video import ffmpeg_options

    paths, pyav = ffmpeg_options._library_paths()
    assert pyav and sorted(paths) == ["avcodec", "avformat", "avutil"]
    if os.path.exists("/proc/self/maps"):
        assert ffmpeg_options._pyav_libraries() == paths
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=2)
    # as if PyAV's libraries were not found and only find_library found some (these same files)
    monkeypatch.setattr(ffmpeg_options, "_pyav_libraries", dict)
    monkeypatch.setattr(ffmpeg_options, "Path", lambda _: tmp_path / "av" / "__init__.py")
    monkeypatch.setattr(ctypes.util, "find_library", paths.get)
    ffmpeg_options._option_tables.cache_clear()
    try:
        with caplog.at_level("WARNING", logger=ffmpeg_options.__name__):
            assert _frames_read(clip, {"rtsp_transprot": "udp"}) == 2
    finally:
        monkeypatch.undo()
        ffmpeg_options._option_tables.cache_clear()
    assert "rtsp_transprot not found in the system's FFmpeg" in caplog.text


@pytest.mark.parametrize("options", [{"max_frames": -1}, {"max_frames": 2.5}, {"batch": 0}, {"batch": "4"},
                                     {"push_timeout_ms": -5}, {"queue_frames": -1}, {"timeout_s": 0},
                                     {"post_workers": 0}, {"push_timeout_ms": float("nan")}])
def test_video_config_out_of_range_is_refused_naming_the_field(options):
    """VideoConfig(max_frames=-1) read no frame without a word, max_frames=2.5 read 3 frames, batch=0
    ran batches of 1: values the CLI refuses passed from Python and were bent silently."""
    from trtflow.errors import UsageError
    from trtflow.video import VideoConfig

    (name,) = options
    with pytest.raises(UsageError, match=name):
        VideoConfig(**options)
    VideoConfig(max_frames=0, queue_frames=0, push_timeout_ms=0)  # the bounds themselves are fine


@pytest.mark.parametrize("suffix", ["ogv", "mxf"])
def test_out_whose_header_ffmpeg_refuses_leaves_no_broken_file(tmp_path, model, suffix):
    """The refused header was written in part: a run that failed left an out.ogv / out.mxf that no
    player reads."""
    from tests.test_video import make_clip
    from trtflow.errors import UsageError
    from trtflow.video import VideoConfig, run_video

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=3, audio=True)
    out = tmp_path / f"out.{suffix}"
    with pytest.raises(UsageError, match="FFmpeg cannot write"):
        run_video([str(clip)], mean_task(model), VideoConfig(out=str(out)))
    assert not out.exists()


def test_animated_gif_holding_a_frame_longer_has_no_missing_frames(tmp_path):
    """A GIF showing one frame 200 ms among 40 ms ones (variable frame times, every frame there)
    was reported as 'about 2 frame(s) missing ... damaged or lost data'."""
    from PIL import Image

    from trtflow.video.sources import Source

    frames = [Image.fromarray(np.full((10, 11, 3), 40 * i, np.uint8)) for i in range(5)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=[40, 40, 200, 40, 40], loop=0)
    source = Source(str(gif))
    assert [f.index for f in source.frames()] == [0, 1, 2, 3, 4]
    assert source.stats.missing == 0 and not source.stats.errors and not source.stats.ended_early
    source.close()


def test_folder_source_describes_the_size_of_its_images(tmp_path):
    """A folder source described itself as 0x0 (the summary, --json and 'stream 0: ... (folder, 0x0')."""
    from trtflow.video.sources import Source

    folder = tmp_path / "images"
    folder.mkdir()
    av.VideoFrame.from_ndarray(np.zeros((6, 10, 3), np.uint8), format="rgb24").save(str(folder / "0.png"))
    source = Source(str(folder))
    list(source.frames())
    assert (source.describe()["width"], source.describe()["height"]) == (10, 6)


def test_out_of_one_stream_that_is_a_folder_is_refused_before_any_work(tmp_path, model):
    """With two sources, --out out.mp4 writes out-s0.mp4 and out-s1.mp4; a folder named out-s1.mp4
    failed the write stage with IsADirectoryError after the work had begun."""
    from tests.test_video import make_clip
    from trtflow.errors import UsageError
    from trtflow.video import VideoConfig, run_video

    clips = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for clip in clips:
        make_clip(clip, frames=2)
    (tmp_path / "out-s1.mp4").mkdir()
    with pytest.raises(UsageError, match=r"--out '.*out-s1.mp4' is a folder"):
        run_video([str(c) for c in clips], mean_task(model), VideoConfig(out=str(tmp_path / "out.mp4")))
    assert not (tmp_path / "out-s0.mp4").exists()


def test_out_where_no_file_can_be_made_says_so(tmp_path, model):
    """/proc takes no new file: FFmpeg's 'No such file or directory' at the first packet was reported
    as 'cannot write libx264 video into this kind of file; use a .mp4 ... name' for a .mp4 name."""
    from tests.test_video import make_clip
    from trtflow.errors import UsageError
    from trtflow.video import VideoConfig, run_video

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=2)
    with pytest.raises(UsageError, match=r"--out '/proc/out.mp4': cannot write there \(No such file") as info:
        run_video([str(clip)], mean_task(model), VideoConfig(out="/proc/out.mp4"))
    assert "this kind of file" not in str(info.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root lists any folder")
def test_folder_that_cannot_be_listed_is_a_usage_error(tmp_path):
    """An unreadable folder raised a bare PermissionError from Path.iterdir."""
    from trtflow.errors import UsageError
    from trtflow.video.sources import Source

    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o300)
    try:
        with pytest.raises(UsageError, match="cannot list the folder"):
            Source(str(folder))
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("suffix, codec", [("mkv", "libx264"), ("webm", "libvpx-vp9")])
def test_variable_frame_rate_file_without_a_frame_count_has_no_missing_frames(tmp_path, model, capsys, suffix, codec):
    """Matroska and WebM store no frame count: a clip holding two frames 200 ms among 40 ms ones
    (every frame there) was summarized as 8 frames missing, 'damaged or lost data'."""
    import json
    from fractions import Fraction

    from tests.test_video import video_cli

    clip = tmp_path / f"vfr.{suffix}"
    times = [0, 40, 80, 280, 320, 360, 400, 600, 640, 680]  # milliseconds
    with av.open(str(clip), "w") as out:
        video = out.add_stream(codec, rate=25)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    with av.open(str(clip)) as inp:
        assert not inp.streams.video[0].frames and [f.pts for f in inp.decode(video=0)] == times
    capsys.readouterr()
    assert video_cli(clip, "--task", "custom", "--model", model, "--post", "tests.test_video:post_mean",
                     "--resize", "stretch", "--input-size", "16", "--engine", "ort", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    stream = summary["streams"][0]
    assert summary["frames_out"] == 10 and summary["missing"] == 0 and stream["expected"] is None
    assert not stream["messages"] and not stream["ended_early"]


@pytest.mark.parametrize("uri", ["file:///dev/video97", "FILE:///dev/video97", "file://97"])
def test_file_url_of_a_camera_opens_the_device_path(uri):
    """file:///dev/video0 was a camera for source_kind but opened as the path 'file:///dev/video0'."""
    from trtflow.errors import UsageError
    from trtflow.video.sources import Source

    assert not os.path.exists("/dev/video97")
    with pytest.raises(UsageError, match=r"^camera '/dev/video97' does not exist"):
        Source(uri)
