"""trtflow video edge cases: frames of changing sizes, outputs that fail to open, error paths."""

from __future__ import annotations

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
