"""Variants of tune's ``compile+fused+graphs cl`` torch engine (FP16, channels-last), timed side by side.

Usage::

    python3 bench/variants_bench.py OUTDIR [--runs resnet50:256] [--variants base,cdt,nopad,nofuse+mm1x1]
        [--cudnn-benchmark-limit N] [--profile] [--stop-s 450]

A variant is ``base`` or modifiers joined by ``+``:

- ``cdt``: Inductor's coordinate-descent tuning (tune's ``+cdt`` configurations).
- ``nopad``: without the fusions' padding of 3 input channels to 4 (``fuse.PAD_TO``); ``pad8``: to 8.
- ``nomove``: without the fusions' move of a residual convolution's bias into the fused one.
- ``nofuse``: no cuDNN fusions; Inductor's freezing folds the batch norms and generates the ReLUs.
- ``mm1x1``: Inductor runs 1x1 convolutions as matrix multiplies (``conv_1x1_as_mm``; with ``nofuse``,
  since fused convolutions are opaque to Inductor).
- ``gemmtune``: Inductor autotunes its matrix multiplies (``max_autotune_gemm``: Triton templates
  against cuBLAS, epilogues fused).

Per model and batch, in one process on one GPU: each variant built (build time is the first three
calls), its output compared with the first variant's on one input, then each timed by ``run_bench``
(CUDA events, 2 s of queries) ``--repeats`` times, interleaved so drifting clocks hit all alike.
``--cudnn-benchmark-limit`` sets ``torch.backends.cudnn.benchmark_limit`` for the process (how many
cuDNN algorithms benchmark mode tries; torch's default 10, 0 = all). ``--profile`` writes the 15
costliest CUDA kernels of one call of each variant to OUTDIR/profile_MODEL_VARIANT.txt. Weights are
torchvision's random initialization (speed only). OUTDIR/variants.json is rewritten after every
model; a variant whose build would start after ``--stop-s`` is skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from unittest import mock

T0 = time.perf_counter()

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tune_bench import model_of, parse_runs, release, size_of  # noqa: E402
from trtflow.backends.torch import fuse  # noqa: E402
from trtflow.backends.torch.runner import TorchEngine  # noqa: E402
from trtflow.bench import BenchConfig, run_bench  # noqa: E402
from trtflow.bench.report import throughput  # noqa: E402
from trtflow.tune.space import CDT  # noqa: E402

MODIFIERS = {"cdt": CDT, "mm1x1": {"conv_1x1_as_mm": True}, "gemmtune": {"max_autotune_gemm": True},
             "nofuse": {}, "nopad": {}, "pad8": {}, "nomove": {}}


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def parse_variant(text: str) -> list[str]:
    mods = [] if text == "base" else text.split("+")
    unknown = [m for m in mods if m not in MODIFIERS]
    if unknown:
        raise SystemExit(f"variant '{text}': unknown modifier(s) {unknown}; choose from base, {', '.join(MODIFIERS)}")
    return mods


def build(name: str, batch: int, mods: list[str], x) -> tuple[TorchEngine, torch.Tensor]:
    size, model = size_of(name), model_of(name)
    inductor = {k: v for m in mods for k, v in MODIFIERS[m].items()}
    pad_to = {} if "nopad" in mods else {3: 8} if "pad8" in mods else fuse.PAD_TO
    with mock.patch.object(fuse, "PAD_TO", pad_to), \
            mock.patch.object(fuse, "_take_bias", (lambda *a: False) if "nomove" in mods else fuse._take_bias):
        engine = TorchEngine(model, {"x": torch.randn(batch, 3, size, size)}, dtype="fp16", keep_io_types=False,
                             channels_last=True, compile="default", cuda_graphs=True, fuse="nofuse" not in mods,
                             inductor=inductor or None)
    for _ in range(3):
        y = engine.infer({"x": x})
    torch.cuda.synchronize()
    return engine, next(iter(y.values())).float().clone()


def profile(engine, x, path: Path) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    with profiler(activities=[ProfilerActivity.CUDA]) as prof:
        engine.infer({"x": x})
        torch.cuda.synchronize()
    path.write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=90))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--runs", default="resnet50:256")
    ap.add_argument("--variants", default="base,cdt")
    ap.add_argument("--cudnn-benchmark-limit", type=int, default=None)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--stop-s", type=float, default=450, help="no build starts after this many seconds")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    variants = {v: parse_variant(v) for v in args.variants.split(",")}
    if args.cudnn_benchmark_limit is not None:
        torch.backends.cudnn.benchmark_limit = args.cudnn_benchmark_limit
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, batch in parse_runs(args.runs):
        size, engines, ref = size_of(name), {}, None
        row = {"model": name, "batch": batch, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "cudnn_benchmark_limit": torch.backends.cudnn.benchmark_limit, "variants": {}}
        x = torch.randn(batch, 3, size, size, device="cuda", dtype=torch.float16)
        x = x.contiguous(memory_format=torch.channels_last)
        for variant, mods in variants.items():
            if time.perf_counter() - T0 > args.stop_s:
                log(f"{name} b{batch} {variant}: skipped (--stop-s)")
                continue
            t = time.perf_counter()
            try:
                engines[variant], y = build(name, batch, mods, x)
            except Exception as exc:  # noqa: BLE001 - a variant that fails to build is recorded
                row["variants"][variant] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                log(f"{name} b{batch} {variant} failed: {exc!r}"[:400])
                continue
            ref = y if ref is None else ref
            row["variants"][variant] = {"compile_s": round(time.perf_counter() - t, 1), "img_s": [],
                                        "max_abs_diff": float((y - ref).abs().max()), "peak": float(ref.abs().max())}
            log(f"{name} b{batch} {variant} ready in {row['variants'][variant]['compile_s']} s")
            if args.profile:
                profile(engines[variant], x, out / f"profile_{name}_{variant.replace('+', '_')}.txt")
        feed = {"x": torch.randn(batch, 3, size, size).numpy()}
        for _ in range(args.repeats):
            for variant, engine in engines.items():
                result = run_bench(engine, feed, BenchConfig(iterations=5, duration_s=2.0, warmup_ms=200,
                                                             data_transfers=False))
                row["variants"][variant]["img_s"].append(round(throughput(result)["inferences_per_s"]))
        log(f"{name} b{batch}: {json.dumps(row['variants'])}")
        rows.append(row)
        (out / "variants.json").write_text(json.dumps(rows, indent=1))
        for engine in engines.values():
            engine.close()
        del engines
        release()
    print("| model | batch | variant | img/s (timings) | vs first | max abs diff vs first | compile s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        first = None
        for variant, v in r["variants"].items():
            if "error" in v:
                print(f"| {r['model']} | {r['batch']} | {variant} | failed | - | - | - |")
                continue
            best = max(v["img_s"], default=0)
            first = first or best
            ratio = f"{best / first:.3f}x" if first else "-"
            print(f"| {r['model']} | {r['batch']} | {variant} | {', '.join(f'{t:,}' for t in v['img_s'])} | "
                  f"{ratio} | {v['max_abs_diff']:.3g} (peak {v['peak']:.3g}) | {v['compile_s']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
