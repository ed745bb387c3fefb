"""trtflow serve MODEL [MODEL...]: Triton's HTTP/gRPC protocol with dynamic batching."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from trtflow.cli import options
from trtflow.errors import UsageError

HELP = "serve models over Triton's HTTP/REST and gRPC protocol (KServe v2) with dynamic batching"
HOST, HTTP_PORT = "127.0.0.1", 8000  # the defaults of --host and --http-port (with --ray: a running Serve's own)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL", help="an .onnx file, an engine plan or a .pt2 package")
    parser.add_argument("--name", action="append", metavar="NAME",
                        help="model name in URLs, one per MODEL in order (default: the file stem)")
    parser.add_argument("--host", default=HOST, help="bind address (default: %(default)s; 0.0.0.0 serves every interface)")
    parser.add_argument("--http-port", type=_port(0), default=HTTP_PORT, help="HTTP port, 0 picks a free one (default: %(default)s)")
    parser.add_argument("--grpc-port", type=_port(-1), default=8001, help="gRPC port, 0 picks a free one, -1 turns gRPC off (default: %(default)s)")
    group = parser.add_argument_group("dynamic batching (Triton's dynamic_batching)")
    group.add_argument("--max-batch", type=int, default=32, help="most rows per execution; 0 turns batching off (default: %(default)s)")
    group.add_argument("--max-queue-delay-us", type=options.count(0), default=0, metavar="US",
                       help="how long a batch may wait for more requests (default: %(default)s)")
    group.add_argument("--preferred-batch-sizes", type=int, nargs="+", default=[], metavar="N",
                       help="batch sizes dispatched as soon as they are reached")
    group.add_argument("--instances", type=int, default=1, metavar="K",
                       help="engine instances per model, each with its own thread; on several GPUs they spread over them (default: 1)")
    group.add_argument("--workers", type=int, default=1, metavar="W",
                       help="W > 1: W front-end processes doing the HTTP/gRPC work on shared ports (SO_REUSEPORT) and "
                       "one engine process with the instances and the batcher, fed through shared memory; 1: one "
                       "process does both (default: 1)")
    group.add_argument("--shm-slots", type=int, default=128, metavar="N",
                       help="with --workers > 1: shared-memory request slots per front end; requests beyond them or "
                       "larger than a slot (one request of --shm-slot-rows rows) travel inline (default: %(default)s)")
    group.add_argument("--shm-slot-rows", type=int, default=1, metavar="R",
                       help="rows of one request a slot holds (default: %(default)s)")
    options.add_gpus(group, help="GPUs the instances spread over, round-robin, e.g. 0,1 or all (default: every visible "
                     "GPU for torch/TensorRT instances; ort needs --providers cuda)")
    group = parser.add_argument_group("limits")
    group.add_argument("--max-queue", type=int, default=1024, metavar="N", help="queued requests per model before 503 (default: %(default)s)")
    group.add_argument("--timeout-s", type=options.number(0), default=30.0, help="answer 503 to a request not done in this time (default: %(default)s)")
    group.add_argument("--max-body-mb", type=options.number(0), default=64.0, help="request body limit; larger bodies get 413 (default: %(default)s)")
    group.add_argument("--drain-timeout-s", type=options.number(0), default=30.0, help="how long SIGTERM waits for running requests (default: %(default)s)")
    group.add_argument("--idle-timeout-s", type=options.number(0), default=75.0,
                       help="close an HTTP connection whose client sends nothing for this long (default: %(default)s)")
    parser.add_argument("--threads", type=options.count(0), default=0, metavar="N",
                        help="ONNX Runtime intra-op threads per instance (default: 0, ONNX Runtime's choice)")
    parser.add_argument("--ort-spinning", action="store_true",
                        help="let ONNX Runtime's intra-op threads spin between runs (off by default when serving: "
                        "spinning takes the cores the protocol work needs)")
    parser.add_argument("--labels", metavar="FILE", help="class labels, one per line, for the classification extension")
    parser.add_argument("--access-log", default="-", metavar="FILE",
                        help="one JSON line per request to FILE ('-': stderr, 'off': none; default: stderr)")
    group = parser.add_argument_group("scale-out on Ray Serve (trtflow[ray]; see docs/serving.md)")
    group.add_argument("--ray", metavar="ADDRESS", help="deploy to the Ray cluster at ADDRESS ('auto', ray://HEAD:10001) "
                       "instead of serving here; --host/--http-port: the address Serve's proxy starts on (left at their "
                       "defaults, a Serve already running keeps its own; another address is refused)")
    group.add_argument("--ray-replicas", type=int, default=1, metavar="N", help="replicas per model (default: 1)")
    group.add_argument("--ray-autoscale", metavar="MIN:MAX", help="autoscale between MIN and MAX replicas instead")
    group.add_argument("--ray-gpus", type=options.number(0), default=0.0, metavar="G", help="GPUs per replica (1: one engine per GPU)")
    group.add_argument("--ray-cpus", type=options.number(0), default=1.0, metavar="C", help="CPUs per replica (default: 1)")
    options.add_engine(parser)
    options.add_shapes(parser)
    options.add_precision(parser)
    options.add_json(parser)


def _port(minimum: int):
    """argparse type: a TCP port 0..65535 (``minimum`` -1: -1 turns the listener off)."""
    count = options.count(minimum)

    def parse(text: str) -> int:
        value = count(text)
        if value > 65535:
            raise argparse.ArgumentTypeError(f"expected a port between {minimum} and 65535, got {value}")
        return value

    parse.__name__ = "port"
    return parse


def _names(args: argparse.Namespace) -> list[str]:
    names = list(args.name or [])
    if len(names) > len(args.models):
        raise UsageError(f"{len(names)} --name given for {len(args.models)} models; give at most one per MODEL")
    names += [Path(str(m)).stem for m in args.models[len(names):]]
    if len(set(names)) != len(names):
        raise UsageError(f"model names {names} repeat; give each MODEL its own --name")
    return names


def _access_log(target: str) -> None:
    logger = logging.getLogger("trtflow.serve.access")
    logger.propagate = False
    if target == "off":
        logger.setLevel(logging.WARNING)
        return
    handler = logging.StreamHandler(sys.stderr) if target == "-" else logging.FileHandler(target)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _check_precision(args: argparse.Namespace) -> None:
    """Refuse --fp16/--bf16/--int8/--best for a .pt2 package (the torch engine), as bench does:
    the package runs the precision it was built with, so the flags would be ignored."""
    from trtflow.backends import engine_name

    error = options.pt2_precision_error(args)
    if error and any(engine_name(args.engine, m) == "torch" for m in args.models):
        raise error


def _check_providers(args: argparse.Namespace) -> None:
    """Refuse --providers (an ONNX Runtime option) when no MODEL runs on ONNX Runtime: torch and
    TensorRT would ignore it. With --ray and --engine auto each replica resolves its own engine."""
    from trtflow.backends import canonical_engine, engine_name

    if args.providers == "cpu" or (args.ray and canonical_engine(args.engine) == "auto"):
        return
    engines = {Path(str(m)).name: engine_name(args.engine, m) for m in args.models}
    if all(e in ("torch", "tensorrt") for e in engines.values()):
        picked = ", ".join(f"{e} for {m}" for m, e in engines.items())
        raise UsageError(f"--providers is an ONNX Runtime option, ignored by the engine ({picked}): give "
                         "--engine ort to serve on ONNX Runtime (an .onnx MODEL), or drop --providers")


def _placement(args: argparse.Namespace, name: str) -> list | None:
    """The GPU of each instance: --gpus, or every visible GPU for torch/TensorRT instances when
    there are several of both; None: the engine's default device."""
    from trtflow.backends.devices import place, visible_gpus

    gpus = options.gpus_of(args)
    if gpus is None and name in ("torch", "tensorrt") and args.instances > 1 and visible_gpus() > 1:
        gpus = list(range(visible_gpus()))
    return place(args.instances, gpus) if gpus else None


def _load_instances(args: argparse.Namespace, model: str) -> list:
    from trtflow.backends import engine_name
    from trtflow.backends.devices import device_options

    engines = []
    name = engine_name(args.engine, model)
    placed = _placement(args, name)
    extra = {"spinning": args.ort_spinning} if name == "ort" else {}
    if args.threads and name == "ort":
        extra["threads"] = args.threads
    try:
        for i in range(args.instances):
            device = device_options(name, placed[i]) if placed else {}
            engines.append(options.load_engine(args, model, name, **extra, **device))
    except BaseException:
        for engine in engines:
            engine.close()
        raise
    return engines


def _labels(args: argparse.Namespace) -> list[str] | None:
    if not args.labels:
        return None
    try:
        return Path(args.labels).read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read --labels {args.labels}: {exc.strerror}") from None


def _load_models(args: argparse.Namespace, names: list[str], labels: list[str] | None) -> list:
    """Every MODEL with its instances (closed again when one fails to load)."""
    from trtflow.serve.model import BatchConfig, ServedModel

    config = BatchConfig(args.max_batch, args.max_queue_delay_us, tuple(args.preferred_batch_sizes),
                         args.max_queue, args.timeout_s)
    models = []
    try:
        for name, path in zip(names, args.models):
            models.append(ServedModel(name, _load_instances(args, path), config, labels))
    except BaseException:
        for m in models:
            m.close()
        raise
    return models


def _options(args: argparse.Namespace):
    from trtflow.serve.server import ServeOptions

    return ServeOptions(args.host, args.http_port, None if args.grpc_port < 0 else args.grpc_port,
                        int(args.max_body_mb * (1 << 20)), args.drain_timeout_s, idle_timeout_s=args.idle_timeout_s)


def _serve_one(args: argparse.Namespace, names: list[str], on_ready) -> None:
    """Load the models and serve until SIGTERM/SIGINT (one process)."""
    from trtflow.serve.server import listen_error, serve

    models = []
    try:
        models = _load_models(args, names, _labels(args))
        opts = _options(args)
        _access_log(args.access_log)
        try:
            serve(models, opts, on_ready=lambda server: on_ready(server, models))
        except OSError as exc:
            raise listen_error(opts, exc) from None
    finally:
        for m in models:
            m.close()


def _serve_workers(args: argparse.Namespace, names: list[str], ready) -> int:
    """--workers W > 1: one engine process, W front ends (trtflow.serve.workers)."""
    import functools

    from trtflow.serve.workers import WorkerOptions, serve_workers

    if args.http_port == 0 or args.grpc_port == 0:
        raise UsageError("--workers > 1 shares fixed ports: give --http-port and --grpc-port (not 0)")
    if args.shm_slots < 0 or args.shm_slot_rows < 1:
        raise UsageError("--shm-slots must be >= 0 and --shm-slot-rows >= 1")
    load = functools.partial(_load_models, args, names, _labels(args))
    setup = functools.partial(_child_logging, args.access_log, bool(getattr(args, "verbose", False)))

    def on_ready(r) -> None:
        ready(r.http_port, r.grpc_port, {"max_batch": {m.name: m.max_batch for m in r.infos}, "devices": r.devices,
                                         "pids": r.pids, "shm": {"slot_bytes": r.slot_bytes, "slots": r.slots}})

    return serve_workers(load, _options(args), WorkerOptions(args.workers, args.shm_slots, args.shm_slot_rows),
                         on_ready=on_ready, setup=setup)


def _child_logging(access_log: str, verbose: bool) -> None:
    """Logging of a --workers child process."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _access_log(access_log)


def _refused(args: argparse.Namespace, table: tuple) -> list[tuple]:
    """The rows of ``table`` ((flag, attribute, accepted values, ...)) whose flag has a value outside
    its accepted ones, those that ask for nothing more (the default, or what the mode does anyway)."""
    return [row for row in table if getattr(args, row[1], None) not in row[2]]


def _joined(rows: list[tuple]) -> str:
    return "/".join(row[0] for row in rows)


# (flag, attribute, accepted values): the shared memory of --workers > 1, the --ray deployment,
# and the flags --ray passes on only to a named engine
_SHM_FLAGS = (("--shm-slots", "shm_slots", (128,)), ("--shm-slot-rows", "shm_slot_rows", (1,)))
_RAY_FLAGS = (("--ray-replicas", "ray_replicas", (1,)), ("--ray-autoscale", "ray_autoscale", (None, "")),
              ("--ray-gpus", "ray_gpus", (0,)), ("--ray-cpus", "ray_cpus", (1,)))
_ENGINE_FLAGS = tuple((f"--{f}", f, (None, False)) for f in ("fp16", "bf16", "int8", "best", "stronglyTyped",
                                                             "shapes", "minShapes", "optShapes", "maxShapes"))
# flags of the local server that Ray Serve has no counterpart for: (flag, attribute, accepted
# values, what to do instead)
_SHM = "it sizes the shared memory of --workers > 1, which --ray does not use; drop the flag"
_NOT_ON_RAY = (
    ("--instances", "instances", (1,), "each replica holds one engine; give --ray-replicas N or --ray-autoscale MIN:MAX"),
    ("--workers", "workers", (1,), "Serve's HTTP proxies do the protocol work; scale with --ray-replicas N"),
    *((*row, _SHM) for row in _SHM_FLAGS),
    ("--preferred-batch-sizes", "preferred_batch_sizes", ([],),
     "Serve's batcher has no preferred sizes; shape batches with --max-batch and --max-queue-delay-us"),
    ("--grpc-port", "grpc_port", (8001, -1), "the replicas answer HTTP only, through Serve's proxy on --http-port; "
     "drop the flag"),
    ("--idle-timeout-s", "idle_timeout_s", (75.0,), "Serve's proxy keeps its own keep-alive timeout (Ray's HTTP "
     "options); drop the flag"),
    ("--access-log", "access_log", ("-",), "Serve logs each replica's requests in the Ray log folder of its node "
     "(/tmp/ray/session_latest/logs/serve/); drop the flag"),
)


def _deploy_ray(args: argparse.Namespace, names: list[str]) -> int:
    """--ray: one Serve application per model on a running Ray cluster (trtflow.serve.ray)."""
    from trtflow.serve.ray import RayServeOptions, deploy

    refused = _refused(args, _NOT_ON_RAY)
    if refused:
        flag, _, _, instead = refused[0]
        raise UsageError(f"{flag} does not apply with --ray: {instead}")
    if args.ray_autoscale and args.ray_replicas != 1:
        raise UsageError("--ray-replicas and --ray-autoscale both set the replicas; give one of them")
    autoscaling = None
    if args.ray_autoscale:
        lo, sep, hi = args.ray_autoscale.partition(":")
        if not (sep and lo.isdigit() and hi.isdigit() and 1 <= int(lo) <= int(hi)):
            raise UsageError(f"--ray-autoscale '{args.ray_autoscale}': expected MIN:MAX replicas, e.g. 1:4")
        autoscaling = {"min_replicas": int(lo), "max_replicas": int(hi)}
    from trtflow.backends import canonical_engine

    engine = canonical_engine(args.engine)  # "trt" is tensorrt: its flags go to the replicas too
    ort_opts = {"spinning": args.ort_spinning, **({"threads": args.threads} if args.threads else {})}
    if engine == "auto":
        given = _refused(args, _ENGINE_FLAGS)
        if given:  # each replica picks its engine on its own node; the flags would be dropped
            raise UsageError(f"{_joined(given)} with --ray need the engine named: give --engine tensorrt "
                             "(--engine auto is resolved on each replica's node, without these flags)")
        engine_opts = {}
        ort_opts.update(options.engine_options(args, "ort"))  # --providers, for the replicas whose engine is ort
    else:
        engine_opts = options.engine_options(args, engine)
    labels = _labels(args)
    urls = {}
    for i, (name, path) in enumerate(zip(names, args.models)):
        # the first model also answers /v2 and /v2/health; the others are mounted at their own model path
        opts = RayServeOptions(name=name, engine=args.engine, engine_options=engine_opts, ort_options=ort_opts,
                               max_batch=args.max_batch, batch_wait_timeout_s=args.max_queue_delay_us / 1e6,
                               timeout_s=args.timeout_s, max_queued_requests=args.max_queue,
                               graceful_shutdown_timeout_s=args.drain_timeout_s,
                               max_body=int(args.max_body_mb * (1 << 20)), num_replicas=args.ray_replicas,
                               autoscaling=autoscaling, num_gpus=args.ray_gpus, num_cpus=args.ray_cpus,
                               labels=labels, route_prefix="/" if i == 0 else f"/v2/models/{name}")
        # the defaults (and --http-port 0) take the address of a Serve already running on the cluster
        urls[name] = deploy(path, opts, address=args.ray, host=None if args.host == HOST else args.host,
                            port=None if args.http_port in (0, HTTP_PORT) else args.http_port)
    if args.json:
        print(json.dumps({"ray": args.ray, "models": names, "urls": urls}), flush=True)
    else:
        for name, url in urls.items():
            print(f"deployed {name} on Ray Serve at {url}/v2/models/{name}/infer", file=sys.stderr, flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.instances < 1 or args.workers < 1 or args.max_batch < 0 or args.max_queue < 1 or args.timeout_s <= 0 \
            or args.max_body_mb <= 0:
        raise UsageError("--instances, --workers, --max-queue, --timeout-s and --max-body-mb must be positive, "
                         "--max-batch >= 0")
    names = _names(args)
    _check_precision(args)
    _check_providers(args)
    if args.ray and args.gpus is not None:
        raise UsageError("--gpus places instances of this server; on Ray give --ray-gpus per replica instead")
    if args.ray:
        return _deploy_ray(args, names)
    given = _refused(args, _RAY_FLAGS)
    if given:
        raise UsageError(f"without --ray ADDRESS, {_joined(given)} would be ignored: give --ray to deploy on a "
                         "Ray cluster, or --instances K (engines per model) and --gpus to serve here")
    given = _refused(args, _SHM_FLAGS) if args.workers == 1 else []
    if given:
        raise UsageError(f"{_joined(given)} size the shared memory between front-end processes, which --workers 1 "
                         "does not have: give --workers N (N > 1) to use them, or drop the flag")

    def ready(http_port, grpc_port, extra: dict) -> None:
        """Report the listeners; ``extra``: max_batch and devices per model (and, with --workers, pids and shm)."""
        info = {"models": names, "host": args.host, "http_port": http_port, "grpc_port": grpc_port,
                "instances": args.instances, "workers": args.workers, **extra}
        if args.json:
            print(json.dumps(info), flush=True)
        else:
            grpc = f", gRPC {args.host}:{grpc_port}" if grpc_port else ""
            how = f"{args.workers} front-end processes and one engine process" if args.workers > 1 else "one process"
            print(f"serving {', '.join(names)} on http://{args.host}:{http_port}{grpc} "
                  f"({how}; Ctrl-C or SIGTERM drains and stops)", file=sys.stderr, flush=True)

    if args.workers > 1:
        return _serve_workers(args, names, ready)
    from trtflow.serve.engine_process import device_name

    _serve_one(args, names, lambda server, models: ready(server.http_port, server.grpc_port, {
        "max_batch": {m.name: m.max_batch for m in models},
        "devices": {m.name: [device_name(e) for e in m.engines] for m in models}}))
    return 0
