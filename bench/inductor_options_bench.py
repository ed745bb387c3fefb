"""Compile + cuDNN fusions + CUDA graphs (FP16, channels-last) with and without extra Inductor options.

Usage::

    python3 bench/inductor_options_bench.py OUTDIR [--runs regnet_y_1_6gf:256,resnet50:256] [--stop-s 450]

Per model and batch, in one process on one GPU: the torch engine as ``trtflow tune`` builds its
``compile+fused+graphs cl`` configuration, once as is ("base") and once with Inductor's
coordinate-descent tuning ("cdt", tune's ``+cdt`` configurations), each timed by ``run_bench`` (CUDA
events, 2 s of queries) three times, the two interleaved so drifting clocks hit both alike. Build
time is the first three calls. Weights are torchvision's random initialization (speed only; no
accuracy check here). OUTDIR/inductor_options.json is rewritten after every model; a variant whose
build would start after ``--stop-s`` is skipped.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

T0 = time.perf_counter()

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tune_bench import model_of, parse_runs, size_of  # noqa: E402
from trtflow.backends.torch.runner import TorchEngine  # noqa: E402
from trtflow.bench import BenchConfig, run_bench  # noqa: E402
from trtflow.bench.report import throughput  # noqa: E402
from trtflow.tune.space import CDT  # noqa: E402

VARIANTS = {"base": None, "cdt": CDT}


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def build(name: str, batch: int, inductor) -> TorchEngine:
    size = size_of(name)
    engine = TorchEngine(model_of(name), {"x": torch.randn(batch, 3, size, size)}, dtype="fp16", keep_io_types=False,
                         channels_last=True, compile="default", cuda_graphs=True, fuse=True, inductor=inductor)
    x = torch.randn(batch, 3, size, size, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        engine.infer({"x": x})
    torch.cuda.synchronize()
    return engine


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--runs", default="regnet_y_1_6gf:256,mobilenet_v3_large:256,resnet50:256,efficientnet_b0:64")
    ap.add_argument("--stop-s", type=float, default=450, help="no build starts after this many seconds")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, batch in parse_runs(args.runs):
        size, engines, row = size_of(name), {}, {"model": name, "batch": batch}
        for variant, inductor in VARIANTS.items():
            if time.perf_counter() - T0 > args.stop_s:
                log(f"{name} b{batch} {variant}: skipped (--stop-s)")
                continue
            t = time.perf_counter()
            engines[variant] = build(name, batch, inductor)
            row[f"{variant}_compile_s"] = round(time.perf_counter() - t, 1)
            log(f"{name} b{batch} {variant} ready in {row[f'{variant}_compile_s']} s")
        feed = {"x": torch.randn(batch, 3, size, size).numpy()}
        for _ in range(args.repeats):
            for variant, engine in engines.items():
                result = run_bench(engine, feed, BenchConfig(iterations=5, duration_s=2.0, warmup_ms=200,
                                                             data_transfers=False))
                row.setdefault(variant, []).append(round(throughput(result)["inferences_per_s"]))
        log(f"{name} b{batch}: {row}")
        rows.append(row)
        (out / "inductor_options.json").write_text(json.dumps(rows, indent=1))
        del engines
        torch._dynamo.reset()
        gc.collect()
        torch.cuda.empty_cache()
    print("| model | batch | base img/s | cdt img/s | cdt / base | compile s (base, cdt) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        base, cdt = max(r.get("base", [0])), max(r.get("cdt", [0]))
        ratio = f"{cdt / base:.3f}x" if base and cdt else "-"
        print(f"| {r['model']} | {r['batch']} | {base:,} | {cdt:,} | {ratio} | {r.get('base_compile_s')}, {r.get('cdt_compile_s')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
