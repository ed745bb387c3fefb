"""GPU benchmark of ``trtflow.tune`` on the torch engine against plain torch.compile and eager.

Usage::

    TRTFLOW_CACHE_DIR=/tmp/trtflow-cache python bench/tune_bench.py OUTDIR [--budget-s 380]
        [--runs resnet50:256,vit_b_16:64,...] [--tune-budget-s 75]

Per model and batch, in one process on one CUDA GPU, every figure timed by ``trtflow.bench.run_bench``
(CUDA events, inputs already on the GPU, 1 s of queries after warm-up):

* eager: plain PyTorch, FP16, channels-last;
* plain ``torch.compile(mode="reduce-overhead")`` and ``mode="max-autotune-no-cudagraphs"`` (the latter
  only while the budget lasts: its autotuning takes minutes), FP16, channels-last;
* ``trtflow.tune(model, engine="torch", precisions=("fp16",))`` and, where a lower precision applies
  (FP8 GEMMs on Hopper for ViT), ``precisions=("fp16", "fp8")``: the chosen configuration's throughput
  and tune's own wall time.

Weights are torchvision's random initialization (no download here); tune re-estimates batch-norm
statistics on its inputs before comparing (see docs/tune.md), and accepts max |out - FP32| <= 3 % of
max |FP32| on 256 random inputs (``--rtol``; with random weights the top-1 class is often a near tie and
rounding grows through the layers: 3 % rejected every FP16 ResNet-50 configuration in a first run). Writes OUTDIR/tune_bench.json after every model (partial results
survive a time limit) and OUTDIR/tune_bench.md, the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trtflow.bench import BenchConfig, run_bench  # noqa: E402
from trtflow.bench.report import summarize, throughput  # noqa: E402
from trtflow.spec import TensorSpec  # noqa: E402

MODELS = ("resnet50", "mobilenet_v3_large", "vit_b_16", "efficientnet_b0", "convnext_tiny", "regnet_y_1_6gf")
# most telling first, so a short budget still covers every architecture at one batch
RUNS = ("resnet50:256", "mobilenet_v3_large:64", "vit_b_16:64", "efficientnet_b0:64", "convnext_tiny:64",
        "regnet_y_1_6gf:64", "resnet50:64", "mobilenet_v3_large:256", "vit_b_16:256", "efficientnet_b0:256",
        "convnext_tiny:256", "regnet_y_1_6gf:256")
LOWER = {"vit_b_16": ("fp16", "fp8")}  # precisions beyond FP16 worth trying per model
# tune's candidates here: CUDA graphs everywhere (eager, cuDNN fusions, compile), the reduce-overhead mode;
# max-autotune is left out (minutes of autotuning per model and batch)
ONLY = ["*eager+graphs cl", "*eager+graphs", "*fused+graphs*", "*compile+graphs*", "*reduce-overhead*"]
RTOL = 0.1  # accepted: max |out - FP32| <= 10 % of max |FP32 logit|: random deep nets amplify rounding (see docs/tune.md)
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


class Plain:
    """A plain callable behind the bits of the engine contract ``run_bench`` uses."""

    def __init__(self, name, fn, batch):
        self.name, self.fn, self.device = name, fn, torch.device("cuda", torch.cuda.current_device())
        self.inputs = [TensorSpec("x", "float16", (batch, 3, 224, 224))]

    def infer(self, feed):
        with torch.inference_mode():
            return {"y": self.fn(feed["x"].contiguous(memory_format=torch.channels_last))}


def timed(engine, batch, seconds=1.0) -> dict:
    feed = {"x": torch.randn(batch, 3, 224, 224).numpy()}
    result = run_bench(engine, feed, BenchConfig(iterations=10, duration_s=seconds, warmup_ms=200, data_transfers=False))
    lat = summarize(result)["latency"]
    return {"img_s": throughput(result)["inferences_per_s"], "p50_ms": lat.median, "p99_ms": lat.p99}


def model_of(name):
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def plain(name, mode, batch) -> dict:
    m = model_of(name).cuda().half().to(memory_format=torch.channels_last)
    fn = m if mode is None else torch.compile(m, mode=mode)
    x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for _ in range(3):
            fn(x)
    torch.cuda.synchronize()
    out = {"compile_s": time.perf_counter() - t0, **timed(Plain(mode or "eager", fn, batch), batch)}
    del fn, m
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    return out


def tuned(name, batch, precisions, budget_s, rtol) -> dict:
    import trtflow
    from trtflow.tune import TuneOptions

    opts = TuneOptions(short_s=0.25, full_s=1.0, warmup_ms=100, accuracy_samples=256, only=ONLY)
    t0 = time.perf_counter()
    result = trtflow.tune(model_of(name), shapes={"x": (batch, 3, 224, 224)}, engine="torch", precisions=precisions,
                         metric="relative", rtol=rtol, budget_s=budget_s, options=opts)
    best = result.best
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    return {"chosen": result.chosen, "img_s": best.throughput, "p50_ms": best.p50_ms, "p99_ms": best.p99_ms,
            "tune_wall_s": time.perf_counter() - t0, "notes": result.notes,
            "configs": [c.to_dict() for c in result.configs]}


def write(out: Path, rows: list, meta: dict) -> None:
    (out / "tune_bench.json").write_text(json.dumps({**meta, "rows": rows}, indent=2, default=str) + "\n")
    lines = ["| model | batch | eager img/s | reduce-overhead | max-autotune-no-cg | tuned FP16 (chosen) | tuned best precision (chosen) | tuned / best plain | tune wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def f(key):
            v = r.get(key) or {}
            return f"{v['img_s']:,.0f}" if v.get("img_s") else (v.get("error", "-")[:40] if v else "-")
        best_plain = max([(r.get(k) or {}).get("img_s") or 0 for k in ("reduce-overhead", "max-autotune-no-cudagraphs")])
        best_tuned = max([(r.get(k) or {}).get("img_s") or 0 for k in ("tuned_fp16", "tuned_best")])
        ratio = f"{best_tuned / best_plain:.2f}x" if best_plain and best_tuned else "-"
        t16, tb = r.get("tuned_fp16") or {}, r.get("tuned_best") or {}
        walls = "+".join(f"{t['tune_wall_s']:.0f}" for t in (t16, tb) if t.get("tune_wall_s"))
        lines.append(f"| {r['model']} | {r['batch']} | {f('eager')} | {f('reduce-overhead')} | {f('max-autotune-no-cudagraphs')} | "
                     f"{f('tuned_fp16')} ({t16.get('chosen', '-')}) | {f('tuned_best')} ({tb.get('chosen', '-')}) | {ratio} | {walls or '-'} |")
    (out / "tune_bench.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--budget-s", type=float, default=380)
    ap.add_argument("--runs", default=",".join(RUNS), help="MODEL:BATCH pairs in the order to run them")
    ap.add_argument("--tune-budget-s", type=float, default=75)
    ap.add_argument("--rtol", type=float, default=RTOL, help="tune's bound: max |out - FP32| <= RTOL * max |FP32|")
    ap.add_argument("--no-max-autotune", action="store_true", help="skip the plain max-autotune-no-cudagraphs baseline")
    ap.add_argument("--max-autotune-min-left-s", type=float, default=400,
                    help="run the plain max-autotune-no-cudagraphs baseline only with this much budget left")
    args = ap.parse_args()
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "gpu": torch.cuda.get_device_name(),
            "torch": torch.__version__, "python": platform.python_version(), "argv": sys.argv,
            "cache_dir": os.environ.get("TRTFLOW_CACHE_DIR")}
    rows: list = []
    left = lambda: args.budget_s - (time.perf_counter() - T0)  # noqa: E731
    for name, batch in ((r.split(":")[0], int(r.split(":")[1])) for r in args.runs.split(",")):
        if True:
            if left() < 30:
                log(f"budget spent; {name} batch {batch} not run")
                rows.append({"model": name, "batch": batch, "skipped": "budget"})
                continue
            row = {"model": name, "batch": batch}
            rows.append(row)
            steps = [("eager", lambda: plain(name, None, batch)),
                     ("reduce-overhead", lambda: plain(name, "reduce-overhead", batch)),
                     ("tuned_fp16", lambda: tuned(name, batch, ("fp16",), min(args.tune_budget_s, max(left() - 20, 20)), args.rtol))]
            if name in LOWER:
                steps.append(("tuned_best", lambda: tuned(name, batch, LOWER[name], min(args.tune_budget_s, max(left() - 20, 20)), args.rtol)))
            steps.append(("max-autotune-no-cudagraphs", lambda: plain(name, "max-autotune-no-cudagraphs", batch)))
            for key, step in steps:
                if key.startswith("max-autotune") and (args.no_max_autotune or left() < args.max_autotune_min_left_s):
                    row[key] = {"error": f"not run: {left():.0f} s of budget left"}
                    continue
                if left() < 15:
                    row[key] = {"error": "not run: budget"}
                    continue
                log(f"{name} b{batch} {key} ...")
                try:
                    row[key] = step()
                    log(f"{name} b{batch} {key}: {row[key].get('img_s') or 0:,.0f} img/s {row[key].get('chosen', '')}")
                except Exception as exc:  # keep going: one failing step must not lose the rest
                    row[key] = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
                    if isinstance(getattr(exc, "report", None), list):  # tune's MismatchError: every configuration
                        row[key]["configs"] = [c.to_dict() for c in exc.report]
                    log(f"{name} b{batch} {key} failed: {row[key]['error']}")
                    traceback.print_exc()
                    torch._dynamo.reset()
                    torch.cuda.empty_cache()
                write(out, rows, meta)
    write(out, rows, meta)
    print((out / "tune_bench.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
