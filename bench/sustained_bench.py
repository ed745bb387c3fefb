"""Throughput of one torch engine over timing windows of growing length, with the GPU's clocks.

Usage::

    python3 bench/sustained_bench.py OUTDIR [--model resnet50] [--batch 256] [--windows 0.1,0.3,1,3,10]

ResNet-50 (random weights), FP16, channels-last, torch.compile + cuDNN fusions + CUDA graphs (the
configuration ``trtflow tune`` chooses for it), fed its own graph input buffer. Per window:
back-to-back replays timed with CUDA events (as ``bench/gpu_bench.py`` times them) and the SM
clock, power draw and temperature ``nvidia-smi`` reports right after. It tells whether a
short-window figure holds under sustained load. Writes OUTDIR/sustained_bench.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trtflow  # noqa: E402


def gpu_state() -> dict:
    query = "clocks.sm,clocks.max.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active"
    try:
        line = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits", "-i",
                               str(torch.cuda.current_device())], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}
    values = [v.strip() for v in line.strip().split(",")]
    return dict(zip(query.split(","), values))


def window(call, batch: int, seconds: float) -> dict:
    """Back-to-back calls for about ``seconds``, timed with CUDA events."""
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0 = time.perf_counter()
    start.record()
    calls = 0
    while time.perf_counter() - t0 < seconds or calls < 3:
        call()
        calls += 1
        if calls % 8 == 0:  # keep the host at most a few batches ahead of the GPU
            end.record()
            end.synchronize()
    end.record()
    end.synchronize()
    ms = start.elapsed_time(end)
    return {"seconds": round(ms / 1e3, 3), "calls": calls, "img_s": round(batch * calls / ms * 1e3, 1),
            "gpu": gpu_state()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--windows", default="0.1,0.3,1,3,10")
    ap.add_argument("--idle-s", type=float, default=5.0, help="idle time before each window")
    args = ap.parse_args()
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(weights=None).eval()
    shape = (args.batch, 3, 224, 224)
    t0 = time.perf_counter()
    engine = trtflow.load(model, engine="torch", example_inputs={"x": torch.randn(*shape)}, dtype="fp16",
                          keep_io_types=False, channels_last=True, compile="default", cuda_graphs=True, fuse=True)
    x = torch.randn(*shape, device=engine.device, dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    engine.infer({"x": x})
    torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    graph = engine._graphs[(x.shape,)]
    replay = graph.graph.replay
    rows = []
    for seconds in (float(s) for s in args.windows.split(",")):
        time.sleep(args.idle_s)
        rows.append({"window_s": seconds, "idle_before": gpu_state(), **window(replay, args.batch, seconds)})
        print(f"{seconds:>5.1f} s window: {rows[-1]['img_s']:>9,.0f} img/s  gpu {rows[-1]['gpu']}", flush=True)
    doc = {"model": args.model, "batch": args.batch, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "config": "fp16 compile+fused+graphs cl, FP16 I/O, fed the graph's own input buffer",
           "load_s": round(load_s, 1), "idle_s": args.idle_s, "rows": rows}
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sustained_bench.json").write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
