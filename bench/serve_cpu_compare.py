"""MobileNetV2 on this CPU: the real Triton Inference Server against ``trtflow serve`` and in-process.

One run, same machine, same model file, same ONNX Runtime thread count:

1. in process: ``trtflow.load(onnx, "ort", threads=T)`` at the max batch (the reference, img/s);
2. Triton: nvidia-pytriton's ``tritonserver`` (from the .venv-triton environment) on a repository
   written by ``trtflow triton-repo --backend python --engine ort --threads T`` (Triton's Python
   backend running trtflow's ort engine, Triton's dynamic batcher up to the max batch);
3. ``trtflow serve`` on the same ONNX (``--max-batch``, ``--threads T``), unless ``--skip-trtflow``.

Both servers run side by side (an idle server costs nothing); the lower levels are measured once
each, the top level in ``--rounds`` rounds of in-process / Triton / trtflow serve windows next to
each other, and the median round (by Triton's share) is kept: on a shared machine the load of other
processes changes over minutes.

Batch-1 requests with binary tensors over HTTP from closed-loop clients (``trtflow.serve.loadgen``)
at each ``--clients`` level. Triton's mean batch comes from its statistics extension.

    python bench/serve_cpu_compare.py OUTDIR [--clients 1 16 64] [--duration 10] [--threads 2]

Writes OUTDIR/serve_cpu_compare.json (every figure) and OUTDIR/serve_cpu_compare.md (the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trtflow.serve.loadgen import LoadConfig, http_request, model_inputs, run_level  # noqa: E402
from trtflow.serve.repo import RepoOptions, TritonServer, write_repository  # noqa: E402
from trtflow.serve.repo.launcher import free_port  # noqa: E402

MODEL = "mobilenet_v2"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mobilenet_onnx() -> Path:
    """The quickstart's cached MobileNetV2 export (exported on first use)."""
    from trtflow.cache_dir import cache_dir

    path = cache_dir("quickstart") / "mobilenet_v2.onnx"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "trtflow", "quickstart", "--engine", "ort"], check=True, cwd=ROOT)
    return path


def in_process(onnx: Path, threads: int, batch: int, seconds: float) -> dict:
    import trtflow

    with trtflow.load(onnx, "ort", threads=threads) as engine:
        name = engine.inputs[0].name
        x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
        for _ in range(3):
            engine.infer({name: x})
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            engine.infer({name: x})
            n += 1
        elapsed = time.perf_counter() - start
    return {"batch": batch, "threads": threads, "img_s": n * batch / elapsed, "ms_per_batch": elapsed / n * 1e3}


def measure(url: str, levels, duration: float, warmup: float, stats=None) -> list[dict]:
    host, port = url.split(":")
    config = LoadConfig(url, MODEL, tuple(levels), duration, warmup)
    feed, batch = model_inputs(config)
    payload = http_request(host, int(port), MODEL, feed, True)
    out = []
    for level in levels:
        before = stats() if stats else None
        result = run_level(config, level, payload, batch).to_dict()
        if stats:
            after = stats()
            execs = after[1] - before[1]
            result["mean_batch"] = (after[0] - before[0]) / execs if execs else None
        log(f"  {level:>3} clients: {result['throughput']:.1f} req/s, p50 {result['p50']:.1f} ms, "
            f"p99 {result['p99']:.1f} ms, errors {result['errors']}, mean batch {result.get('mean_batch')}")
        out.append(result)
    return out


def triton_stats(url: str):
    def read() -> tuple[int, int]:
        with urllib.request.urlopen(f"http://{url}/v2/models/{MODEL}/stats", timeout=10) as r:
            doc = json.loads(r.read())["model_stats"][0]
        return int(doc["inference_count"]), int(doc["execution_count"])

    return read


def trtflow_stats(url: str):
    from trtflow.serve import metrics

    label = f'{{model="{MODEL}",version="1"}}'

    def read() -> tuple[int, int]:
        with urllib.request.urlopen(f"http://{url}/metrics", timeout=10) as r:
            values = metrics.parse(r.read().decode())
        return int(values["nv_inference_count" + label]), int(values["nv_inference_exec_count" + label])

    return read


def start_triton(args, onnx: Path, out: Path):
    repo = out / "triton_repo"
    opts = RepoOptions(name=MODEL, backend="python", engine="ort", threads=args.threads, max_batch=args.max_batch,
                       max_queue_delay_us=args.delay_us, overwrite=True)
    write_repository(onnx, repo, opts)
    command = (f"trtflow triton-repo {onnx.name} --out triton_repo --name {MODEL} --backend python --engine ort "
               f"--threads {args.threads} --max-batch {args.max_batch} --max-queue-delay-us {args.delay_us}")
    t0 = time.perf_counter()
    server = TritonServer(repo, args.triton_python, ready_timeout_s=300).start()
    log(f"tritonserver ready after {time.perf_counter() - t0:.1f} s ({server.http_url})")
    return server, command


def start_trtflow(args, onnx: Path):
    port = free_port()
    cmd = [sys.executable, "-m", "trtflow", "serve", str(onnx), "--name", MODEL, "--http-port", str(port),
           "--grpc-port", "-1", "--max-batch", str(args.max_batch), "--max-queue-delay-us", str(args.delay_us),
           "--access-log", "off", "--engine", "ort", "--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"trtflow serve exited: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.25)
    log(f"trtflow serve ready on 127.0.0.1:{port}")
    return proc, f"127.0.0.1:{port}", "trtflow " + " ".join(cmd[3:]).replace(str(onnx), onnx.name)


def stop_process(proc) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def compare(args, onnx: Path, out: Path, result: dict) -> None:
    """Lower levels once per server; the top level in ``--rounds`` rounds of in-process, Triton and
    trtflow serve windows next to each other (other processes' load changes over minutes), keeping
    the median round by Triton's share."""
    triton, command = start_triton(args, onnx, out)
    proc, url, serve_command = (None, None, None) if args.skip_trtflow else start_trtflow(args, onnx)
    result["triton"] = {"repository_command": command, "levels": []}
    if proc:
        result["trtflow_serve"] = {"command": serve_command, "levels": []}
    try:
        low, top = args.clients[:-1], args.clients[-1:]
        log("Triton (Python backend, trtflow ort engine inside)")
        result["triton"]["levels"] += measure(triton.http_url, low, args.duration, args.warmup, triton_stats(triton.http_url))
        if proc:
            log("trtflow serve")
            result["trtflow_serve"]["levels"] += measure(url, low, args.duration, args.warmup, trtflow_stats(url))
        rounds = []
        for r in range(args.rounds):
            ref = in_process(onnx, args.threads, args.max_batch, args.inproc_s)
            one = {"in_process": ref}
            log(f"round {r}: in-process {ref['img_s']:.1f} img/s")
            one["triton"] = measure(triton.http_url, top, args.duration, args.warmup, triton_stats(triton.http_url))[0]
            if proc:
                one["trtflow_serve"] = measure(url, top, args.duration, args.warmup, trtflow_stats(url))[0]
            one["triton_share"] = one["triton"]["throughput"] / ref["img_s"]
            one["loadavg"] = os.getloadavg()[0]
            rounds.append(one)
        best = sorted(rounds, key=lambda x: x["triton_share"])[len(rounds) // 2]
        result["rounds"] = rounds
        result["in_process"] = best["in_process"]
        result["triton"]["levels"].append(best["triton"])
        if proc:
            result["trtflow_serve"]["levels"].append(best["trtflow_serve"])
    finally:
        triton.close()
        if proc:
            stop_process(proc)


def table(result: dict) -> str:
    ref = result["in_process"]
    lines = [f"| server | clients | req/s | share of in-process bs{ref['batch']} ({ref['img_s']:.0f} img/s) | "
             "p50 ms | p90 ms | p99 ms | errors | mean batch |", "|---|---|---|---|---|---|---|---|---|"]
    for server in ("triton", "trtflow_serve"):
        for r in (result.get(server) or {}).get("levels", []):
            mb = r.get("mean_batch")
            lines.append(f"| {server.replace('_', ' ')} | {r['concurrency']} | {r['throughput']:.1f} | "
                         f"{r['throughput'] / ref['img_s'] * 100:.1f} % | {r['p50']:.1f} | {r['p90']:.1f} | "
                         f"{r['p99']:.1f} | {r['errors']} | {'-' if mb is None else f'{mb:.1f}'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", help="folder for serve_cpu_compare.json / .md (and the Triton repository)")
    parser.add_argument("--onnx", help="the MobileNetV2 ONNX (default: the quickstart's cached export)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per level")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--delay-us", type=int, default=0, help="max queue delay of both servers' batchers")
    parser.add_argument("--inproc-s", type=float, default=8.0, help="seconds of each in-process window")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the top level (median kept)")
    parser.add_argument("--triton-python", default=str(ROOT / ".venv-triton" / "bin" / "python"),
                        help="Python of the environment with nvidia-pytriton and trtflow")
    parser.add_argument("--skip-trtflow", action="store_true", help="measure Triton and in-process only")
    args = parser.parse_args()
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    onnx = Path(args.onnx) if args.onnx else mobilenet_onnx()
    import onnxruntime

    result: dict = {"environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                    "onnxruntime": onnxruntime.__version__, "loadavg_at_start": os.getloadavg()},
                    "config": {k: v for k, v in vars(args).items() if k != "outdir"}, "onnx": onnx.name}
    compare(args, onnx, out, result)
    result["environment"]["loadavg_at_end"] = os.getloadavg()
    (out / "serve_cpu_compare.json").write_text(json.dumps(result, indent=2))
    (out / "serve_cpu_compare.md").write_text(table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
