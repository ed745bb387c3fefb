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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL", help="an .onnx file, an engine plan or a .pt2 package")
    parser.add_argument("--name", action="append", metavar="NAME",
                        help="model name in URLs, one per MODEL in order (default: the file stem)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s; 0.0.0.0 serves every interface)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port, 0 picks a free one (default: %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port, 0 picks a free one, -1 turns gRPC off (default: %(default)s)")
    group = parser.add_argument_group("dynamic batching (Triton's dynamic_batching)")
    group.add_argument("--max-batch", type=int, default=32, help="most rows per execution; 0 turns batching off (default: %(default)s)")
    group.add_argument("--max-queue-delay-us", type=int, default=0, metavar="US",
                       help="how long a batch may wait for more requests (default: %(default)s)")
    group.add_argument("--preferred-batch-sizes", type=int, nargs="+", default=[], metavar="N",
                       help="batch sizes dispatched as soon as they are reached")
    group.add_argument("--instances", type=int, default=1, metavar="K",
                       help="engine instances per model, each with its own thread; on several GPUs they spread over them (default: 1)")
    group = parser.add_argument_group("limits")
    group.add_argument("--max-queue", type=int, default=1024, metavar="N", help="queued requests per model before 503 (default: %(default)s)")
    group.add_argument("--timeout-s", type=float, default=30.0, help="answer 503 to a request not done in this time (default: %(default)s)")
    group.add_argument("--max-body-mb", type=float, default=64.0, help="request body limit; larger bodies get 413 (default: %(default)s)")
    group.add_argument("--drain-timeout-s", type=float, default=30.0, help="how long SIGTERM waits for running requests (default: %(default)s)")
    parser.add_argument("--labels", metavar="FILE", help="class labels, one per line, for the classification extension")
    parser.add_argument("--access-log", default="-", metavar="FILE",
                        help="one JSON line per request to FILE ('-': stderr, 'off': none; default: stderr)")
    options.add_engine(parser)
    options.add_shapes(parser)
    options.add_precision(parser)
    options.add_json(parser)


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


def _load_instances(args: argparse.Namespace, model: str) -> list:
    engines = []
    gpus = 0
    if args.engine in ("torch", "pytorch") and args.instances > 1:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    try:
        for i in range(args.instances):
            if gpus > 1:
                from trtflow.backends import load

                engines.append(load(model, "torch", device=i % gpus))
            else:
                engines.append(options.load_engine(args, model))
    except BaseException:
        for engine in engines:
            engine.close()
        raise
    return engines


def run(args: argparse.Namespace) -> int:
    from trtflow.serve.model import BatchConfig, ServedModel
    from trtflow.serve.server import ServeOptions, serve

    if args.instances < 1 or args.max_batch < 0 or args.max_queue < 1 or args.timeout_s <= 0 or args.max_body_mb <= 0:
        raise UsageError("--instances, --max-queue, --timeout-s and --max-body-mb must be positive, --max-batch >= 0")
    names = _names(args)
    labels = None
    if args.labels:
        try:
            labels = Path(args.labels).read_text().splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read --labels {args.labels}: {exc.strerror}") from None
    config = BatchConfig(args.max_batch, args.max_queue_delay_us, tuple(args.preferred_batch_sizes),
                         args.max_queue, args.timeout_s)
    models = [ServedModel(name, _load_instances(args, path), config, labels) for name, path in zip(names, args.models)]
    kind = "KIND_GPU" if any(getattr(m.engines[0], "device", None) is not None and
                             getattr(m.engines[0].device, "type", "") == "cuda" for m in models) else "KIND_CPU"
    opts = ServeOptions(args.host, args.http_port, None if args.grpc_port < 0 else args.grpc_port,
                        int(args.max_body_mb * (1 << 20)), args.drain_timeout_s, kind)
    _access_log(args.access_log)

    def ready(server) -> None:
        info = {"models": names, "host": args.host, "http_port": server.http_port, "grpc_port": server.grpc_port,
                "max_batch": {m.name: m.max_batch for m in models}, "instances": args.instances}
        if args.json:
            print(json.dumps(info), flush=True)
        else:
            grpc = f", gRPC {args.host}:{server.grpc_port}" if server.grpc_port else ""
            print(f"serving {', '.join(names)} on http://{args.host}:{server.http_port}{grpc} (Ctrl-C or SIGTERM drains and stops)",
                  file=sys.stderr, flush=True)

    try:
        serve(models, opts, on_ready=ready)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host} (HTTP {args.http_port}, gRPC {args.grpc_port}): {exc.strerror or exc}; "
                         "pick free ports with --http-port/--grpc-port") from None
    finally:
        for m in models:
            for engine in m.engines:
                engine.close()
    return 0
