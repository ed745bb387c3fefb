"""Several GPUs: --gpus parsing, round-robin placement, device options, the least-loaded router,
the concurrent multi-copy benchmark (real ONNX Runtime engines on the CPU), and GPU runs
(`gpu`: --gpus 0 on one GPU; `multi_gpu`: two GPUs)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import trtflow
from tests.conftest import call_cli
from trtflow.backends.devices import LeastLoaded, device_options, parse_gpus, place, visible_gpus
from trtflow.bench import BenchConfig, multi_text, multi_to_dict, run_multi
from trtflow.errors import UsageError


# -- parsing and placement ------------------------------------------------------------------------
def test_parse_gpus_lists_all_and_order():
    assert parse_gpus("0,1", 2) == [0, 1]
    assert parse_gpus(" 1 , 0 ", 2) == [1, 0]
    assert parse_gpus("all", 3) == [0, 1, 2]
    assert parse_gpus("ALL", 1) == [0]


@pytest.mark.parametrize("text, visible, words", [
    ("2", 2, "GPU 2 does not exist; 2 CUDA GPUs are visible (0..1)"),
    ("0,1", 1, "GPU 1 does not exist; 1 CUDA GPU is visible (0..0)"),
    ("0", 0, "GPU 0 does not exist; no CUDA GPU is visible"),
    ("all", 0, "no CUDA GPU is visible"),
    ("0,0", 2, "repeats a GPU"),
    ("cuda:0", 2, "expected GPU indices such as 0,1"),
    ("", 2, "expected GPU indices"),
    ("-1", 2, "expected GPU indices"),
])
def test_parse_gpus_refuses_with_one_line(text, visible, words):
    with pytest.raises(UsageError) as info:
        parse_gpus(text, visible)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_place_is_round_robin_over_any_number_of_gpus():
    assert place(4, [0, 1]) == [0, 1, 0, 1]
    assert place(3, [1, 0]) == [1, 0, 1]
    assert place(1, [0, 1, 2]) == [0]
    assert place(5, [0, 1, 2, 3, 4, 5, 6, 7]) == [0, 1, 2, 3, 4]
    for bad in ((0, [0]), (2, [])):
        with pytest.raises(UsageError):
            place(*bad)


def test_device_options_per_engine():
    assert device_options("torch", 1) == {"device": "cuda:1"}
    assert device_options("tensorrt", 1) == {"device": 1}
    assert device_options("ort", 3) == {"device": 3}
    with pytest.raises(UsageError, match="cannot be placed"):
        device_options("onnx2tf", 0)


@pytest.mark.parametrize("engine", ["torch", "tensorrt", "ort"])
@pytest.mark.parametrize("gpu", ["x", -1, True, 1.5])
def test_device_options_refuses_what_is_not_a_gpu_index(engine, gpu):
    with pytest.raises(UsageError, match=f"gpu={gpu!r}.*a GPU index such as 0"):
        device_options(engine, gpu)


def test_make_task_gpu_not_an_index_names_the_value(tmp_path):
    from tests.test_video import mean_model
    from trtflow.tasks import make_task

    model = mean_model(tmp_path / "mean.onnx")
    with pytest.raises(UsageError, match="gpu='x'.*a GPU index such as 0"):
        make_task("custom", str(model), engine="ort", gpu="x", providers=["cpu"], post="tests.test_video:post_mean")


def test_ort_device_option_needs_a_gpu_provider(tiny_onnx):
    with pytest.raises(UsageError, match="providers such as"):
        trtflow.load(tiny_onnx, "ort", device=1)  # CPU provider only: a device index means nothing
    with trtflow.load(tiny_onnx, "ort") as engine:
        assert engine.gpu is None


# -- routing --------------------------------------------------------------------------------------
def test_least_loaded_takes_turns_when_idle_and_avoids_the_busy_one():
    router = LeastLoaded(3)
    first = router.acquire()
    second = router.acquire()
    third = router.acquire()
    assert sorted((first, second, third)) == [0, 1, 2]  # one each before any gets a second
    router.release(second)
    assert router.acquire() == second  # the only one with nothing in flight
    router.release(first)
    router.release(third)
    router.release(second)
    assert router.in_flight == [0, 0, 0]
    with router.use() as i:
        assert router.in_flight[i] == 1
    assert router.in_flight == [0, 0, 0]
    with pytest.raises(ValueError):
        router.release(0)


def test_least_loaded_under_threads_never_loses_count():
    router = LeastLoaded(2)
    seen = [0, 0]
    lock = threading.Lock()

    def work():
        for _ in range(200):
            with router.use() as i:
                with lock:
                    seen[i] += 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert router.in_flight == [0, 0]
    assert sum(seen) == 800 and min(seen) > 0


# -- the concurrent benchmark ---------------------------------------------------------------------
def test_run_multi_sums_concurrent_copies(tiny_onnx):
    engines = [trtflow.load(tiny_onnx, "ort", threads=1) for _ in range(2)]
    feed = {"x": np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)}
    try:
        multi = run_multi(engines, feed, BenchConfig(iterations=5, duration_s=0.05, warmup_ms=0))
    finally:
        for e in engines:
            e.close()
    assert len(multi.results) == 2
    assert all(r.queries >= 5 and r.batch == 2 for r in multi.results)
    record = multi_to_dict(multi)
    per = [g["inferences_per_s"] for g in record["gpus"]]
    assert record["total"]["copies"] == 2
    assert record["total"]["inferences_per_s"] == pytest.approx(sum(per))
    assert len(record["runs"]) == 2 and "latency" in record["runs"][0]
    assert multi_text(multi).splitlines()[-1].startswith("Total: ")


def test_run_multi_raises_a_copy_s_error(tiny_onnx):
    engines = [trtflow.load(tiny_onnx, "ort", threads=1) for _ in range(2)]
    try:
        with pytest.raises(trtflow.errors.InputError):
            run_multi(engines, {"wrong": np.zeros((1, 3, 16, 16), np.float32)},
                      BenchConfig(iterations=1, duration_s=0, warmup_ms=0))
    finally:
        for e in engines:
            e.close()


# -- the CLI on a machine without GPUs ------------------------------------------------------------
@pytest.mark.skipif(visible_gpus() > 0, reason="checks the message on a machine without a CUDA GPU")
def test_cli_bench_gpus_without_a_gpu_is_one_line_usage_error(tiny_onnx):
    result = call_cli("bench", tiny_onnx, "--engine", "ort", "--gpus", "0,1", "--duration", "0")
    assert result.returncode == 2
    assert "--gpus 0,1: GPU 0 does not exist; no CUDA GPU is visible" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_bench_gpus_malformed(tiny_onnx):
    result = call_cli("bench", tiny_onnx, "--gpus", "first", "--duration", "0")
    assert result.returncode == 2
    assert "expected GPU indices such as 0,1" in result.stderr


# -- GPUs -----------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_cli_bench_gpus_0_runs_one_copy():
    result = call_cli("bench", "tests.models.tiny:make", "--shapes", "x:4x3x16x16", "--gpus", "0",
                      "--duration", "0.2", "--warmUp", "20", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["total"]["copies"] == 1
    assert record["gpus"][0]["device"].startswith("cuda:0")
    assert record["total"]["inferences_per_s"] > 0


@pytest.mark.multi_gpu
def test_cli_bench_gpus_0_1_runs_one_copy_per_gpu():
    result = call_cli("bench", "tests.models.tiny:make", "--shapes", "x:4x3x16x16", "--gpus", "0,1",
                      "--duration", "0.2", "--warmUp", "20", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert [g["device"][:6] for g in record["gpus"]] == ["cuda:0", "cuda:1"]
    assert record["total"]["inferences_per_s"] == pytest.approx(sum(g["inferences_per_s"] for g in record["gpus"]))


# -- serve ----------------------------------------------------------------------------------------
def _serve_args(*argv: str):
    import argparse

    from trtflow.cli import serve

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_serve_instances_stay_on_the_cpu_without_gpus(tiny_onnx):
    from trtflow.cli import serve
    from trtflow.serve.engine_process import device_name

    args = _serve_args(str(tiny_onnx), "--instances", "2", "--engine", "ort", "--threads", "1")
    engines = serve._load_instances(args, str(tiny_onnx))
    try:
        assert [device_name(e) for e in engines] == ["cpu", "cpu"]
        assert all(e.session.get_session_options().intra_op_num_threads == 1 for e in engines)
    finally:
        for e in engines:
            e.close()


@pytest.mark.skipif(visible_gpus() > 0, reason="checks the message on a machine without a CUDA GPU")
def test_cli_serve_gpus_without_a_gpu_is_one_line_usage_error(tiny_onnx):
    result = call_cli("serve", tiny_onnx, "--instances", "2", "--gpus", "0,1", "--http-port", "0", "--grpc-port", "-1")
    assert result.returncode == 2
    assert "GPU 0 does not exist; no CUDA GPU is visible" in result.stderr


def test_cli_serve_gpus_with_ray_is_refused(tiny_onnx):
    result = call_cli("serve", tiny_onnx, "--gpus", "0", "--ray", "auto")
    assert result.returncode == 2
    assert "--ray-gpus" in result.stderr


@pytest.mark.gpu
def test_serve_gpus_0_places_every_instance_on_gpu_0():
    from trtflow.cli import serve

    args = _serve_args("model.pt2", "--instances", "2", "--gpus", "0", "--engine", "torch")
    assert serve._placement(args, "torch") == [0, 0]


@pytest.mark.multi_gpu
def test_serve_instances_spread_round_robin_over_two_gpus(tiny_onnx):
    from trtflow.cli import serve

    args = _serve_args(str(tiny_onnx), "--instances", "3", "--gpus", "0,1", "--engine", "torch")
    assert serve._placement(args, "torch") == [0, 1, 0]
    assert serve._placement(_serve_args(str(tiny_onnx), "--instances", "4", "--engine", "torch"), "torch")[:2] == [0, 1]


# -- video ----------------------------------------------------------------------------------------
class _Slowed:
    """A real task whose inference takes ``delay_s`` longer (a busy GPU), counting its batches."""

    def __init__(self, task, delay_s: float):
        self.task, self.delay_s, self.batches = task, delay_s, 0
        self.engine, self.device = task.engine, getattr(task, "device", None)

    def prepare(self, frames):
        return self.task.prepare(frames)

    def infer(self, feed):
        import time

        time.sleep(self.delay_s)
        self.batches += 1
        return self.task.infer(feed)

    def finish(self, outputs, metas):
        return self.task.finish(outputs, metas)


def test_video_lanes_share_batches_least_loaded_first_and_keep_order(tmp_path):
    pytest.importorskip("av")
    from tests.test_video import make_clip, mean_model, mean_task, read_jsonl, red_of
    from trtflow.video.pipeline import Pipeline, VideoConfig
    from trtflow.video.sources import open_sources

    model = mean_model(tmp_path / "mean.onnx")
    clip = tmp_path / "clip.mp4"
    pts = make_clip(clip, frames=24)
    out = tmp_path / "out.jsonl"
    slow, fast = _Slowed(mean_task(model), 0.2), _Slowed(mean_task(model), 0.0)
    config = VideoConfig(batch=2, jsonl=str(out))
    pipeline = Pipeline([slow, fast], open_sources([str(clip)], "cpu", {}, 10.0, None), config)
    summary = pipeline.run()
    assert summary.frames_out == 24
    records = read_jsonl(out)
    assert [r["frame"] for r in records] == list(range(24)) and [r["pts"] for r in records] == pts
    assert all(abs(r["mean"][0] - red_of(i)) < 6 for i, r in enumerate(records))  # each record is its own frame
    assert slow.batches + fast.batches == 12
    assert fast.batches > slow.batches >= 1  # the busy lane got fewer batches
    assert pipeline.router.in_flight == [0, 0]


def test_cli_video_gpus_on_the_cpu_is_an_error(tmp_path):
    pytest.importorskip("av")
    if visible_gpus() > 0:
        pytest.skip("checks the message on a machine without a CUDA GPU")
    from tests.test_video import make_clip

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=2)
    result = call_cli("video", clip, "--task", "face", "--engine", "ort", "--gpus", "0,1")
    assert result.returncode == 2
    assert "--gpus 0,1: GPU 0 does not exist; no CUDA GPU is visible" in result.stderr


def test_make_task_gpu_reaches_the_engine_load(tmp_path):
    from tests.test_video import mean_model
    from trtflow.tasks import make_task

    model = mean_model(tmp_path / "mean.onnx")
    with pytest.raises(UsageError, match="device=1 places the CUDA or TensorRT provider"):
        make_task("custom", str(model), engine="ort", gpu=1, providers=["cpu"], post="tests.test_video:post_mean")


def _mean_task_on(gpu: int):
    import torch

    from trtflow.tasks import make_task

    class Mean(torch.nn.Module):
        def forward(self, images):
            return images.mean(dim=(2, 3))

    engine = trtflow.load(Mean().eval(), "torch", example_inputs=[torch.rand(1, 3, 16, 16)], input_names=["images"],
                          output_names=["mean"], dynamic={"images": {0: "batch"}}, device=f"cuda:{gpu}")
    return make_task("custom", engine, post="tests.test_video:post_mean", resize="stretch", input_size=16,
                     device=f"cuda:{gpu}")


def _two_lanes(tmp_path, gpus):
    pytest.importorskip("av")
    from tests.test_video import make_clip, read_jsonl, red_of
    from trtflow.video.pipeline import Pipeline, VideoConfig
    from trtflow.video.sources import open_sources

    clips = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for i, clip in enumerate(clips):
        make_clip(clip, frames=16, stream=i)
    tasks = [_Slowed(_mean_task_on(g), 0.0) for g in gpus]
    out = tmp_path / "out.jsonl"
    pipeline = Pipeline(tasks, open_sources([str(c) for c in clips], "cpu", {}, 10.0, None),
                        VideoConfig(batch=2, jsonl=str(out)))
    assert pipeline.run().frames_out == 32
    records = read_jsonl(out)
    for stream in (0, 1):
        mine = [r for r in records if r["stream"] == stream]
        assert [r["frame"] for r in mine] == list(range(16))
        assert all(abs(r["mean"][0] - red_of(i)) < 6 for i, r in enumerate(mine))
    assert [str(lane.device) for lane in pipeline.lanes] == [f"cuda:{g}" for g in gpus]
    return [t.batches for t in tasks]


@pytest.mark.gpu
def test_video_two_lanes_on_one_gpu(tmp_path):
    batches = _two_lanes(tmp_path, [0, 0])
    assert sum(batches) == 16 and min(batches) >= 1


@pytest.mark.multi_gpu
def test_video_one_lane_per_gpu(tmp_path):
    batches = _two_lanes(tmp_path, [0, 1])
    assert sum(batches) == 16 and min(batches) >= 1


@pytest.mark.gpu
def test_make_task_gpu_0_loads_and_preprocesses_on_gpu_0():
    import torch

    from trtflow.tasks import make_task

    class Mean(torch.nn.Module):
        def forward(self, images):
            return images.mean(dim=(2, 3))

    task = make_task("custom", Mean().eval(), engine="torch", gpu=0, post="tests.test_video:post_mean",
                     resize="stretch", input_size=16, example_inputs=[torch.rand(1, 3, 16, 16)],
                     input_names=["images"], output_names=["mean"], dynamic={"images": {0: "batch"}})
    with task:
        assert str(task.engine.device) == "cuda:0" and str(task.device) == "cuda:0"
        frame = np.full((24, 32, 3), 100, np.uint8)
        assert abs(task.predict([frame])[0].to_dict()["mean"][0] - 100) < 2
