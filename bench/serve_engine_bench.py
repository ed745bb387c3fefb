"""CPU time per request of the engine process of ``trtflow serve --workers``, without HTTP.

One process plays the front end (``trtflow.serve.frontend.EngineClient`` with its own shared-memory
arena) and keeps ``--clients`` requests in flight against a real engine process
(``trtflow.serve.engine_process.engine_main``) serving an ONNX model on ONNX Runtime (1 thread);
the engine process's CPU time (all threads, /proc) over the requests answered is the figure. Two
models: bench/serve_bench.py's trivial FP16 model with 301 KB requests, and a [N,4] float32 model
whose requests cost nothing to merge (the serving path alone).

    python bench/serve_engine_bench.py OUTDIR --clients 128 --seconds 6

``--profile-s S`` adds a py-spy profile of the engine process (``bench/serve_profile.py``) for S
seconds of each window: raw files in OUTDIR, the top frames in the JSON and on stdout.
Writes OUTDIR/serve_engine_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def load(path: str, max_batch: int) -> list:
    import trtflow
    from trtflow.serve.model import BatchConfig, ServedModel

    engine = trtflow.load(path, engine="ort", threads=1, spinning=False)
    return [ServedModel("m", [engine], BatchConfig(max_batch, 0, max_queue=4096))]


def measure(path: str, x: np.ndarray, clients: int, seconds: float, max_batch: int, profile: tuple | None = None,
            switch_ms: float | None = None) -> dict:
    import serve_profile
    from serve_bench import process_cpu_s
    from trtflow.serve import ipc
    from trtflow.serve.engine_process import engine_main
    from trtflow.serve.frontend import EngineClient
    from trtflow.serve.metrics import ModelStats
    from trtflow.serve.server import ServeOptions, run_loop

    options = ServeOptions() if switch_ms is None else ServeOptions(switch_interval_s=switch_ms / 1e3)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    tmp = Path(tempfile.mkdtemp(prefix="trtflow-bench-"))
    sock = str(tmp / "engine.sock")
    proc = ctx.Process(target=engine_main, args=(functools.partial(load, path, max_batch), options, sock, queue))
    proc.start()
    msg = queue.get(timeout=300)
    if msg[0] != "ready":
        raise RuntimeError(msg[1])
    arena = ipc.Arena.create(ipc.aligned(x.nbytes), clients)
    result: dict = {}

    async def run() -> None:
        client = EngineClient(arena)
        await client.connect(sock)
        await client.infer("m", {"x": x})
        stop, count = time.perf_counter() + seconds, [0]

        async def one() -> None:
            while time.perf_counter() < stop:
                await client.infer("m", {"x": x})
                count[0] += 1

        jobs = []
        if profile:
            outdir, label, profile_s = profile
            jobs = serve_profile.start({"engine": proc.pid}, min(profile_s, seconds - 1), 0.5, outdir, label)
        c0, t0, s0 = process_cpu_s(proc.pid), time.perf_counter(), time.process_time()
        await asyncio.gather(*(one() for _ in range(clients)))
        c1, t1, s1 = process_cpu_s(proc.pid), time.perf_counter(), time.process_time()
        if jobs:
            result["profile"] = await asyncio.get_running_loop().run_in_executor(None, serve_profile.finish, jobs)
        counters = ModelStats()
        counters.update((await client.stats())["m"])  # as the front ends read the engine process's counters
        v = counters.values
        result.update(request_bytes=x.nbytes, clients=clients, req_s=count[0] / (t1 - t0),
                      engine_cpu_us_per_request=(c1 - c0) / count[0] * 1e6,
                      client_cpu_us_per_request=(s1 - s0) / count[0] * 1e6,
                      mean_batch=v["nv_inference_count"] / v["nv_inference_exec_count"])

    try:
        run_loop(run)
    finally:
        proc.terminate()
        proc.join(30)
        arena.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def main() -> int:
    import serve_bench
    from tests.test_serve import affine_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--clients", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--requests", default="large,small", help="which requests: large (301 KB), small (16 B)")
    parser.add_argument("--switch-interval-ms", type=float, default=None,
                        help="the engine process's thread switch interval (default: the server's, 0.2 ms)")
    parser.add_argument("--profile-s", type=float, default=0, help="py-spy profile of the engine process (needs py-spy)")
    args = parser.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    trivial = serve_bench.trivial_onnx(args.outdir / "trivial_fp16.onnx")
    affine = args.outdir / "affine.onnx"
    affine.write_bytes(affine_model())
    cases = {"large": (trivial, np.random.rand(1, 3, 224, 224).astype(np.float16)),
             "small": (affine, np.random.rand(1, 4).astype(np.float32))}
    rows = []
    for name in args.requests.split(","):
        model, x = cases[name]
        profile = (args.outdir, name, args.profile_s) if args.profile_s else None
        rows.append(measure(str(model), x, args.clients, args.seconds, args.max_batch, profile, args.switch_interval_ms))
        for prof in rows[-1].get("profile", {}).values():
            print(f"profile ({name}, self %):", prof.get("error") or prof["self"][:15])
    out = {"environment": serve_bench.environment(), "config": {k: str(v) for k, v in vars(args).items()}, "results": rows}
    (args.outdir / "serve_engine_bench.json").write_text(json.dumps(out, indent=2) + "\n")
    print("| request bytes | clients | req/s | mean batch | engine CPU µs/request | client CPU µs/request |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['request_bytes']:,} | {r['clients']} | {r['req_s']:.0f} | {r['mean_batch']:.1f} | "
              f"{r['engine_cpu_us_per_request']:.1f} | {r['client_cpu_us_per_request']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
