"""Several GPUs on one host: one engine per GPU in ``bench``, ``serve`` and ``video``, on 1 vs N GPUs.

    python bench/multi_gpu_bench.py OUTDIR [--gpus 0,1] [--only model,serve,video] [--budget-s 480]

Three measurements, each on the first GPU alone and then on every GPU of ``--gpus``:

- model only: ResNet-50 (torchvision, random weights) on the torch engine, FP16, channels-last,
  cuDNN fusions, CUDA graphs, batch ``--batch`` (256), inputs already on the GPU, no copies timed
  (``trtflow bench --noDataTransfers``); one copy per GPU run concurrently with
  ``trtflow.bench.run_multi``, throughput summed. Goal: N GPUs >= 0.95 * N x one GPU.
- served: the same engine behind ``trtflow.serve`` (HTTP, binary tensors, dynamic batching up
  to ``--max-batch``), ``--instances-per-gpu`` instances per GPU placed round-robin
  (``trtflow.backends.devices.place``), ``--workers`` server processes, batch-1 requests from
  ``--clients`` (256) closed-loop clients in ``--loadgen-processes`` processes
  (``trtflow.serve.loadgen``, as bench/serve_bench.py).
- video: two 1080p H.264 streams (Big Buck Bunny looped, as bench/video_bench.py) through the
  detect task (a YOLOv8-layout detector with random weights, torch engine, FP16, CUDA graphs):
  both streams on one GPU (one lane), both streams with one lane per GPU (``trtflow video
  --gpus``: batches to the least-loaded lane), and one pipeline per GPU with one stream each.

Writes OUTDIR/multi_gpu_bench.json (every figure, written after each part) and
OUTDIR/multi_gpu_bench.md (the table).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def resnet_engine(max_batch: int, gpu: int):
    import torch
    import torchvision

    import trtflow

    torch.manual_seed(0)
    return trtflow.load(
        torchvision.models.resnet50(weights=None).eval(), engine="torch", example_inputs={"x": torch.randn(2, 3, 224, 224)},
        dynamic={"x": {0: "batch"}}, min_shapes={"x": (1, 3, 224, 224)}, max_shapes={"x": (max_batch, 3, 224, 224)},
        output_names=["logits"], dtype="fp16", channels_last=True, cuda_graphs=True, fuse=True,
        max_graphs=max_batch + 1, device=f"cuda:{gpu}",
    )


# -- model only ---------------------------------------------------------------------------------
def model_only(gpus: list[int], batch: int, duration: float) -> dict:
    from trtflow.bench import BenchConfig, multi_to_dict, run_multi

    engines = [resnet_engine(batch, g) for g in gpus]
    feed = {"x": np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float16)}
    config = BenchConfig(iterations=50, duration_s=duration, warmup_ms=1000, data_transfers=False)
    out = {}
    for label, chosen in (("1", engines[:1]), (str(len(engines)), engines)):
        record = multi_to_dict(run_multi(chosen, feed, config))
        record.pop("runs")
        out[label] = record
        per = ", ".join(f"{g['device']}: {g['inferences_per_s']:.0f}" for g in record["gpus"])
        log(f"  model only on {label} GPU(s): {record['total']['inferences_per_s']:.0f} img/s ({per})")
    for e in engines:
        e.close()
    out["scaling"] = out[str(len(engines))]["total"]["inferences_per_s"] / out["1"]["total"]["inferences_per_s"]
    return out


# -- served -------------------------------------------------------------------------------------
def child(args) -> None:
    """One server process: instances placed round-robin over --child-gpus, every batch size captured."""
    from serve_bench import warm_all_sizes

    from trtflow.backends.devices import place
    from trtflow.serve.model import BatchConfig, ServedModel
    from trtflow.serve.server import ServeOptions, serve

    gpus = [int(g) for g in args.child_gpus.split(",")]
    engines = [resnet_engine(args.max_batch, g) for g in place(args.instances_per_gpu * len(gpus), gpus)]
    for e in engines:
        warm_all_sizes(e, args.max_batch)
    model = ServedModel("resnet50", engines, BatchConfig(args.max_batch, args.delay_us, max_queue=8192, timeout_s=60))
    opts = ServeOptions("127.0.0.1", args.port, None, 64 << 20, 10.0, "KIND_GPU", reuse_port=args.workers > 1)
    serve([model], opts, on_ready=lambda s: print(json.dumps({"ready": s.http_port}), flush=True))


def served(gpus: list[int], args) -> dict:
    from serve_bench import free_port, measure_levels, start_servers, stop_servers

    out = {}
    for label, chosen in (("1", gpus[:1]), (str(len(gpus)), gpus)):
        port = free_port()
        cmd = [sys.executable, __file__, "--child", "--port", str(port), "--max-batch", str(args.max_batch),
               "--delay-us", str(args.delay_us), "--instances-per-gpu", str(args.instances_per_gpu),
               "--workers", str(args.workers), "--child-gpus", ",".join(map(str, chosen))]
        log(f"  serving on GPU(s) {chosen}: {args.workers} process(es), {args.instances_per_gpu} instance(s) per GPU each")
        t0 = time.perf_counter()
        procs = start_servers([cmd] * args.workers)
        log(f"  ready after {time.perf_counter() - t0:.1f} s")
        try:
            levels = measure_levels(port, "resnet50", [args.clients], args.duration, args.warmup, args.loadgen_processes)
        finally:
            stop_servers(procs)
        out[label] = {"gpus": chosen, "levels": levels}
    n = str(len(gpus))
    out["scaling"] = out[n]["levels"][0]["throughput"] / out["1"]["levels"][0]["throughput"]
    return out


# -- video --------------------------------------------------------------------------------------
def detect_task(gpu: int):
    import torch
    from video_bench import INPUT, detect_module

    import trtflow
    from trtflow.tasks import make_task

    example = torch.rand(1, 3, 640, 640)
    engine = trtflow.load(detect_module(), "torch", example_inputs=[example], input_names=["images"],
                          output_names=["output0"], dynamic={"images": {0: "batch"}}, dtype="fp16",
                          cuda_graphs=True, device=f"cuda:{gpu}")
    return make_task("detect", engine, format="yolov8", input_size=INPUT["detect"], device=f"cuda:{gpu}")


def video(gpus: list[int], args, scratch: Path) -> dict:
    from video_bench import make_clip, source_clip

    from trtflow.video import VideoConfig, run_video
    from trtflow.video.pipeline import Pipeline
    from trtflow.video.sources import open_sources

    clip = make_clip(source_clip(None), 1080, args.frames, scratch)
    tasks = [detect_task(g) for g in gpus]
    clips = [str(clip)] * 2

    def config(i: int = 0) -> VideoConfig:
        return VideoConfig(batch=args.video_batch, decode=args.decode, jsonl=str(scratch / f"video{i}.jsonl"))

    def row(summary) -> dict:
        return {"frames": summary.frames_out, "wall_s": summary.wall_s, "fps": summary.fps,
                "bottleneck": summary.bottleneck, "stages": {k: v["fps"] for k, v in summary.stages.items()}}

    out: dict = {"clip": str(clip), "frames_per_stream": args.frames, "decode": args.decode}
    for t in tasks:  # capture the CUDA graphs before timing
        t.predict([np.zeros((1080, 1920, 3), np.uint8)] * args.video_batch)
    out["two_streams_one_gpu"] = row(run_video(clips, tasks[0], config()))
    log(f"  2 streams, 1 GPU: {out['two_streams_one_gpu']['fps']:.1f} frames/s")
    lanes = Pipeline(tasks, open_sources(clips, args.decode, {}, 10.0, None), config())
    out["two_streams_lanes"] = row(lanes.run())
    out["two_streams_lanes"]["lanes"] = len(tasks)
    log(f"  2 streams, one lane per GPU ({len(tasks)}): {out['two_streams_lanes']['fps']:.1f} frames/s")
    results: list = [None] * len(tasks)

    def one(i: int) -> None:
        results[i] = run_video([str(clip)], tasks[i], config(i))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(min(2, len(tasks)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    frames = sum(r.frames_out for r in results if r is not None)
    out["one_pipeline_per_gpu"] = {"frames": frames, "wall_s": wall, "fps": frames / wall,
                                   "per_pipeline_fps": [r.fps for r in results if r is not None]}
    log(f"  one pipeline per GPU, one stream each: {out['one_pipeline_per_gpu']['fps']:.1f} frames/s")
    for t in tasks:
        t.close()
    out["scaling_lanes"] = out["two_streams_lanes"]["fps"] / out["two_streams_one_gpu"]["fps"]
    return out


# -- report -------------------------------------------------------------------------------------
def table(result: dict) -> str:
    n = len(result["gpus"])
    lines = [f"GPUs {result['gpus']} ({result['environment'].get('gpu', '?')} x {result['environment'].get('gpu_count')})", "",
             "| measurement | 1 GPU | " + f"{n} GPUs | scaling |", "|---|---|---|---|"]
    m = result.get("model_only")
    if m:
        lines.append(f"| ResNet-50 FP16 model only, batch {result['config']['batch']} (img/s) | "
                     f"{m['1']['total']['inferences_per_s']:.0f} | {m[str(n)]['total']['inferences_per_s']:.0f} | "
                     f"{m['scaling']:.2f}x |")
    s = result.get("served")
    if s:
        one, many = s["1"]["levels"][0], s[str(n)]["levels"][0]
        lines.append(f"| served, {result['config']['clients']} clients (req/s; p99 ms) | {one['throughput']:.0f}; "
                     f"{one['p99']:.1f} | {many['throughput']:.0f}; {many['p99']:.1f} | {s['scaling']:.2f}x |")
    v = result.get("video")
    if v:
        lines.append(f"| 2 x 1080p streams, detect, one pipeline (frames/s) | {v['two_streams_one_gpu']['fps']:.1f} | "
                     f"{v['two_streams_lanes']['fps']:.1f} (lanes) | {v['scaling_lanes']:.2f}x |")
        lines.append(f"| 2 x 1080p streams, one pipeline per GPU (frames/s) | | {v['one_pipeline_per_gpu']['fps']:.1f} | |")
    for part, why in result.get("errors", {}).items():
        lines.append(f"\n{part} failed: {why}")
    return "\n".join(lines)


def environment() -> dict:
    import platform

    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "gpu_count": torch.cuda.device_count()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, nargs="?")
    parser.add_argument("--gpus", default="all", help="GPUs to compare against the first one (default: all)")
    parser.add_argument("--only", default="model,serve,video", help="parts to run, comma-separated")
    parser.add_argument("--batch", type=int, default=256, help="model-only batch (default: %(default)s)")
    parser.add_argument("--bench-s", type=float, default=5.0, help="seconds per model-only run")
    parser.add_argument("--max-batch", type=int, default=64, help="server max batch (default: %(default)s)")
    parser.add_argument("--delay-us", type=int, default=0)
    parser.add_argument("--instances-per-gpu", type=int, default=1)
    parser.add_argument("--workers", type=int, default=4, help="server processes (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--loadgen-processes", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per served level")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--frames", type=int, default=600, help="frames per video stream (default: %(default)s)")
    parser.add_argument("--video-batch", type=int, default=16)
    parser.add_argument("--decode", choices=("cpu", "nvdec"), default="cpu")
    parser.add_argument("--budget-s", type=float, default=480, help="start no further part after this many seconds")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-gpus", default="0", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    if args.outdir is None:
        parser.error("OUTDIR is required")
    from trtflow.backends.devices import parse_gpus, visible_gpus

    gpus = parse_gpus(args.gpus, visible_gpus())
    args.outdir.mkdir(parents=True, exist_ok=True)
    scratch = args.outdir / "scratch"
    scratch.mkdir(exist_ok=True)
    result: dict = {"gpus": gpus, "environment": environment(), "config": {k: v for k, v in vars(args).items()
                                                                           if k not in ("child", "child_gpus", "port")},
                    "errors": {}}
    result["config"]["outdir"] = str(args.outdir)
    parts = {"model": ("model_only", lambda: model_only(gpus, args.batch, args.bench_s)),
             "serve": ("served", lambda: served(gpus, args)),
             "video": ("video", lambda: video(gpus, args, scratch))}
    start = time.perf_counter()
    for name in args.only.split(","):
        if time.perf_counter() - start > args.budget_s:
            log(f"skipping {name}: past --budget-s")
            continue
        key, fn = parts[name]
        log(f"{key} on GPU {gpus[0]} vs GPUs {gpus}")
        try:
            result[key] = fn()
        except Exception as exc:  # keep what the other parts measured
            result["errors"][key] = f"{type(exc).__name__}: {exc}"
            log(f"  {key} failed: {result['errors'][key]}")
        (args.outdir / "multi_gpu_bench.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    text = table(result)
    (args.outdir / "multi_gpu_bench.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
