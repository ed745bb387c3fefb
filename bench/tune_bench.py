"""Benchmark of ``trtflow.tune`` on the torch engine against plain torch.compile and eager, under one time budget.

Usage::

    TRTFLOW_CACHE_DIR=/tmp/trtflow-cache python3 bench/tune_bench.py OUTDIR [--budget-s 490] [--hard-stop-s 520]
        [--runs resnet50:256,...] [--extra-runs mobilenet_v3_large:64,...] [--rtol 0.1] [--max-autotune]
    python3 bench/tune_bench.py OUTDIR --device cpu --runs tiny:2 --extra-runs "" --baselines eager --only "*eager*"

Per model and batch, in one process on one device, every figure timed by ``trtflow.bench.run_bench``
(CUDA events, inputs already on the device in FP16 and channels-last, ``--timing-s`` of queries after
warm-up):

* eager: plain PyTorch, FP16, channels-last (conv nets), with ``torch.backends.cudnn.benchmark`` on
  for every plain baseline, as trtflow's torch engine sets it;
* plain ``torch.compile(mode="reduce-overhead")``, FP16, channels-last; with ``--max-autotune`` also
  ``mode="max-autotune-no-cudagraphs"`` (off by default: 332 s of autotuning for ResNet-50 alone);
* ``trtflow.tune(model, engine="torch", precisions=("fp16", "fp8"))`` (FP8 where the device has FP8
  tensor cores and the model has eligible linears; tune lists it as skipped otherwise), restricted to
  ``--only``: the chosen configuration, the best FP16 one, tune's wall time and every configuration.

Budget: the batch-256 runs (``--runs``) share ``--budget-s`` equally, time one run leaves unused going to
the next (a run gets at least 50 s while that much is left, so an overrun costs the last runs, not the
next); ``--extra-runs`` (batch 64) run the same way with what is left. A step that cannot finish in the time left
is not started, tune gets the rest of the run's share as its ``budget_s`` (its budget pruning skips a
compile that cannot finish, estimated from the plain compile just measured), and a watchdog writes the
results and ends the process at ``--hard-stop-s`` whatever is running. OUTDIR/tune_bench.json and
OUTDIR/tune_bench.md are rewritten after every step, so a kill leaves the results so far.

Weights are torchvision's random initialization; tune re-estimates the batch-norm statistics on its inputs
before comparing (docs/tune.md) and accepts max |out - FP32| <= ``--rtol`` x max |FP32| on its inputs;
the table gives max |FP32| per model so the errors can be read. ``--device cpu`` with the built-in
``tiny`` model (conv + BN, depthwise conv + BN, linear) checks the flow where torchvision or a GPU is missing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

T0 = time.perf_counter()

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trtflow.bench import BenchConfig, run_bench  # noqa: E402
from trtflow.bench.report import summarize, throughput  # noqa: E402
from trtflow.spec import TensorSpec  # noqa: E402

RUNS = ("resnet50:256", "mobilenet_v3_large:256", "efficientnet_b0:256", "convnext_tiny:256", "vit_b_16:256",
        "regnet_y_1_6gf:256")
EXTRA = ("mobilenet_v3_large:64", "resnet50:64", "vit_b_16:64", "efficientnet_b0:64", "convnext_tiny:64",
         "regnet_y_1_6gf:64")
# tune's candidates: eager + CUDA graphs, cuDNN fusions + graphs, compile (+ fusions) + graphs, their retuning
# (+cdt), reduce-overhead; channels-last only (channels-first eager + graphs was 0.65x on ResNet-50),
# max-autotune left out
ONLY = ("*eager+graphs cl", "*fused+graphs cl", "*compile+graphs cl", "*compile+fused+graphs cl", "*+cdt cl",
        "*reduce-overhead cl")
RTOL = 0.1  # max |out - FP32| <= 10 % of max |FP32|: random deep nets amplify FP16 rounding (docs/tune.md)
MIN_RUN_S = 40.0  # a run whose share is smaller is not started
LOCK = threading.RLock()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def tiny_model():
    """conv + BN + ReLU, depthwise conv + BN + ReLU, pooling, linear: every trait tune orders by."""
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 32)).eval()


def model_of(name: str):
    """The model with random weights; zero-initialized linear weights (ViT's head) drawn at random, so
    its outputs are not all zero and the error figures measure something."""
    if name == "tiny":
        return tiny_model()
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    model._zero_linears_redrawn = redraw_zero_linears(model)
    return model


def redraw_zero_linears(model) -> int:
    """Draw ``nn.Linear`` weights that are all zero from N(0, 1/in_features); return how many."""
    n = 0
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and not bool(m.weight.detach().any()):
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / m.in_features ** 0.5)
            n += 1
    return n


def size_of(name: str) -> int:
    return 16 if name == "tiny" else 224


def traits(model) -> dict:
    """What the model contains (tune orders its configurations by the same traits)."""
    from torch import nn

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return {"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "conv2d": len(convs),
            "depthwise": sum(m.groups > 1 and m.groups == m.in_channels for m in convs),
            "grouped": sum(m.groups > 1 for m in convs),
            "batchnorm": sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()),
            "linear": sum(type(m) is nn.Linear for m in model.modules()),
            "zero_linears_redrawn": getattr(model, "_zero_linears_redrawn", 0),
            "layernorm": sum(isinstance(m, nn.LayerNorm) for m in model.modules())}


class Plain:
    """A plain callable behind the bits of the engine contract ``run_bench`` uses."""

    channels_last = True  # run_bench hands it a channels-last device batch, as it does tune's engines

    def __init__(self, name, fn, batch, size, device):
        self.name, self.fn, self.device = name, fn, device
        self.inputs = [TensorSpec("x", "float16", (batch, 3, size, size))]

    def infer(self, feed):
        x = torch.as_tensor(feed["x"]).to(self.device, torch.float16).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return {"y": self.fn(x)}


def inductor_counts() -> dict:
    from torch._dynamo.utils import counters

    c = counters["inductor"]
    return {k: int(c.get(f"fxgraph_cache_{k}", 0)) for k in ("hit", "miss", "bypass")}


def cache_delta(before: dict) -> dict:
    after = inductor_counts()
    return {k: after[k] - before[k] for k in after}


def release() -> None:
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def prepare(name, mode, batch, device):
    """The model (FP16, channels-last) under ``mode`` (None: eager), run three times; and how long that took."""
    size = size_of(name)
    # trtflow's torch engine turns cuDNN's algorithm search on process-wide: the plain baselines get it
    # too, every row alike (not only the rows after the first tune)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    m = model_of(name).to(device).half().to(memory_format=torch.channels_last)
    fn = m if mode is None else torch.compile(m, mode=mode)
    x = torch.randn(batch, 3, size, size, device=device, dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    before = inductor_counts()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for _ in range(3):
            fn(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return fn, {"compile_s": round(time.perf_counter() - t0, 2), "inductor_cache": cache_delta(before)}


def measure(fn, mode, name, batch, device, timing_s) -> dict:
    """Throughput and latency of a prepared callable, timed by ``run_bench``."""
    size = size_of(name)
    result = run_bench(Plain(mode or "eager", fn, batch, size, device),
                       {"x": torch.randn(batch, 3, size, size).numpy()},
                       BenchConfig(iterations=5, duration_s=timing_s, warmup_ms=200, data_transfers=False))
    lat = summarize(result)["latency"]
    return {"img_s": throughput(result)["inferences_per_s"], "p50_ms": lat.median, "p99_ms": lat.p99}


def plain(name, mode, batch, device, timing_s) -> dict:
    fn, out = prepare(name, mode, batch, device)
    out.update(measure(fn, mode, name, batch, device, timing_s))
    del fn
    release()
    return out


def tuned(name, batch, device, budget_s, args, compile_estimate_s, state) -> dict:
    import trtflow
    from trtflow.tune import TuneOptions

    size = size_of(name)
    opts = TuneOptions(short_s=args.short_s, full_s=args.full_s, warmup_ms=args.warmup_ms, accuracy_samples=batch,
                       only=list(args.only), save=False, compile_estimate_s=compile_estimate_s,
                       keep_io_types=args.io == "fp32")
    before = inductor_counts()
    t0 = time.perf_counter()
    step = state.get("step", "")

    def progress(what, done=None, total=None):  # the watchdog names the configuration it stopped in
        state["step"] = f"{step} ({what})"

    try:
        result = trtflow.tune(model_of(name), shapes={"x": (batch, 3, size, size)}, engine="torch",
                              precisions=tuple(args.precisions.split(",")), metric="relative", rtol=args.rtol,
                              budget_s=budget_s, device=str(device), options=opts, progress=progress)
    finally:
        release()
    best = result.best
    fp16 = [c for c in result.configs if c.precision == "fp16" and c.accepted and c.throughput]
    best16 = max(fp16, key=lambda c: c.throughput) if fp16 else None
    return {"chosen": result.chosen, "img_s": best.throughput, "p50_ms": best.p50_ms, "p99_ms": best.p99_ms,
            "max_abs_err": best.max_abs_err, "reference_peak": result.reference_peak,
            "best_fp16": {"name": best16.name, "img_s": best16.throughput} if best16 else None,
            "tune_budget_s": round(budget_s, 1), "tune_wall_s": round(time.perf_counter() - t0, 1),
            "inductor_cache": cache_delta(before), "notes": result.notes, "device": result.device,
            "configs": [c.to_dict() for c in result.configs]}


def fmt_img(step: dict | None) -> str:
    if not step:
        return "-"
    if step.get("img_s"):
        return f"{step['img_s']:,.0f}"
    return (step.get("error") or step.get("not_run") or "-")[:48]


def markdown(doc: dict) -> str:
    m = doc["meta"]
    lines = [f"# trtflow tune benchmark: {m['device_name']}, torch {m['torch']}, {m['date']}", "",
             f"Command: `{' '.join(m['argv'])}`", "",
             f"Budget {m['budget_s']:g} s (hard stop {m['hard_stop_s']:g} s); elapsed {doc['elapsed_s']:.0f} s"
             + (f"; **stopped by the hard deadline during {doc['stopped']}**" if doc.get("stopped") else "") + ".",
             f"Tuned engines' I/O: {m.get('io', 'fp32')} (the plain baselines take an FP16 batch).",
             f"Plain max-autotune-no-cudagraphs: {'run where the budget allowed' if m['max_autotune'] else 'not run (off; --max-autotune runs it)'}.",
             f"Inductor cache directory {m['inductor_cache_dir']} {'existed' if m['inductor_cache_existed'] else 'was empty/absent'} "
             "at the start (cold compiles unless the fxgraph hit counts below say otherwise; tune's compile + graphs "
             "configurations freeze weights, its reduce-overhead one compiles as the plain baseline does).",
             "Every engine gets its 4-d input on the device, FP16, channels-last (the layout all of them take), "
             "so no query pays a layout copy.", "",
             "| model | batch | eager img/s | reduce-overhead img/s (compile s) | max-autotune-no-cg | tuned img/s (chosen) "
             "| best FP16 tuned | tuned / reduce-overhead | tuned / eager | tune wall s (budget) | max abs FP32 out | chosen max abs err | fxgraph cache hit/miss (RO; tune) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        if r.get("not_run"):
            lines.append(f"| {r['model']} | {r['batch']} | {r['not_run']} |" + " |" * 11)
            continue
        e, ro, t = r.get("eager") or {}, r.get("reduce-overhead") or {}, r.get("tuned") or {}
        ro_s = fmt_img(ro) + (f" ({ro['compile_s']:.0f})" if ro.get("compile_s") and ro.get("img_s") else "")
        tu = fmt_img(t) + (f" ({t['chosen']})" if t.get("chosen") else "")
        b16 = t.get("best_fp16") or {}
        ratio = lambda a, b: f"{a / b:.2f}x" if a and b else "-"  # noqa: E731
        cache = lambda s: f"{s['inductor_cache']['hit']}/{s['inductor_cache']['miss']}" if s.get("inductor_cache") else "-"  # noqa: E731
        peak = f"{t['reference_peak']:.3g}" if t.get("reference_peak") is not None else "-"
        err = f"{t['max_abs_err']:.3g}" if t.get("max_abs_err") is not None else "-"
        wall = f"{t['tune_wall_s']:.0f} ({t['tune_budget_s']:.0f})" if t.get("tune_wall_s") else "-"
        lines.append(f"| {r['model']} | {r['batch']} | {fmt_img(e)} | {ro_s} | {fmt_img(r.get('max-autotune-no-cudagraphs'))} "
                     f"| {tu} | {fmt_img(b16)}{' (' + b16['name'] + ')' if b16.get('name') else ''} "
                     f"| {ratio(t.get('img_s'), ro.get('img_s'))} | {ratio(t.get('img_s'), e.get('img_s'))} | {wall} | {peak} "
                     f"| {err} | {cache(ro)}; {cache(t)} |")
    for r in doc["rows"]:
        t = r.get("tuned") or {}
        if not t.get("configs"):
            continue
        lines += ["", f"## {r['model']} batch {r['batch']}: tune's configurations", "",
                  f"Traits: {r.get('traits')}. Notes: {' '.join(t.get('notes') or []) or '-'}", "",
                  "| configuration | img/s | p50 ms | p99 ms | build/compile s | max abs err | status | reason |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in t["configs"]:
            num = lambda v, d=4: "-" if v is None else f"{v:.{d}g}"  # noqa: E731
            lines.append(f"| {c['name']} | {num(c['throughput'], 6)} | {num(c['p50_ms'])} | {num(c['p99_ms'])} "
                         f"| {num(c['compile_s'], 3)} | {num(c['max_abs_err'], 3)} | {c['status']} | {c['reason'][:120]} |")
    return "\n".join(lines) + "\n"


def write(out: Path, doc: dict) -> None:
    with LOCK:
        doc["elapsed_s"] = round(time.perf_counter() - T0, 1)
        text = json.dumps(doc, indent=2, default=str) + "\n"
        md = markdown(doc)
    (out / "tune_bench.json.tmp").write_text(text)
    os.replace(out / "tune_bench.json.tmp", out / "tune_bench.json")
    (out / "tune_bench.md").write_text(md)


def summary(doc: dict) -> str:
    lines = [f"{'model':<20} {'batch':>5} {'eager':>9} {'red-ovh':>9} {'max-at':>9} {'tuned':>9}  chosen"]
    for r in doc["rows"]:
        e, ro, t = r.get("eager") or {}, r.get("reduce-overhead") or {}, r.get("tuned") or {}
        ma = r.get("max-autotune-no-cudagraphs") or {}
        n = lambda s: f"{s['img_s']:9,.0f}" if s.get("img_s") else f"{'-':>9}"  # noqa: E731
        lines.append(f"{r['model']:<20} {r['batch']:>5} {n(e)} {n(ro)} {n(ma)} {n(t)}  "
                     f"{t.get('chosen') or r.get('not_run') or t.get('error') or t.get('not_run') or '-'}"[:200])
    return "\n".join(lines)


def watchdog(out: Path, doc: dict, hard_stop_s: float, state: dict) -> None:
    """End the process at the hard deadline, after writing what was measured."""
    time.sleep(max(0.0, hard_stop_s - (time.perf_counter() - T0)))
    doc["stopped"] = state.get("step", "?")
    try:
        write(out, doc)
        print(f"HARD STOP at {time.perf_counter() - T0:.0f} s during {doc['stopped']}; partial results:", flush=True)
        print(summary(doc), flush=True)
    finally:
        os._exit(0)


def parse_runs(text: str) -> list[tuple[str, int]]:
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, batch = item.partition(":")
        out.append((name, int(batch or 256)))
    return out


def arguments(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--budget-s", type=float, default=490, help="planned time for everything (from the process start)")
    ap.add_argument("--hard-stop-s", type=float, default=520, help="write results and exit at this time whatever runs")
    ap.add_argument("--runs", default=",".join(RUNS), help="MODEL:BATCH pairs sharing the budget equally")
    ap.add_argument("--extra-runs", default=",".join(EXTRA), help="MODEL:BATCH pairs run afterwards while time is left")
    ap.add_argument("--device", default="cuda", help="cuda or cpu (a flow check)")
    ap.add_argument("--baselines", default="eager,reduce-overhead", help="plain baselines: eager, reduce-overhead")
    ap.add_argument("--max-autotune", action="store_true", help="also the plain max-autotune-no-cudagraphs baseline (minutes)")
    ap.add_argument("--no-max-autotune", action="store_true", help="the default; kept for earlier commands")
    ap.add_argument("--max-autotune-min-left-s", type=float, default=400)
    ap.add_argument("--no-tune", action="store_true",
                    help="baselines only (e.g. the max-autotune baseline for rows tuned in another run)")
    ap.add_argument("--tune-budget-s", type=float, default=None, help="cap tune's budget per model (default: the run's share)")
    ap.add_argument("--precisions", default="fp16,fp8")
    ap.add_argument("--io", choices=("fp16", "fp32"), default="fp16",
                    help="tuned engines' input/output dtype: fp16 (default) takes the FP16 batch the plain baselines "
                    "get; fp32 keeps the model's FP32 I/O and casts inside the engine (one more kernel per call)")
    ap.add_argument("--only", default=",".join(ONLY), help="tune's configuration name patterns, comma-separated")
    ap.add_argument("--rtol", type=float, default=RTOL, help="tune's bound: max |out - FP32| <= RTOL * max |FP32|")
    ap.add_argument("--timing-s", type=float, default=1.0, help="seconds of queries per plain baseline")
    ap.add_argument("--short-s", type=float, default=0.2)
    ap.add_argument("--full-s", type=float, default=0.6)
    ap.add_argument("--warmup-ms", type=float, default=100, help="tune's warm-up before each timing")
    ap.add_argument("--compile-guess-s", type=float, default=40,
                    help="tune's compile estimate when the plain reduce-overhead compile of the model was not measured")
    args = ap.parse_args(argv)
    args.max_autotune = args.max_autotune and not args.no_max_autotune
    args.only = [p for p in args.only.split(",") if p]
    return args


def run_model(name, batch, device, args, row, state, deadline, left, save) -> None:
    """Baselines then tune for one model, each step started only when it can finish by ``deadline``."""
    baselines = set(filter(None, args.baselines.split(",")))
    steps = [k for k in ("eager", "reduce-overhead") if k in baselines]
    row.update({k: {"not_run": "not asked (--baselines)"} for k in ("eager", "reduce-overhead") if k not in baselines})
    if args.max_autotune:
        steps.append("max-autotune-no-cudagraphs")
    else:
        row["max-autotune-no-cudagraphs"] = {"not_run": "not run (off by default; --max-autotune)"}
    if args.no_tune:
        row["tuned"] = {"not_run": "not asked (--no-tune)"}
    else:
        steps.append("tuned")
    compile_s = None
    for key in steps:
        until = deadline - (time.perf_counter() - T0)
        need = {"eager": 8.0, "reduce-overhead": 30.0,
                "max-autotune-no-cudagraphs": args.max_autotune_min_left_s, "tuned": 12.0}[key]
        if key == "max-autotune-no-cudagraphs":
            until = left()
        if until < need:
            row[key] = {"not_run": f"not run: {until:.0f} s left of this run's share, ~{need:.0f} s needed"}
            log(f"{name} b{batch} {key}: {row[key]['not_run']}")
            continue
        state["step"] = f"{name} b{batch} {key}"
        log(f"{state['step']} ...")
        try:
            if key == "tuned":
                budget = min(until - 4, args.tune_budget_s or float("inf"))
                value = tuned(name, batch, device, budget, args, compile_s or args.compile_guess_s, state)
            else:
                value = plain(name, None if key == "eager" else key, batch, device, args.timing_s)
                if key == "reduce-overhead":
                    compile_s = value["compile_s"]
            log(f"{state['step']}: {value.get('img_s') or 0:,.0f} img/s {value.get('chosen', '')}")
        except Exception as exc:  # one failing step must not lose the rest
            value = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
            if isinstance(getattr(exc, "report", None), list):  # tune's MismatchError: every configuration
                value["configs"] = [c.to_dict() for c in exc.report]
            log(f"{state['step']} failed: {value['error']}")
            traceback.print_exc()
            release()
        with LOCK:
            row[key] = value
        save()


def main(argv=None) -> int:
    args = arguments(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device if args.device != "cuda" else f"cuda:{torch.cuda.current_device()}")
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
    except ImportError:  # another torch layout: the default
        cache_dir = lambda: os.path.join("/tmp", f"torchinductor_{os.environ.get('USER', 'root')}")  # noqa: E731

    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "argv": ["bench/tune_bench.py", *(argv or sys.argv[1:])],
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "python": platform.python_version(), "budget_s": args.budget_s,
            "hard_stop_s": args.hard_stop_s, "io": args.io, "max_autotune": args.max_autotune, "rtol": args.rtol, "only": args.only,
            "inductor_cache_dir": cache_dir(), "inductor_cache_existed": os.path.isdir(cache_dir()) and bool(os.listdir(cache_dir())),
            "trtflow_cache_dir": os.environ.get("TRTFLOW_CACHE_DIR"), "weights": "random (torchvision init)",
            "plain_cudnn_benchmark": device.type == "cuda"}
    doc: dict = {"meta": meta, "rows": []}
    state: dict = {}
    if argv is None:  # the script, not a test calling main(): the hard deadline ends the process
        threading.Thread(target=watchdog, args=(out, doc, args.hard_stop_s, state), daemon=True).start()
    left = lambda: args.budget_s - (time.perf_counter() - T0)  # noqa: E731
    for runs in (parse_runs(args.runs), parse_runs(args.extra_runs)):
        for i, (name, batch) in enumerate(runs):
            row = {"model": name, "batch": batch}
            with LOCK:
                doc["rows"].append(row)
            # an equal share of what is left, but enough for one model (the more telling ones come first)
            share = min(left(), max(left() / (len(runs) - i), MIN_RUN_S + 10))
            if share < MIN_RUN_S:
                row["not_run"] = f"not run: {left():.0f} s of the budget left"
                log(f"{name} b{batch}: {row['not_run']}")
                continue
            try:
                row["traits"] = traits(model_of(name))
            except Exception as exc:  # torchvision missing or an unknown model: recorded, the rest goes on
                row["not_run"] = f"{type(exc).__name__}: {exc}"[:200]
                log(f"{name} b{batch}: {row['not_run']}")
                continue
            deadline = (time.perf_counter() - T0) + share
            run_model(name, batch, device, args, row, state, deadline, left, lambda: write(out, doc))
            write(out, doc)
    write(out, doc)
    print((out / "tune_bench.md").read_text().split("\n## ")[0])
    print(summary(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
