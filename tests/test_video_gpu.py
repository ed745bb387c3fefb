"""trtflow video on a CUDA GPU: NVDEC decode (PyAV CUDA hwaccel, NV12 -> RGB on the GPU) against
the CPU decoder, and the pipeline with GPU preprocessing and the torch engine."""

from __future__ import annotations

import numpy as np
import pytest

av = pytest.importorskip("av")

from tests.test_video import encode, make_clip, post_mean, read_jsonl, red_of  # noqa: E402

pytestmark = pytest.mark.gpu


def _gradient_clip(path, frames=10, width=320, height=240):
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "12"})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
        encode(out, vs, [np.concatenate([np.broadcast_to(x, (height, width, 1)), np.broadcast_to(y, (height, width, 1)),
                                         np.full((height, width, 1), 10 * i, np.float32)], axis=2).astype(np.uint8)
                         for i in range(frames)])


def test_nvdec_frames_match_the_cpu_decoder(tmp_path):
    from trtflow.video.sources import Source

    clip = tmp_path / "gradient.mp4"
    _gradient_clip(clip)
    cpu = list(Source(str(clip), decode="cpu").frames())
    gpu_source = Source(str(clip), decode="nvdec")
    gpu = list(gpu_source.frames())
    assert gpu_source.decoder.startswith("nvdec")
    assert len(gpu) == len(cpu) == 10
    assert [f.pts for f in gpu] == [f.pts for f in cpu]
    for a, b in zip(cpu, gpu):
        assert b.image.is_cuda and tuple(b.image.shape) == a.image.shape
        diff = np.abs(b.image.cpu().numpy().astype(np.int16) - a.image.astype(np.int16))
        assert diff.mean() < 3 and np.percentile(diff, 99) < 12  # BT.601/709 rounding differences only


def test_pipeline_on_the_gpu_with_both_decoders(tmp_path):
    import torch

    import trtflow
    from trtflow.tasks import make_task
    from trtflow.video import VideoConfig, run_video

    class Mean(torch.nn.Module):
        def forward(self, images):
            return images.mean(dim=(2, 3))

    clip = tmp_path / "clip.mp4"
    pts = make_clip(clip, frames=16, width=128, height=96)
    # CUDA graphs: the engine overwrites its outputs on every replay; the pipeline must not mix batches up
    engine = trtflow.load(Mean(), "torch", example_inputs={"images": torch.rand(1, 3, 16, 16)},
                          output_names=["mean"], dynamic={"images": {0: "batch"}}, device="cuda", cuda_graphs=True)
    task = make_task("custom", engine, post=post_mean, resize="stretch", input_size=16, device="cuda")
    # the graph for batches of 4 is captured here, not while the pipeline's threads use the GPU;
    # a long push timeout keeps every batch full (16 frames: 4 batches of 4, one shape)
    engine.infer({"images": torch.rand(4, 3, 16, 16, device="cuda")})
    records = {}
    for decoder in ("cpu", "nvdec"):
        out, video = tmp_path / f"{decoder}.jsonl", tmp_path / f"{decoder}.mp4"
        # --out: NVDEC frames (CUDA) come to the host once per batch for drawing and encoding
        summary = run_video([str(clip)], task, VideoConfig(batch=4, decode=decoder, device="cuda", jsonl=str(out),
                                                           out=str(video), push_timeout_ms=5000))
        assert summary.frames_out == 16 and summary.decoders[0].startswith(decoder)
        records[decoder] = read_jsonl(out)
        assert [r["pts"] for r in records[decoder]] == pts
        assert all(abs(r["mean"][0] - red_of(i)) < 8 for i, r in enumerate(records[decoder]))
        with av.open(str(video)) as written:
            frames = [f.to_ndarray(format="rgb24") for f in written.decode(video=0)]
        assert len(frames) == 16 and abs(float(frames[5][..., 0].mean()) - red_of(5)) < 12


@pytest.mark.parametrize("decoder", ["cpu", "nvdec"])
def test_sr_pipeline_on_the_gpu_equals_direct_runs(tmp_path, decoder):
    """sr with CUDA frames: tiles stitched and rounded on the GPU, one pinned copy per batch of 3;
    each upscaled frame equals a direct per-frame run of the same task, and is exactly 2x."""
    from tests.test_tasks import sr_model
    from trtflow.tasks import make_task
    from trtflow.video import VideoConfig
    from trtflow.video.pipeline import Pipeline
    from trtflow.video.sources import open_sources

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=5, width=128, height=96)  # the size NVDEC decoded in the test above
    task = make_task("sr", sr_model(), engine="ort", tile=32, arch="upconv_7", device="cuda")
    config = VideoConfig(batch=3, decode=decoder, device="cuda")
    sources = open_sources([str(clip)], decoder, None, config.timeout_s, None, audio=False)
    results = list(Pipeline(task, sources, config, keep_images=True).results())
    assert len(results) == 5
    for r in results:
        direct = task.predict([r.image])[0].image
        assert isinstance(r.result.image, np.ndarray) and r.result.image.shape == (192, 256, 3) == direct.shape
        assert np.array_equal(r.result.image, direct)
