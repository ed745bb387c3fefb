"""Served throughput of ``trtflow serve`` against the same engine in process.

GPU (default): ResNet-50 (random weights) on the torch engine (FP16, channels-last, cuDNN fusions,
CUDA graphs per batch size), batch-1 requests over HTTP with binary tensors from ``--clients``
closed-loop clients (``trtflow.serve.loadgen``, spread over processes), against the engine's
model-only throughput at the server's max batch (inputs already on the GPU, CUDA events) and its
throughput from host arrays (H2D and D2H included, perf_counter).

The GPU server is ``trtflow serve --workers W``'s design for every W in ``--workers``: W
front-end processes (HTTP) and one engine process (the batcher and the engine, requests through
shared memory), started with ``trtflow.serve.workers.serve_workers``; each process's CPU time
per served image is recorded (engine, front ends, load generator).

CPU (``--cpu``): MobileNetV2 (the quickstart's cached ONNX) on ONNX Runtime, served by the real
``trtflow serve`` CLI, batch-1 requests at 1/16/64 clients, against the engine's in-process
throughput at the max batch.

CPU cost (``--cost``): a trivial FP16 model ([N,3,224,224] -> [N,1000], about nothing to compute)
served by the CLI with each ``--workers`` W (1: one process; W > 1: W front ends + the engine
process), batch-1 requests of 301 KB (the GPU benchmark's request): CPU time per request of each
process, i.e. what the protocol work costs, whatever else shares the machine.

    python bench/serve_bench.py OUTDIR                 # GPU
    python bench/serve_bench.py OUTDIR --cpu           # CPU
    python bench/serve_bench.py OUTDIR --cost --workers 1,2 --clients 32

Writes OUTDIR/serve_bench.json (every figure) and OUTDIR/serve_bench.md (the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trtflow.serve import metrics  # noqa: E402
from trtflow.serve.loadgen import LoadConfig, run_level, model_inputs, http_request  # noqa: E402
from trtflow.serve.repo.launcher import free_port  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- engines ------------------------------------------------------------------------------------
def resnet_engine(max_batch: int):
    import torch
    import torchvision
    import trtflow

    torch.manual_seed(0)
    return trtflow.load(
        torchvision.models.resnet50(weights=None).eval(), engine="torch", example_inputs={"x": torch.randn(2, 3, 224, 224)},
        dynamic={"x": {0: "batch"}}, min_shapes={"x": (1, 3, 224, 224)}, max_shapes={"x": (max_batch, 3, 224, 224)},
        output_names=["logits"], dtype="fp16", keep_io_types=False, channels_last=True, cuda_graphs=True, fuse=True,
        max_graphs=max_batch + 1,
    )


def warm_all_sizes(engine, max_batch: int) -> float:
    """Capture every batch size's CUDA graph before serving (the batcher forms any size 1..max)."""
    t0 = time.perf_counter()
    dtype = np.float16 if engine.inputs[0].dtype == "float16" else np.float32
    for b in range(1, max_batch + 1):
        engine.infer({"x": np.zeros((b, 3, 224, 224), dtype)})
    return time.perf_counter() - t0


def model_only_gpu(engine, batch: int, iters: int = 200) -> dict:
    import torch

    x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    for _ in range(5):
        engine.infer({"x": x})
    runs = []
    for _ in range(3):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            engine.infer({"x": x})
        end.record()
        end.synchronize()
        runs.append(start.elapsed_time(end) / iters)
    ms = statistics.median(runs)
    return {"batch": batch, "ms_per_batch": ms, "img_s": batch / ms * 1e3, "timer": "CUDA events"}


def host_throughput(engine, feed: dict, batch: int, seconds: float = 5.0) -> dict:
    for _ in range(3):
        engine.infer(feed)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        engine.infer(feed)
        n += 1
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"batch": batch, "ms_per_batch": dt / n * 1e3, "img_s": n * batch / dt, "timer": "perf_counter",
            "cpu_ms_per_img": cpu / (n * batch) * 1e3}


def host_throughput_threads(engines: list, feed: dict, batch: int, seconds: float) -> dict:
    """Several engine instances, one thread each, back-to-back batches (the server's instances, in process)."""
    if len(engines) == 1:
        return host_throughput(engines[0], feed, batch, seconds)
    import threading

    for e in engines:
        e.infer(feed)
    counts = [0] * len(engines)
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            engines[i].infer(feed)
            counts[i] += 1

    t0, c0 = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = sum(counts)
    return {"batch": batch, "instances": len(engines), "ms_per_batch": dt / n * 1e3 * len(engines),
            "img_s": n * batch / dt, "timer": "perf_counter", "cpu_ms_per_img": cpu / (n * batch) * 1e3}


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pids(info: dict, fallback: int) -> dict:
    """{"engine": pid, "frontends": [pids]} from a ready line; one process: it is both."""
    pids = info.get("pids")
    return pids if pids else {"engine": fallback, "frontends": []}


# -- the GPU server child -----------------------------------------------------------------------
def resnet_models(max_batch: int, instances: int, delay_us: int) -> list:
    """The served model, loaded in the engine process: every batch size's graph captured first."""
    from trtflow.serve.model import BatchConfig, ServedModel

    engines = [resnet_engine(max_batch) for _ in range(instances)]
    for e in engines:
        warm_all_sizes(e, max_batch)
    return [ServedModel("resnet50", engines, BatchConfig(max_batch, delay_us, max_queue=4096, timeout_s=60))]


def child(args) -> None:
    """The server: W front ends and one engine process (``trtflow serve --workers W``'s design)."""
    import functools

    from trtflow.serve.server import ServeOptions
    from trtflow.serve.workers import WorkerOptions, serve_workers

    opts = ServeOptions("127.0.0.1", args.port, None, 64 << 20, 10.0, "KIND_GPU")
    load = functools.partial(resnet_models, args.max_batch, args.instances, args.delay_us)

    def ready(r) -> None:
        print(json.dumps({"ready": r.http_port, "pids": r.pids, "slot_bytes": r.slot_bytes, "slots": r.slots}), flush=True)

    raise SystemExit(serve_workers(load, opts, WorkerOptions(args.workers, slots=args.slots), on_ready=ready))


def _ready(p: subprocess.Popen, timeout: float) -> dict:
    """The server's ready line (JSON), once it listens."""
    line = p.stdout.readline()
    if not line:
        raise RuntimeError(f"server {p.args} exited with {p.wait(timeout)}")
    return json.loads(line)


def start_server(cmd: list[str], timeout: float = 300) -> tuple[subprocess.Popen, dict]:
    """One server process and its ready line."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    return p, _ready(p, timeout)


def start_servers(cmds: list[list[str]], timeout: float = 300) -> list[subprocess.Popen]:
    """Several server processes started together (bench/multi_gpu_bench.py: SO_REUSEPORT copies)."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True, cwd=ROOT) for c in cmds]
    for p in procs:
        _ready(p, timeout)
    return procs


def stop_servers(procs) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()


def scrape(port: int, model: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        values = metrics.parse(r.read().decode())
    label = f'{{model="{model}",version="1"}}'
    return {k: values[k + label] for k in ("nv_inference_count", "nv_inference_exec_count", "nv_inference_request_success")}


def measure_levels(port: int, model: str, levels, duration: float, warmup: float, processes: int,
                   pids: dict | None = None, feed: dict | None = None, profile: tuple | None = None) -> list[dict]:
    """Closed-loop levels; with ``pids`` ({"engine": pid, "frontends": [...]}) the CPU time per
    served image of the engine process, the front ends (together and each) and the load generator;
    with ``profile`` (outdir, label, seconds) py-spy profiles of the engine process and front end 0."""
    import resource

    import serve_profile

    config = LoadConfig(f"127.0.0.1:{port}", model, tuple(levels), duration, warmup, processes=processes)
    batch = 1
    if feed is None:
        feed, batch = model_inputs(config)
    payload = http_request("127.0.0.1", port, model, feed, True)
    procs = ([("engine", pids["engine"])] + [(f"frontend{i}", p) for i, p in enumerate(pids["frontends"])]) if pids else []
    out = []
    for level in levels:
        before = scrape(port, model)
        s0 = {name: process_cpu_s(pid) for name, pid in procs}
        c0 = time.process_time()
        k0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        jobs = []
        if profile and procs:
            outdir, label, seconds = profile
            jobs = serve_profile.start(dict(procs[:2]), min(seconds, duration), warmup, outdir, f"{label}_c{level}")
        result = run_level(config, level, payload, batch).to_dict()
        if jobs:
            result["profile"] = serve_profile.finish(jobs)
            for name, prof in result["profile"].items():
                top = "; ".join(f"{pct} % {frame}" for pct, frame in prof.get("self", [])[:6])
                log(f"  profile {name}: {prof.get('error') or top}")
        k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_cpu = time.process_time() - c0 + (k1.ru_utime + k1.ru_stime - k0.ru_utime - k0.ru_stime)
        cpu = {name: process_cpu_s(pid) - s0[name] for name, pid in procs}
        after = scrape(port, model)
        served = after["nv_inference_count"] - before["nv_inference_count"]  # warm-up and window together
        if procs and served:
            ms = {name: v / served * 1e3 for name, v in cpu.items()}
            result["cpu_ms_per_img"] = ms
            result["engine_cpu_ms_per_img"] = ms["engine"]
            result["frontends_cpu_ms_per_img"] = sum(v for k, v in ms.items() if k.startswith("frontend")) or None
            result["server_cpu_ms_per_img"] = sum(ms.values())
            result["client_cpu_ms_per_img"] = client_cpu / served * 1e3
        execs = after["nv_inference_exec_count"] - before["nv_inference_exec_count"]
        result["mean_batch"] = served / execs if execs else None
        cpu_text = ""
        if "cpu_ms_per_img" in result:
            cpu_text = (f", CPU ms/img engine {result['engine_cpu_ms_per_img']:.3f} front ends "
                        f"{result['frontends_cpu_ms_per_img'] or 0:.3f} clients {result['client_cpu_ms_per_img']:.3f}")
        log(f"  {level} clients: {result['throughput']:.1f} req/s, p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, "
            f"errors {result['errors']}, mean batch {result['mean_batch']}{cpu_text}")
        out.append(result)
    return out


def environment() -> dict:
    env = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
           "loadavg_at_start": os.getloadavg()}
    try:
        import torch

        env["torch"] = torch.__version__
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    import onnxruntime

    env["onnxruntime"] = onnxruntime.__version__
    return env


def gpu_main(args) -> dict:
    import torch

    result: dict = {"mode": "gpu", "environment": environment(), "config": vars(args).copy()}
    log(f"{result['environment'].get('gpu')}: in-process ResNet-50, max batch {args.max_batch}")
    engine = resnet_engine(args.max_batch)
    result["warm_s"] = warm_all_sizes(engine, args.max_batch)
    result["model_only"] = model_only_gpu(engine, args.max_batch)
    host = {"x": np.random.default_rng(0).standard_normal((args.max_batch, 3, 224, 224)).astype(np.float16)}
    result["from_host"] = host_throughput(engine, host, args.max_batch, 3.0)
    result["model_only_bs1"] = model_only_gpu(engine, 1, 100)
    log(f"  model-only {result['model_only']['img_s']:.0f} img/s, from host {result['from_host']['img_s']:.0f} img/s")
    del engine
    torch.cuda.empty_cache()
    result["served"] = {}
    start = time.perf_counter()
    for item in args.workers_list:
        workers, _, k = str(item).partition("x")
        instances = int(k or args.instances)
        if result["served"] and time.perf_counter() - start > args.budget_s:
            log(f"skipping {item}: past --budget-s")
            continue
        port = free_port()
        cmd = [sys.executable, __file__, "--child", "--port", str(port), "--max-batch", str(args.max_batch),
               "--delay-us", str(args.delay_us), "--instances", str(instances), "--workers", workers,
               "--slots", str(args.slots)]
        log(f"serving with {workers} front end(s) and one engine process, {instances} instance(s)")
        t0 = time.perf_counter()
        try:
            proc, info = start_server(cmd)
        except Exception as exc:  # noqa: BLE001 - record it, go on with the next configuration
            log(f"  {item} did not start: {exc}")
            result.setdefault("failed", {})[str(item)] = str(exc)
            continue
        log(f"  ready after {time.perf_counter() - t0:.1f} s: {info}")
        try:
            levels = measure_levels(port, "resnet50", args.clients, args.duration, args.warmup, args.loadgen_processes,
                                    info["pids"], profile=(args.outdir, f"w{item}", args.profile_s))
            for level in levels:
                level["instances"], level["shm"] = instances, {"slot_bytes": info["slot_bytes"], "slots": info["slots"]}
            result["served"][str(item)] = levels
        except Exception as exc:  # noqa: BLE001
            log(f"  {item} failed: {exc}")
            result.setdefault("failed", {})[str(item)] = str(exc)
        finally:
            stop_servers([proc])
        # what is measured so far survives a later failure
        (args.outdir / "serve_bench.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def cpu_main(args) -> dict:
    """In-process and served windows alternate (``--rounds``) at the top level: on a shared machine
    the load of other processes changes over minutes, so each served window is compared with the
    in-process window next to it."""
    import trtflow

    onnx = Path(args.onnx) if args.onnx else _mobilenet_onnx()
    result: dict = {"mode": "cpu", "environment": environment(), "config": {**vars(args), "onnx": str(onnx)}}
    engines = [trtflow.load(onnx, engine="ort", threads=args.ort_threads) for _ in range(args.instances)]
    engine = engines[0]
    name = engine.inputs[0].name
    x = np.random.default_rng(0).standard_normal((args.max_batch, 3, 224, 224)).astype(np.float32)
    result["in_process_bs1"] = host_throughput(engine, {name: x[:1]}, 1, args.inproc_s / 2)
    port = free_port()
    cmd = [sys.executable, "-m", "trtflow", "serve", str(onnx), "--name", "mobilenet_v2", "--http-port", str(port),
           "--grpc-port", "-1", "--max-batch", str(args.max_batch), "--access-log", "off", "--json",
           "--workers", str(args.workers_list[0]), "--threads", str(args.ort_threads),
           "--instances", str(args.instances)]
    result["server_command"] = "trtflow " + " ".join(cmd[3:])
    proc, info = start_server(cmd)
    rounds = []
    try:
        pids = server_pids(info, proc.pid)
        served = measure_levels(port, "mobilenet_v2", args.clients[:-1], args.duration, args.warmup, args.loadgen_processes, pids)
        for r in range(args.rounds):
            inproc = host_throughput_threads(engines, {name: x}, args.max_batch, args.inproc_s)
            top = measure_levels(port, "mobilenet_v2", args.clients[-1:], args.duration, args.warmup, args.loadgen_processes,
                                 pids)[0]
            rounds.append({"in_process": inproc, "served": top, "share": top["throughput"] / inproc["img_s"]})
            log(f"round {r}: in-process {inproc['img_s']:.1f} img/s, served {top['throughput']:.1f} req/s "
                f"({rounds[-1]['share'] * 100:.1f} %), load {os.getloadavg()[0]:.1f}; CPU ms/img in-process "
                f"{inproc['cpu_ms_per_img']:.2f}, server {top.get('server_cpu_ms_per_img', 0):.2f}, "
                f"client {top.get('client_cpu_ms_per_img') or 0:.2f}")
    finally:
        stop_servers([proc])
        for e in engines:
            e.close()
    best = sorted(rounds, key=lambda r: r["share"])[len(rounds) // 2]  # the median round
    result["rounds"] = rounds
    result["in_process"] = best["in_process"]
    result["served"] = {str(args.workers_list[0]): served + [best["served"]]}
    result["environment"]["loadavg_at_end"] = os.getloadavg()
    return result


def trivial_onnx(path: Path) -> Path:
    """x float16 [N,3,224,224] -> y float16 [N,1000] with next to no compute: one pixel of each
    channel (Slice) through a 3x1000 matmul."""
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    w = nh.from_array(np.random.default_rng(0).standard_normal((3, 1000)).astype(np.float32), "w")
    consts = [nh.from_array(np.array(v, np.int64), n) for n, v in
              (("starts", [0, 0]), ("ends", [1, 1]), ("axes", [2, 3]))]
    nodes = [h.make_node("Slice", ["x", "starts", "ends", "axes"], ["p"]), h.make_node("Flatten", ["p"], ["f"], axis=1),
             h.make_node("Cast", ["f"], ["ff"], to=T.FLOAT), h.make_node("MatMul", ["ff", "w"], ["yf"]),
             h.make_node("Cast", ["yf"], ["y"], to=T.FLOAT16)]
    g = h.make_graph(nodes, "trivial", [h.make_tensor_value_info("x", T.FLOAT16, ["batch", 3, 224, 224])],
                     [h.make_tensor_value_info("y", T.FLOAT16, ["batch", 1000])], [w, *consts])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 18)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def cost_main(args) -> dict:
    """CPU time per request of each server process, the trivial model, one server per ``--workers`` entry."""
    onnx = trivial_onnx(args.outdir / "trivial_fp16.onnx")
    result: dict = {"mode": "cost", "environment": environment(), "config": {**vars(args), "onnx": str(onnx)},
                    "served": {}, "commands": {}}
    feed = {"x": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float16)}
    for workers in args.workers_list:
        http = free_port()
        cmd = [sys.executable, "-m", "trtflow", "serve", str(onnx), "--name", "trivial", "--http-port", str(http),
               "--grpc-port", str(free_port()), "--max-batch", str(args.max_batch), "--access-log", "off", "--json",
               "--workers", str(workers), "--threads", str(args.ort_threads or 1)]
        result["commands"][str(workers)] = "trtflow " + " ".join(cmd[3:])
        log(f"serving the trivial model: {result['commands'][str(workers)]}")
        proc, info = start_server(cmd)
        try:
            result["served"][str(workers)] = measure_levels(http, "trivial", args.clients, args.duration, args.warmup,
                                                            args.loadgen_processes, server_pids(info, proc.pid), feed,
                                                            (args.outdir, f"w{workers}", args.profile_s))
        finally:
            stop_servers([proc])
    result["environment"]["loadavg_at_end"] = os.getloadavg()
    return result


def _mobilenet_onnx() -> Path:
    from trtflow.cache_dir import cache_dir

    path = cache_dir("quickstart") / "mobilenet_v2.onnx"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "trtflow", "quickstart", "--engine", "ort"], check=True, cwd=ROOT)
    return path


def _ms(value) -> str:
    return f"{value:.3f}" if value is not None else "-"


def table(result: dict) -> str:
    if result["mode"] == "cost":
        lines = ["| server | clients | req/s | mean batch | CPU ms/request: engine (or the one process) | front ends | "
                 "load generator |", "|---|---|---|---|---|---|---|"]
        for workers, levels in result["served"].items():
            name = "1 process" if workers == "1" else f"{workers} front ends + engine process"
            for r in levels:
                lines.append(f"| {name} | {r['concurrency']} | {r['throughput']:.1f} | {r['mean_batch'] or 0:.1f} | "
                             f"{_ms(r.get('engine_cpu_ms_per_img'))} | {_ms(r.get('frontends_cpu_ms_per_img'))} | "
                             f"{_ms(r.get('client_cpu_ms_per_img'))} |")
        return "\n".join(lines)
    ref = result["model_only"] if result["mode"] == "gpu" else result["in_process"]
    ref_name = "model-only" if result["mode"] == "gpu" else "in-process"
    lines = [f"| workers | clients | served req/s (img/s) | share of {ref_name} bs{ref['batch']} ({ref['img_s']:.0f} img/s) | "
             "p50 ms | p90 ms | p99 ms | errors | mean batch | CPU ms/img engine / front ends / clients |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for workers, levels in result["served"].items():
        for r in levels:
            mb = r.get("mean_batch")
            cpu = (f"{_ms(r.get('engine_cpu_ms_per_img'))} / {_ms(r.get('frontends_cpu_ms_per_img'))} / "
                   f"{_ms(r.get('client_cpu_ms_per_img'))}")
            lines.append(f"| {workers} | {r['concurrency']} | {r['throughput']:.1f} | {r['throughput'] / ref['img_s'] * 100:.1f} % | "
                         f"{r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | {r['errors']} | {mb:.1f} | {cpu} |" if mb else
                         f"| {workers} | {r['concurrency']} | {r['throughput']:.1f} | - | - | - | - | {r['errors']} | - | - |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, nargs="?")
    parser.add_argument("--cpu", action="store_true", help="MobileNetV2 on ONNX Runtime instead of ResNet-50 on the GPU")
    parser.add_argument("--cost", action="store_true", help="CPU time per request of the server processes (trivial model)")
    parser.add_argument("--slots", type=int, default=256, help="shared-memory request slots per front end (GPU; at least the clients per front end)")
    parser.add_argument("--onnx", help="the MobileNetV2 ONNX (default: the quickstart's cached export)")
    parser.add_argument("--max-batch", type=int, default=None, help="server max batch (GPU 64, CPU 32)")
    parser.add_argument("--delay-us", type=int, default=0)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--workers", dest="workers_list", type=lambda t: [x if "x" in x else int(x) for x in t.split(",")],
                        default=None,
                        help="front-end processes, comma-separated configurations (GPU default 1,4,8: W front ends + "
                        "one engine process each, WxK: with K engine instances; CPU 1: the CLI's --workers, "
                        "1 = one process)")
    parser.add_argument("--clients", type=lambda t: [int(x) for x in t.split(",")], default=None,
                        help="concurrency levels (GPU default 256; CPU 1,16,64)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--budget-s", type=float, default=150, help="start no further server configuration after this (GPU)")
    parser.add_argument("--ort-threads", type=int, default=0, help="ONNX Runtime intra-op threads, in process and served (CPU)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating in-process / served windows (CPU)")
    parser.add_argument("--inproc-s", type=float, default=10.0, help="seconds of in-process timing (CPU)")
    parser.add_argument("--loadgen-processes", type=int, default=None, help="client processes (GPU 8, CPU 1)")
    parser.add_argument("--profile-s", type=float, default=0, help="py-spy profiles (raw files and a summary in the "
                        "JSON) of the engine process and front end 0 for this many seconds of each window (needs py-spy)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu = not args.cpu and not args.cost
    args.max_batch = args.max_batch or (64 if gpu else 32)
    if args.child:
        args.workers = (args.workers_list or [1])[0]
        child(args)
        return 0
    args.workers_list = args.workers_list or ([1, 4, 8] if gpu else [1, 2] if args.cost else [1])
    args.clients = args.clients or ([256] if gpu else [32] if args.cost else [1, 16, 64])
    args.loadgen_processes = args.loadgen_processes or (8 if gpu else 1)
    if args.outdir is None:
        parser.error("OUTDIR is required")
    args.outdir.mkdir(parents=True, exist_ok=True)
    result = gpu_main(args) if gpu else cost_main(args) if args.cost else cpu_main(args)
    result["config"]["outdir"] = str(args.outdir)
    (args.outdir / "serve_bench.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    text = table(result)
    (args.outdir / "serve_bench.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
