"""trtflow loadgen URL --model M: closed-loop load at several concurrency levels (perf_analyzer's ideas)."""

from __future__ import annotations

import argparse

from trtflow.cli import options, output
from trtflow.errors import UsageError
from trtflow.spec import parse_shapes

HELP = "measure a Triton-protocol server: throughput and p50/p90/p95/p99 latency per concurrency level"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="server as HOST:PORT (the gRPC port with --protocol grpc)")
    parser.add_argument("--model", "-m", required=True, help="model name")
    parser.add_argument("--concurrency", default="1,4,16,64", help="client counts, comma-separated (default: %(default)s)")
    parser.add_argument("--duration", type=options.number(0), default=5.0, metavar="S", help="measurement seconds per level (default: %(default)s)")
    parser.add_argument("--warmup", type=options.number(0), default=1.0, metavar="S", help="seconds before each measurement (default: %(default)s)")
    parser.add_argument("--shapes", action="append", help="input shapes with the batch dim, NAME:1x3x224x224 (default: batch 1)")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http", help="default: %(default)s")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--binary", dest="binary", action="store_true", default=True, help="binary tensors (default)")
    mode.add_argument("--json-tensors", dest="binary", action="store_false", help="JSON tensors")
    parser.add_argument("--processes", type=int, default=1, metavar="N", help="processes the clients are spread over (default: 1)")
    parser.add_argument("--metadata-url", metavar="HOST:PORT", help="HTTP server to read model metadata from (gRPC runs)")
    parser.add_argument("--plot", metavar="FILE", help="draw throughput and latency against concurrency (.png, .svg or .pdf)")
    options.add_json(parser)


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--concurrency '{text}': expected client counts like 1,4,16,64") from None
    if not levels or min(levels) < 1:
        raise UsageError(f"--concurrency '{text}': expected client counts >= 1")
    return levels


def plot(results, path: str, title: str) -> None:
    from trtflow.deps import require

    require("matplotlib", "loadgen --plot")
    import matplotlib

    from trtflow.bench.report import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = [r.concurrency for r in results]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(c, [r.throughput for r in results], "o-")
    a.set(xscale="log", xlabel="concurrent clients", ylabel="requests/s", title="throughput")
    for q in ("p50", "p90", "p99"):
        b.plot(c, [getattr(r, q) for r in results], "o-", label=q)
    b.set(xscale="log", xlabel="concurrent clients", ylabel="ms", title="latency")
    b.legend()
    fig.suptitle(title)
    save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    from trtflow.serve.loadgen import LoadConfig, run_load

    if args.processes < 1 or args.duration <= 0 or args.warmup < 0:
        raise UsageError("--processes must be >= 1, --duration > 0 and --warmup >= 0")
    if args.plot is not None:  # before the load: a plot failing after it lost the results (printed after the plot)
        options.check_plot(args.plot)
        from trtflow.deps import require

        require("matplotlib", "loadgen --plot")
    config = LoadConfig(args.url, args.model, _levels(args.concurrency), args.duration, args.warmup,
                        parse_shapes(args.shapes), args.protocol, args.binary, args.processes,
                        metadata_url=args.metadata_url)
    with output.bar("loadgen", enabled=not args.json) as progress:
        results = run_load(config, progress)
    title = f"{args.model} at {args.url} ({args.protocol}, {'binary' if args.binary else 'JSON'} tensors)"
    if args.plot:
        plot(results, args.plot, title)
    if args.json:
        output.print_json({"url": args.url, "model": args.model, "protocol": args.protocol, "binary": args.binary,
                           "duration_s": args.duration, "levels": [r.to_dict() for r in results]})
        return 0
    output.print_table(
        title, ["clients", "req/s", "infer/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "errors"],
        [(r.concurrency, f"{r.throughput:.1f}", f"{r.infer_per_s:.1f}", f"{r.p50:.2f}", f"{r.p90:.2f}",
          f"{r.p95:.2f}", f"{r.p99:.2f}", r.errors) for r in results],
    )
    if args.plot:
        output.console().print(f"plot saved to {args.plot}")
    return 0
