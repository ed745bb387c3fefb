"""Plain torch.compile baselines (max-autotune-no-cudagraphs, reduce-overhead, eager) for many models at once.

Usage::

    python3 bench/autotune_baseline.py OUTDIR [--runs resnet50:256,vit_b_16:64,...] [--workers 12]
        [--modes eager,reduce-overhead,max-autotune-no-cudagraphs] [--hard-stop-s 560]

Max-autotune compiles for minutes per model (ResNet-50: 332 s in one process), and most of that is CPU
work: lowering, code generation, compiling candidate kernels, loading them. Here every MODEL:BATCH gets
its own process and the compiles run side by side, while everything that times a kernel on the GPU
(Inductor's autotuning benchmarks, through its ``benchmarker``) holds one lock file, so no kernel is
timed while another process times one. Each timed kernel runs once before the lock (its compile and
load are CPU work), and other processes' first calls can overlap a timing: that is the difference from
a lone compile. Once every compile is done (or killed at ``--hard-stop-s`` less ``--measure-s`` per
model), the processes are measured one after another with the GPU otherwise idle, each figure timed by
``trtflow.bench.run_bench`` exactly as ``bench/tune_bench.py`` times its baselines (same models, FP16,
channels-last, inputs on the device). Compile seconds are wall time with the CPU shared, longer than
alone. Inductor's autotuning cache is written whole after each operator, so the processes' writes are
merged under a second lock file (see ``merge_cache_writes``): each operator timed once stays timed for
every later process on the machine, even one stopped mid-compile.

OUTDIR/autotune_baseline.json and .md are rewritten as rows finish; OUTDIR/logs/ has each process's log.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = ("eager", "reduce-overhead", "max-autotune-no-cudagraphs")


class GpuLock:
    """A lock file shared by processes, re-entrant within one process (threads included)."""

    def __init__(self, path: str | os.PathLike):
        self.fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        self.depth, self.waited_s, self.held_s, self.held = 0, 0.0, 0.0, 0
        self._rlock = threading.RLock()

    def __enter__(self):
        self._rlock.acquire()
        self.depth += 1
        if self.depth == 1:
            t0 = time.perf_counter()
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.since = time.perf_counter()
            self.waited_s += self.since - t0
            self.held += 1
        return self

    def __exit__(self, *exc):
        self.depth -= 1
        if self.depth == 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.held_s += time.perf_counter() - self.since
        self._rlock.release()


def serialize_benchmarks(lock: GpuLock) -> list[str]:
    """Make every GPU timing Inductor does through its ``benchmarker`` hold ``lock``; the names wrapped.

    Each timed callable first runs once outside the lock: a candidate kernel is compiled and loaded on
    its first call, CPU work that must not queue the other processes' timings behind it."""
    import torch
    from torch._inductor.runtime import benchmarking

    bench = benchmarking.benchmarker
    wrapped = []
    for name in ("benchmark_gpu", "benchmark_gpu_with_cuda_graph"):
        fn = getattr(bench, name, None)
        if fn is None:
            continue

        def locked(*args, _fn=fn, **kwargs):
            (args[0] if args else kwargs["_callable"])()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            with lock:
                return _fn(*args, **kwargs)

        setattr(bench, name, locked)
        wrapped.append(name)
    return wrapped


def merge_into(old: dict, new: dict) -> dict:
    """``new``'s entries added to ``old`` at every depth, ``new`` winning where both have a value."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            merge_into(old[key], value)
        else:
            old[key] = value
    return old


def merge_cache_writes(lock_path: str | os.PathLike) -> None:
    """Make each write of Inductor's autotuning cache add to what the file holds now.

    Inductor reads that cache, times an operator (seconds to minutes), then writes the whole file back,
    so processes compiling side by side dropped each other's operators and a later process autotuned
    them again. Here each write re-reads the file under a lock shared by the processes and merges."""
    from torch._inductor import codecache

    write = codecache.CacheBase.update_local_cache
    lock = GpuLock(lock_path)  # the lock file opened once, not at each write

    def merged(self, local_cache):
        with lock:
            write(self, merge_into(self.get_local_cache(), local_cache))

    codecache.CacheBase.update_local_cache = merged


def write_json(path: Path, doc) -> None:
    path.with_suffix(".tmp").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(path.with_suffix(".tmp"), path)


def worker(args) -> int:
    """One MODEL:BATCH: prepare every mode, say so, wait for the go on stdin, measure under the lock."""
    import torch

    sys.path.insert(0, str(HERE))
    import tune_bench as tb

    name, batch = tb.parse_runs(args.worker)[0]
    work = Path(args.outdir) / "work"
    stem = f"{name}_b{batch}"
    device = torch.device(args.device if args.device != "cuda" else "cuda:0")
    lock = GpuLock(args.lock)
    wrapped = serialize_benchmarks(lock)
    merge_cache_writes(f"{args.lock}.cache")
    prepared, info = {}, {"wrapped": wrapped}
    for mode in args.modes.split(","):
        t0 = time.perf_counter()
        compile_mode = None if mode == "eager" else mode
        fn, out = tb.prepare(name, compile_mode, batch, device)
        prepared[mode] = fn, compile_mode
        info[mode] = dict(out, benchmark_lock={"times": lock.held, "held_s": round(lock.held_s, 1),
                                                "waited_s": round(lock.waited_s, 1)})
        print(f"[{stem}] {mode} prepared in {time.perf_counter() - t0:.1f} s; lock so far {info[mode]['benchmark_lock']}",
              flush=True)
    write_json(work / f"{stem}.ready.json", info)
    if sys.stdin.readline().strip() != "go":
        return 1
    with lock:
        for mode, (fn, compile_mode) in prepared.items():
            info[mode].update(tb.measure(fn, compile_mode, name, batch, device, args.timing_s))
            print(f"[{stem}] {mode}: {info[mode]['img_s']:,.0f} img/s", flush=True)
    write_json(work / f"{stem}.result.json", info)
    return 0


def last_line(path: Path) -> str:
    """The last line of a log that is not blank (an exception's message)."""
    try:
        lines = [x.strip() for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def markdown(doc: dict) -> str:
    m = doc["meta"]
    lines = [f"# Plain torch.compile baselines, {m['device_name']}, torch {m['torch']}, {m['date']}", "",
             f"Command: `{' '.join(m['argv'])}`", "",
             f"{m['workers']} compiles at a time, Inductor's kernel timings serialized by a lock file; measured one "
             f"process at a time after the compiles; elapsed {doc['elapsed_s']:.0f} s.", "",
             "| model | batch | " + " | ".join(f"{k} img/s (compile s)" for k in m["modes"])
             + " | max-autotune / reduce-overhead | status |",
             "|---|---|" + "---|" * len(m["modes"]) + "---|---|"]
    for r in doc["rows"]:
        cells = []
        for k in m["modes"]:
            s = r.get(k) or {}
            cells.append(f"{s['img_s']:,.0f} ({s['compile_s']:.0f})" if s.get("img_s") else "-")
        ma, ro = (r.get(k) or {} for k in ("max-autotune-no-cudagraphs", "reduce-overhead"))
        ratio = f"{ma['img_s'] / ro['img_s']:.2f}x" if ma.get("img_s") and ro.get("img_s") else "-"
        lines.append(f"| {r['model']} | {r['batch']} | " + " | ".join(cells) + f" | {ratio} | {r.get('status', '-')[:160]} |")
    return "\n".join(lines) + "\n"


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device == "cuda" else "cpu"


def launch(args, name, batch, out, env) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), args.outdir, "--worker", f"{name}:{batch}",
           "--lock", str(out / "work" / "gpu.lock"), "--modes", args.modes, "--device", args.device,
           "--timing-s", str(args.timing_s)]
    with open(out / "logs" / f"{name}_b{batch}.log", "w") as log:
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env, text=True,
                                start_new_session=True)


def main(argv=None) -> int:
    args = arguments(argv)
    if args.worker:
        return worker(args)
    import platform
    from datetime import datetime, timezone

    sys.path.insert(0, str(HERE))
    import tune_bench as tb

    t0 = time.perf_counter()
    out = Path(args.outdir)
    (out / "work").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    runs = tb.parse_runs(args.runs)
    modes = args.modes.split(",")
    doc = {"meta": {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "argv": ["bench/autotune_baseline.py", *(argv or sys.argv[1:])], "device_name": device_name(args.device),
                    "torch": tb.torch.__version__, "python": platform.python_version(), "workers": args.workers,
                    "modes": modes, "compile_threads": args.compile_threads, "timing_s": args.timing_s,
                    "cudnn_benchmark": args.device != "cpu"},  # set by tune_bench.prepare
           "rows": [{"model": n, "batch": b} for n, b in runs]}
    stems = [f"{n}_b{b}" for n, b in runs]
    elapsed = lambda: time.perf_counter() - t0  # noqa: E731

    def save():
        doc["elapsed_s"] = round(elapsed(), 1)
        write_json(out / "autotune_baseline.json", doc)
        (out / "autotune_baseline.md").write_text(markdown(doc))

    env = dict(os.environ, TORCHINDUCTOR_COMPILE_THREADS=str(args.compile_threads))
    procs: dict[int, subprocess.Popen] = {}
    started: dict[int, float] = {}
    compiling: set[int] = set()
    waiting = list(range(len(runs)))
    compile_until = args.hard_stop_s - args.measure_s * len(runs)
    while waiting or compiling:
        while waiting and len(compiling) < args.workers and elapsed() < compile_until:
            i = waiting.pop(0)
            procs[i], started[i] = launch(args, *runs[i], out, env), elapsed()
            compiling.add(i)
        for i in sorted(compiling):
            row, p = doc["rows"][i], procs[i]
            if (out / "work" / f"{stems[i]}.ready.json").exists():
                row["prepare_s"] = round(elapsed() - started[i], 1)
                compiling.discard(i)
            elif p.poll() is not None:
                row["status"] = f"failed (exit {p.returncode}): {last_line(out / 'logs' / f'{stems[i]}.log')}"
                compiling.discard(i)
            elif elapsed() > compile_until:
                os.killpg(p.pid, signal.SIGKILL)
                row["status"] = f"not prepared after {elapsed() - started[i]:.0f} s (stopped to leave time to measure)"
                compiling.discard(i)
        if elapsed() > compile_until:
            for i in waiting:
                doc["rows"][i]["status"] = "not started (time)"
            waiting = []
        save()
        time.sleep(0.2)
    ready = [i for i in range(len(runs)) if "prepare_s" in doc["rows"][i]]
    print(f"[{elapsed():6.1f}s] {len(ready)} of {len(runs)} prepared; measuring one at a time", flush=True)
    for i in ready:  # the GPU idle but for the one being measured
        row, p = doc["rows"][i], procs[i]
        p.stdin.write("go\n")
        p.stdin.flush()
        try:
            p.wait(timeout=max(5.0, args.hard_stop_s - elapsed()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
        result = out / "work" / f"{stems[i]}.result.json"
        if result.exists():
            row.update(json.loads(result.read_text()))
            row["status"] = "measured"
        else:
            row["status"] = f"measure failed (exit {p.returncode}): {last_line(out / 'logs' / f'{stems[i]}.log')}"
        save()
    for i, p in procs.items():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    save()
    print(markdown(doc))
    return 0


def arguments(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--runs", default="vit_b_16:256,convnext_tiny:256,resnet50:256,mobilenet_v3_large:256,"
                    "efficientnet_b0:256,regnet_y_1_6gf:256,vit_b_16:64,convnext_tiny:64,resnet50:64,"
                    "mobilenet_v3_large:64,efficientnet_b0:64,regnet_y_1_6gf:64", help="MODEL:BATCH pairs")
    ap.add_argument("--modes", default=",".join(MODES), help="eager and torch.compile modes, comma-separated")
    ap.add_argument("--workers", type=int, default=12, help="compiles at a time")
    ap.add_argument("--compile-threads", type=int, default=2, help="TORCHINDUCTOR_COMPILE_THREADS of each process")
    ap.add_argument("--hard-stop-s", type=float, default=560)
    ap.add_argument("--measure-s", type=float, default=8.0, help="time kept per model for measuring after the compiles")
    ap.add_argument("--timing-s", type=float, default=1.0, help="seconds of queries per figure")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu (a flow check)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--lock", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
