"""GPU benchmark of trtflow's torch engine: ResNet-50, FP16, channels-last, on one CUDA GPU.

Usage::

    python bench/gpu_bench.py OUTDIR [--quick] [--budget-s 500] [--skip VARIANT ...]

Everything runs through ``trtflow.load(model, engine="torch", ...)``. It measures, per variant
(eager, eager + CUDA graphs, torch.compile + CUDA graphs, reduce-overhead, max-autotune):
model-only throughput at batch 256 and 64 and batch-1 latency (inputs already on the GPU, CUDA
events); the host overhead of ``Engine.infer`` over calling the compiled module (or replaying its
graph) directly at batch 1; and an end-to-end pipeline at batch 64: uint8 480x640 HWC frames in
pinned host memory -> H2D on a copy stream -> GPU preprocessing -> model -> top-5 labels on the
host, with copies overlapping compute. The weights are torchvision's ResNet-50 with random
initialization (speed does not depend on the values). Writes OUTDIR/gpu_bench.json (every
figure), OUTDIR/gpu_bench.md (the table) and the trtexec-style summaries of ``trtflow.bench``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trtflow  # noqa: E402
from trtflow.bench import BenchConfig, run_bench, summary_text, write_json  # noqa: E402
from trtflow.backends.staging import PinnedRing  # noqa: E402
from trtflow.vision.imagenet import class_names  # noqa: E402
from trtflow.vision.preprocess import classify_preprocess  # noqa: E402

TARGETS = {"bs256_img_s": 30000, "bs1_latency_ms": 0.5, "infer_overhead_us": 20, "e2e_fraction": 0.90}
BASELINES = {"eager_fp16_bs256_img_s": 13583, "compile_reduce_overhead_bs256_img_s": 22830, "compile_bs1_ms": 0.70}
# name -> (compile mode, engine CUDA graphs, cuDNN conv fusions)
VARIANTS = {
    "eager": (None, False, False),
    "eager+graphs": (None, True, False),
    "fused+graphs": (None, True, True),
    "compile+graphs": ("default", True, False),
    "compile+fused+graphs": ("default", True, True),
    "reduce-overhead": ("reduce-overhead", False, False),
    "max-autotune+graphs": ("max-autotune", True, False),
}
CORE = ("eager", "compile+graphs", "fused+graphs", "compile+fused+graphs")  # always run; the rest while the budget lasts
FRAME = (480, 640, 3)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def resnet50():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


def load(mode, graphs, fuse=False):
    return trtflow.load(
        resnet50(), engine="torch", example_inputs={"x": torch.randn(2, 3, 224, 224)},
        dynamic={"x": {0: "batch"}}, min_shapes={"x": (1, 3, 224, 224)}, max_shapes={"x": (256, 3, 224, 224)},
        output_names=["logits"], dtype="fp16", channels_last=True, compile=mode, cuda_graphs=graphs, fuse=fuse,
    )


def images(batch: int) -> torch.Tensor:
    x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.float16)
    return x.contiguous(memory_format=torch.channels_last)


def warm(engine, x) -> tuple[object, float]:
    """First call (compile, autotune, capture) timed; returns the feed to time with (the graph's own
    input buffer when the engine replays graphs, so no copy is timed) and the seconds it took."""
    t0 = time.perf_counter()
    engine.infer({"x": x})
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    for _ in range(3):
        engine.infer({"x": x})
    graph = engine._graphs.get((x.shape,)) if engine.cuda_graphs else None
    return (graph.inputs["x"] if graph is not None else x), first


def gpu_throughput(call, batch: int, iters: int, repeats: int = 3) -> dict:
    """Back-to-back calls timed with CUDA events: median ms per call over ``repeats`` runs."""
    per_call = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            call()
        end.record()
        end.synchronize()
        per_call.append(start.elapsed_time(end) / iters)
    ms = statistics.median(per_call)
    return {"ms_per_batch": ms, "img_s": batch / ms * 1e3, "runs_ms": per_call, "iters": iters}


def sync_latency(call, rounds: int) -> dict:
    """One call then a device sync, timed on the host: what a single request waits."""
    times = []
    for _ in range(rounds):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        call()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "p99_ms": float(np.percentile(times, 99)), "rounds": rounds}


def host_time_us(call, calls: int, rounds: int) -> list[float]:
    """Host microseconds per call, ``calls`` calls per round between syncs (the GPU queue stays short)."""
    out = []
    for _ in range(rounds):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        out.append((time.perf_counter() - t0) / calls * 1e6)
    return out


def measure_variant(name: str, mode, graphs, fuse, quick: bool, batches=(256, 64, 1)) -> tuple[dict, object]:
    log(f"variant {name}: loading")
    t0 = time.perf_counter()
    engine = load(mode, graphs, fuse)
    result = {"compile": mode, "cuda_graphs": graphs, "fuse": fuse, "load_s": time.perf_counter() - t0, "batches": {}}
    plan = {256: 8 if quick else 40, 64: 20 if quick else 100, 1: 100 if quick else 500}
    for batch, iters in ((b, plan[b]) for b in batches):
        x = images(batch)
        feed, first = warm(engine, x)
        call = lambda: engine.infer({"x": feed})  # noqa: E731
        entry = {"first_call_s": first, **gpu_throughput(call, batch, iters)}
        if batch == 1:
            entry["sync_latency"] = sync_latency(call, 50 if quick else 300)
        result["batches"][batch] = entry
        log(f"  {name} bs{batch}: {entry['img_s']:.0f} img/s, {entry['ms_per_batch']:.3f} ms/batch "
            f"(first call {first:.1f} s)" + (f", sync latency {entry['sync_latency']['median_ms']:.3f} ms" if batch == 1 else ""))
    return result, engine


def accuracy(engine) -> dict:
    """FP16 engine vs the FP32 eager model on the same random images."""
    x = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.no_grad():
        ref = resnet50().cuda()(x).double()
    got = engine.infer({"x": x.half().contiguous(memory_format=torch.channels_last)})["logits"].double()
    return {"rel_l2": float((got - ref).norm() / ref.norm()),
            "top1_agree": float((got.argmax(1) == ref.argmax(1)).float().mean()),
            "finite": bool(torch.isfinite(got).all())}


def _paired(engine_call, direct_call, calls: int, rounds: int) -> dict:
    """Alternate rounds of the two calls; the median of the per-round differences and its spread."""
    eng_us, dir_us = [], []
    for _ in range(rounds):  # interleaved so drift (clocks, caches) hits both alike
        eng_us += host_time_us(engine_call, calls, 1)
        dir_us += host_time_us(direct_call, calls, 1)
    diff = [a - b for a, b in zip(eng_us, dir_us)]
    q1, q3 = np.percentile(diff, [25, 75])
    return {"engine_us": statistics.median(eng_us), "direct_us": statistics.median(dir_us),
            "overhead_us": statistics.median(diff), "overhead_iqr_us": [float(q1), float(q3)],
            "calls_per_round": calls, "rounds": rounds}


def overhead(engine, quick: bool) -> dict:
    """Host time of Engine.infer minus the direct call, batch 1, with and without the engine's graphs."""
    x = images(1)
    rounds = 60 if quick else 400
    out = {}
    engine.infer({"x": x})
    graph = engine._graphs.get((x.shape,))
    if graph is not None:
        static = graph.inputs["x"]

        def direct_replay():
            static.copy_(x)
            graph.graph.replay()

        out["graph_replay"] = _paired(lambda: engine.infer({"x": x}), direct_replay, 20, rounds)
    fn = engine.fn
    engine.cuda_graphs = False  # same engine, same compiled module, no graph: the plain call path
    try:
        engine.infer({"x": x})

        def direct_call():
            with torch.no_grad():
                fn(x)

        out["module_call"] = _paired(lambda: engine.infer({"x": x}), direct_call, 3, rounds)
    finally:
        engine.cuda_graphs = True
    return out


def end_to_end(engine, batch: int, iters: int, pre, source: str = "pinned", side: bool = True) -> dict:
    """uint8 HWC frames -> top-5 labels on the host, batch after batch, copies overlapping compute.

    Args:
        pre: uint8 NHWC device frames -> model input (``classify_preprocess``, eager or compiled).
        source: "pinned": frames sit in a ring of pinned host buffers, as a decoder writing into
            pinned memory leaves them; "pageable": each batch is first copied from ordinary numpy
            memory into the ring by 8 threads; "device": frames already on the GPU (no H2D; a
            diagnostic of preprocessing + model alone).
        side: run the H2D copy and the preprocessing on a side stream (the model's stream only
            waits for the finished input); else only the copy is on the side stream.
    """
    names = class_names()
    ring = PinnedRing((batch, *FRAME), torch.uint8, "cuda", n=3)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (batch, *FRAME), dtype=np.uint8)
    for i in range(len(ring)):
        ring.host(i).numpy()[:] = frames
        ring.upload(i, torch.cuda.current_stream())
    torch.cuda.synchronize()
    pool = ThreadPoolExecutor(8)
    chunks = np.array_split(np.arange(batch), 8)
    copy, compute = torch.cuda.Stream(), torch.cuda.Stream()
    n = len(ring)
    tops = [torch.empty((batch, 5), dtype=torch.int64, pin_memory=True) for _ in range(n)]
    done = [torch.cuda.Event() for _ in range(n)]
    ready = [torch.cuda.Event() for _ in range(n)]
    labels: list[list[str]] = []

    def fill(i):
        host = ring.host(i).numpy()
        list(pool.map(lambda idx: np.copyto(host[idx[0]: idx[-1] + 1], frames[idx[0]: idx[-1] + 1]), chunks))

    def step(i):
        k = i % n
        if source == "pageable":
            fill(i)
        if source == "device":
            dev = ring.slots[k].device
        else:
            dev = ring.upload(i, copy)
        if side and source != "device":
            with torch.cuda.stream(copy):
                x = pre(dev)
                ring.release(i, copy)
                ready[k].record(copy)
            x.record_stream(compute)
            compute.wait_event(ready[k])
        elif source != "device":
            ring.ready(i, compute)
        with torch.cuda.stream(compute):
            if not side or source == "device":
                x = pre(dev)
                ring.release(i, compute)
            logits = engine.infer({"x": x})["logits"]
            tops[k].copy_(logits.topk(5, dim=1).indices, non_blocking=True)
            done[k].record(compute)

    def collect(i):
        done[i % n].synchronize()
        labels[:] = [[names[j] for j in row] for row in tops[i % n].tolist()]

    for i in range(6):  # warm-up: preprocessing kernels, the graph for this batch
        step(i)
        collect(i)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(iters):
        step(i)
        if i:
            collect(i - 1)
    collect(iters - 1)
    wall = time.perf_counter() - t0
    pool.shutdown()
    return {"img_s": batch * iters / wall, "batches": iters, "batch": batch, "source": source,
            "side_stream_preprocessing": side, "example_labels": labels[0]}


def preprocess_ms(pre, batch: int = 64) -> float:
    """GPU time of one preprocessing call on device frames (CUDA events, median of 5 x 10 calls)."""
    frames = torch.randint(0, 256, (batch, *FRAME), dtype=torch.uint8, device="cuda")
    return gpu_throughput(lambda: pre(frames), batch, 10, repeats=5)["ms_per_batch"]


def environment() -> dict:
    env = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
           "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
           "gpu": torch.cuda.get_device_name(), "command": " ".join(sys.argv)}
    try:
        env["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def table(results: dict) -> str:
    rows = ["| variant | bs256 img/s | bs64 img/s | bs1 ms (GPU, back-to-back) | bs1 ms (call + sync) | first call bs256 s |",
            "|---|---|---|---|---|---|"]
    for name, v in results["variants"].items():
        if "batches" not in v:
            rows.append(f"| {name} | {(v.get('error') or v.get('skipped') or '?')[:70]} | | | | |")
            continue
        b = v["batches"]
        cells = [f"{b[256]['img_s']:,.0f}" if 256 in b else "-", f"{b[64]['img_s']:,.0f}" if 64 in b else "-",
                 f"{b[1]['ms_per_batch']:.3f}" if 1 in b else "-",
                 f"{b[1]['sync_latency']['median_ms']:.3f}" if 1 in b else "-",
                 f"{b[256]['first_call_s']:.1f}" if 256 in b else "-"]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    lines = ["\n".join(rows), ""]
    if "best" in results:
        lines.append(f"- figures below use the fastest variant at batch 256 among those with CUDA graphs: {results['best']}")
    for key, o in results.get("overhead", {}).items():
        iqr = o.get("overhead_iqr_us", [float("nan")] * 2)
        lines.append(f"- Engine.infer overhead at batch 1 ({key}): {o['overhead_us']:.1f} us, IQR {iqr[0]:.1f}..{iqr[1]:.1f} us "
                     f"(engine {o['engine_us']:.1f} us vs direct {o['direct_us']:.1f} us per call, host time)")
    for key, e in results.get("e2e", {}).items():
        if "img_s" in e:
            lines.append(f"- end-to-end batch {e['batch']} ({key}): {e['img_s']:,.0f} img/s = "
                         f"{e['fraction_of_model_only']:.1%} of model-only batch 64 ({e['model_only_img_s']:,.0f} img/s)")
    for key, ms in results.get("preprocess_ms_bs64", {}).items():
        lines.append(f"- {key} alone, batch 64 of 480x640 frames: {ms:.3f} ms on the GPU")
    for key, diff in results.get("preprocessing_max_abs_diff_vs_fp32", {}).items():
        lines.append(f"- {key} vs float32 eager preprocessing: max abs difference {diff:.3g}")
    if "accuracy" in results:
        a = results["accuracy"]
        lines.append(f"- FP16 engine vs FP32 eager: relative L2 error {a['rel_l2']:.2e}, top-1 agreement {a['top1_agree']:.0%}")
    for name, k in results.get("kernel_split", {}).items():
        parts = ", ".join(f"{fam} {ms:.2f} ms" for fam, ms in sorted(k["ms_per_batch"].items(), key=lambda kv: -kv[1]))
        lines.append(f"- GPU time per batch {k['batch']} by kernel family ({name}): {parts}")
    return "\n".join(lines)


def preprocessors() -> dict:
    """Eager and compiled (one fused kernel reading only the pixels it needs) classification preprocessing."""
    def eager(frames):
        return classify_preprocess(frames, 224, 256, "float16")

    pres = {"eager preprocessing": eager, "compiled preprocessing": torch.compile(eager, dynamic=False)}
    try:
        from trtflow.vision.fused import classify_preprocess_fused

        pres["fused preprocessing"] = classify_preprocess_fused
    except ImportError:
        pass
    return pres


def kernel_split(engine, batch: int = 256) -> dict:
    """GPU time per batch by kernel family (torch.profiler over the engine's module, no graph)."""
    from torch.profiler import ProfilerActivity, profile

    x = images(batch)
    for _ in range(2):
        engine._run({"x": x})
    torch.cuda.synchronize()
    runs = 3
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            engine._run({"x": x})
        torch.cuda.synchronize()
    split: dict[str, float] = {}
    for event in prof.key_averages():
        us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if not us or event.key.startswith(("ProfilerStep", "cudaGraph")):
            continue
        name = event.key.lower()
        if "triton" in name:
            family = "fused pointwise / pooling (Triton)"
        elif any(k in name for k in ("conv", "xmma", "implicit", "cudnn", "sm90", "sm80", "gemm", "cutlass", "nhwc")):
            family = "convolution / GEMM (cuDNN, cuBLAS)"
        else:
            family = "other"
        split[family] = split.get(family, 0.0) + us / 1e3 / runs
    return {"batch": batch, "ms_per_batch": split}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--quick", action="store_true", help="few iterations, core variants only")
    parser.add_argument("--budget-s", type=float, default=500, help="skip optional variants past this many seconds")
    parser.add_argument("--skip", action="append", default=[], help="variants to leave out")
    parser.add_argument("--with-autotune", action="store_true", help="also run torch.compile max-autotune (slow)")
    parser.add_argument("--e2e-only", action="store_true",
                        help="only the fastest variant at batch 64 and the end-to-end pipelines")
    args = parser.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict = {"environment": environment(), "targets": TARGETS, "baselines": BASELINES, "variants": {}}

    def save():
        (args.outdir / "gpu_bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        try:
            (args.outdir / "gpu_bench.md").write_text(table(results) + "\n")
        except Exception:
            pass

    def run_variant(name, batches=(256, 64, 1)):
        if name in args.skip:
            return None
        try:
            result, engine = measure_variant(name, *VARIANTS[name], args.quick, batches)
        except Exception as exc:
            traceback.print_exc()
            results["variants"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            save()
            return None
        results["variants"][name] = result
        save()
        return engine

    log(f"{results['environment']['gpu']}, torch {torch.__version__}")
    engines = {}
    for name in (["compile+fused+graphs"] if args.e2e_only else CORE):
        engine = run_variant(name, (64,) if args.e2e_only else (256, 64, 1))
        if engine is not None and VARIANTS[name][1]:
            engines[name] = engine
        elif engine is not None:
            del engine
    if not engines:
        return 1
    best = max(engines, key=lambda n: results["variants"][n]["batches"][64 if args.e2e_only else 256]["img_s"])
    engine = engines[best]
    results["best"] = best
    log(f"best variant with graphs: {best}")

    def attempt(key, fn):
        try:
            results[key] = fn()
            log(f"  {key}: {results[key]}")
        except Exception as exc:
            traceback.print_exc()
            results[key + "_error"] = f"{type(exc).__name__}: {exc}"
        save()

    if not args.e2e_only:
        attempt("accuracy", lambda: accuracy(engine))
        attempt("overhead", lambda: overhead(engine, args.quick))
        attempt("kernel_split", lambda: {n: kernel_split(e) for n, e in engines.items()})
    model64 = results["variants"][best]["batches"][64]["img_s"]
    results["e2e"] = {}
    pres = preprocessors()
    check = torch.randint(0, 256, (64, *FRAME), dtype=torch.uint8, device="cuda")
    reference = classify_preprocess(check, 224, 256, "float32")
    attempt("preprocessing_max_abs_diff_vs_fp32", lambda: {
        k: float((p(check).float() - reference).abs().max()) for k, p in pres.items()})
    attempt("preprocess_ms_bs64", lambda: {k: preprocess_ms(p) for k, p in pres.items()})
    cases = [
        ("pinned ring, preprocessing on the model stream, eager", "eager preprocessing", "pinned", False),
        ("pinned ring, preprocessing on the model stream, compiled", "compiled preprocessing", "pinned", False),
        ("pinned ring, H2D + preprocessing on a side stream, compiled", "compiled preprocessing", "pinned", True),
        ("pageable source + 8 copy threads, side stream, compiled", "compiled preprocessing", "pageable", True),
        ("frames already on the GPU (diagnostic), compiled", "compiled preprocessing", "device", False),
        ("pinned ring, preprocessing on the model stream, fused kernel", "fused preprocessing", "pinned", False),
        ("pinned ring, H2D + preprocessing on a side stream, fused kernel", "fused preprocessing", "pinned", True),
        ("frames already on the GPU (diagnostic), fused kernel", "fused preprocessing", "device", False),
    ]
    cases = [c for c in cases if c[1] in pres]
    for key, pre, source, side in cases:
        try:
            e = end_to_end(engine, 64, 30 if args.quick else 150, pres[pre], source, side)
        except Exception as exc:
            traceback.print_exc()
            results["e2e"][key] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        e["model_only_img_s"] = model64
        e["fraction_of_model_only"] = e["img_s"] / model64
        results["e2e"][key] = e
        log(f"  e2e {key}: {e['img_s']:.0f} img/s ({e['fraction_of_model_only']:.1%} of model-only)")
    save()
    for batch in () if args.e2e_only else (256, 1):
        try:
            feed = {"x": np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float16)}
            bench = run_bench(engine, feed, BenchConfig(iterations=20, duration_s=1.0 if args.quick else 2.0,
                                                        warmup_ms=200, data_transfers=True))
            write_json(bench, args.outdir / f"trtflow_bench_bs{batch}.json")
            (args.outdir / f"trtflow_bench_bs{batch}.txt").write_text(summary_text(bench) + "\n")
            log("\n" + summary_text(bench))
        except Exception:
            traceback.print_exc()
    save()
    for name in engines:
        if name != best:
            engines[name] = None
    torch.cuda.empty_cache()
    if not args.quick and not args.e2e_only:
        optional = [("reduce-overhead", (256, 64, 1), 0.6), ("eager+graphs", (256, 64, 1), 0.7)]
        if args.with_autotune:  # autotunes every convolution: several minutes at batch 256 alone on an H100
            optional.append(("max-autotune+graphs", (256,), 0.55))
        for name, batches, share in optional:
            elapsed = time.perf_counter() - start
            if elapsed > args.budget_s * share:
                log(f"skipping {name}: {elapsed:.0f} s spent of a {args.budget_s:.0f} s budget")
                results["variants"][name] = {"skipped": f"time budget ({elapsed:.0f} s spent)"}
                save()
                continue
            run_variant(name, batches)
            torch.cuda.empty_cache()
    results["total_s"] = time.perf_counter() - start
    save()
    print(table(results), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
