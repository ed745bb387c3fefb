"""trtflow bench MODEL: trtexec's performance summary for any engine (ONNX, .pt2, MODULE:FACTORY)."""

from __future__ import annotations

import argparse

from trtflow.cli import options, output, trtexec
from trtflow.errors import UsageError

HELP = "benchmark a model like trtexec: throughput, latency percentiles, H2D/compute/D2H split"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?",
                        help="an .onnx file, an engine plan, a .pt2 package or MODULE:FACTORY (torch engine); "
                        "or trtexec's --onnx=FILE / --loadEngine=PLAN")
    options.add_engine(parser)
    options.add_shapes(parser)
    options.add_precision(parser)
    group = parser.add_argument_group("inference (trtexec flags)")
    group.add_argument("--iterations", type=options.count(1), default=10, help="run at least N queries (default: %(default)s)")
    group.add_argument("--duration", type=options.number(0), default=3.0, help="run at least S seconds (default: %(default)s)")
    group.add_argument("--warmUp", type=options.number(0), default=200.0, help="warm up for MS milliseconds (default: %(default)s)")
    group.add_argument("--useCudaGraph", action="store_true", help="capture the engine in CUDA graphs (torch engine, TensorRT)")
    group.add_argument("--noDataTransfers", action="store_true", help="leave H2D/D2H copies out of the timing")
    group.add_argument("--streams", type=options.count(1), default=1, help="spread queries over N CUDA streams (default: 1)")
    group.add_argument("--exportJson", metavar="FILE", help="write every figure and the per-query times as JSON")
    group.add_argument("--plot", metavar="FILE", help="write the latency distribution as a figure (.png, .svg or .pdf)")
    torch_group = parser.add_argument_group("torch engine")
    torch_group.add_argument("--compile", choices=("default", "reduce-overhead", "max-autotune"),
                             help="torch.compile mode (default: eager)")
    torch_group.add_argument("--channels-last", action="store_true", help="channels-last weights and inputs")
    torch_group.add_argument("--device", default=None, help="torch device, e.g. cuda:0 or cpu (default: cuda if present)")
    options.add_gpus(parser, help="one copy of the engine per GPU, run concurrently, throughput per GPU and summed "
                     "(e.g. 0,1 or all)")
    options.add_inputs(parser)
    options.add_json(parser)
    options.add_build(parser)
    trtexec.add_compat(parser, bench=True)


def _torch_options(args: argparse.Namespace) -> dict:
    return {
        "dtype": options.torch_dtype(args),
        "channels_last": args.channels_last,
        "cuda_graphs": args.useCudaGraph,
        "device": args.device,
    }


def _load(args: argparse.Namespace, extra: dict | None = None):
    """The engine for MODEL: MODULE:FACTORY and .pt2 on the torch engine, the rest by --engine
    (``extra``: more load options, e.g. the device of a --gpus copy)."""
    from trtflow.backends import canonical_engine, engine_name, load
    from trtflow.export.factory import is_factory_spec

    model = args.model
    name = "torch" if is_factory_spec(model) else engine_name(args.engine, model)
    given = {flag: getattr(args, dest, None) for flag, dest in (
        ("--memPoolSize", "memPoolSize"), ("--workspace", "workspace"), ("--builderOptimizationLevel", "builderOptimizationLevel"),
        ("--timingCacheFile", "timingCacheFile"), ("--plugins", "plugins"), ("--versionCompatible", "versionCompatible"),
        ("--hardwareCompatibilityLevel", "hardwareCompatibilityLevel"))}
    folded = f"workspace:{given['--workspace']}"  # apply_compat put --workspace into --memPoolSize
    given["--memPoolSize"] = [p for p in given["--memPoolSize"] or [] if p != folded]
    build = [flag for flag, value in given.items() if value not in (None, False, [])]  # --builderOptimizationLevel 0 too
    if build and name != "tensorrt":  # TensorRT build flags: the other engines ran as if they were not given
        raise UsageError(f"{', '.join(build)} set{'s' if len(build) == 1 else ''} how TensorRT builds the engine; "
                         f"the {name} engine does not build one: drop {'it' if len(build) == 1 else 'them'} "
                         "or give --engine tensorrt")
    if is_factory_spec(model):
        if canonical_engine(args.engine) not in ("auto", "torch"):
            raise UsageError(f"MODULE:FACTORY runs on the torch engine; got --engine {args.engine}. Export to ONNX first for other engines")
        return _load_factory(args)
    if name == "torch":  # a .pt2 package
        from trtflow.backends.torch.aoti import refuse_other_files

        refuse_other_files(model)  # before the precision flags are called those of a .pt2
        error = options.pt2_precision_error(args)
        if error:
            raise error
        if args.channels_last:
            raise UsageError("a .pt2 package keeps the layout it was built with; drop --channels-last")
        opts = _torch_options(args)
        return options.cli_split_hint(load(model, "torch", cuda_graphs=opts["cuda_graphs"], device=opts["device"]), args)
    if args.compile or args.channels_last or args.device:
        raise UsageError(f"--compile, --channels-last and --device apply to the torch engine, not {name}")
    if args.useCudaGraph and name != "tensorrt":
        raise UsageError(f"--useCudaGraph applies to the torch engine and TensorRT (--engine tensorrt), not {name}")
    graphs = {"use_cuda_graph": True} if args.useCudaGraph else {}  # trtexec's --useCudaGraph: TensorRT's own graphs
    return options.load_engine(args, model, name, **graphs, **(extra or {}))


def _load_on(args: argparse.Namespace, gpu: int):
    """One copy of the engine on GPU ``gpu`` (--gpus)."""
    from trtflow.backends import engine_name
    from trtflow.backends.devices import device_options
    from trtflow.export.factory import is_factory_spec

    if args.device:
        raise UsageError("--gpus places one copy per GPU; drop --device")
    if is_factory_spec(args.model):
        name = "torch"
    else:
        name = engine_name(args.engine, args.model)
    if name == "torch":
        return _load(argparse.Namespace(**{**vars(args), "device": f"cuda:{gpu}"}))
    return _load(args, device_options(name, gpu))


def _run_gpus(args: argparse.Namespace, gpus: list[int], config, files: dict) -> int:
    """--gpus: one copy per GPU, benchmarked concurrently; per-GPU and summed throughput."""
    import json
    from pathlib import Path

    from trtflow.bench import multi_text, multi_to_dict, run_multi

    if args.plot:
        raise UsageError("--plot draws one run; with --gpus use --exportJson (every copy's per-query times)")
    engines = []
    try:
        for gpu in gpus:
            engines.append(_load_on(args, gpu))
        feed = options.feed_for(engines[0], files, args)
        with output.bar(f"bench {args.model} on GPUs {','.join(map(str, gpus))}", enabled=not args.json) as progress:
            result = run_multi(engines, feed, config, progress=progress)
    finally:
        for engine in engines:
            engine.close()
    record = multi_to_dict(result)
    if args.exportJson:
        Path(args.exportJson).write_text(json.dumps(record, indent=2) + "\n")
    if args.json:
        output.print_json(record)
        return 0
    print(multi_text(result))
    if args.exportJson:
        print(f"JSON written to {args.exportJson}")
    return 0


def _load_factory(args: argparse.Namespace):
    from trtflow.deps import require
    from trtflow.backends.torch.runner import TorchEngine
    from trtflow.export.factory import load_factory

    torch = require("torch", "benchmarking MODULE:FACTORY")
    shapes = options.shapes_of(args)
    made = load_factory(args.model)
    module, examples = made if isinstance(made, tuple) else (made, None)
    if examples is None:
        if not shapes:
            raise UsageError(f"{args.model} needs input shapes: give --shapes NAME:1x3x224x224 with forward()'s argument names")
        from trtflow.feeds import random_feed
        from trtflow.spec import TensorSpec

        values = random_feed([TensorSpec(name, "float32", shape) for name, shape in shapes.items()], shapes, args.seed)
        examples = {name: torch.from_numpy(v) for name, v in values.items()}
    return options.cli_split_hint(TorchEngine(module, examples, compile=args.compile, **_torch_options(args)), args)


def run(args: argparse.Namespace) -> int:
    from trtflow.bench import BenchConfig, plot, run_bench, summary_text, to_dict, write_json
    from trtflow.feeds import parse_input_args

    config = BenchConfig(
        iterations=args.iterations, duration_s=args.duration, warmup_ms=args.warmUp,
        data_transfers=not args.noDataTransfers, streams=args.streams,
    )
    trtexec.apply_compat(args)
    if args.plot is not None:  # --plot "" too: refused, not taken as no --plot
        options.check_plot(args.plot)
        from trtflow.deps import require

        require("matplotlib", "--plot")  # before the run, not after it
    if args.exportJson is not None:  # --exportJson= too: the figures asked for would not be written
        options.check_out_path(args.exportJson, "--exportJson")
    if args.saveEngine is not None:  # --saveEngine= too: it ran the model without building or saving a plan
        options.check_out_path(args.saveEngine, "--saveEngine")
    options.check_distinct_paths(("--exportJson", args.exportJson), ("--plot", args.plot), ("--saveEngine", args.saveEngine))
    files = parse_input_args(args.input)
    gpus = options.gpus_of(args)
    if args.saveEngine and not args.buildOnly:  # the files the plan then runs, before it is built
        options.check_files_fit_profiles(args, files)
    if args.saveEngine or args.buildOnly:  # trtexec: build the ONNX model first (and stop with --buildOnly)
        built = _build_first(args)
        if args.buildOnly:
            if args.json:
                output.print_json(built)
            else:
                print(f"built {built['engine'] or 'the engine'} ({built['engine_bytes'] / 2**20:.2f} MiB); "
                      "--buildOnly: no inference")
            return 0
        args.model, args.engine = args.saveEngine, "tensorrt"
    if gpus is not None:
        return _run_gpus(args, gpus, config, files)
    with _load(args) as engine:
        feed = options.feed_for(engine, files, args)
        with output.bar(f"bench {args.model}", enabled=not args.json) as progress:
            result = run_bench(engine, feed, config, progress=progress)
    if args.exportJson:
        write_json(result, args.exportJson)
    if args.plot:
        plot(result, args.plot)
    if args.json:
        output.print_json(to_dict(result))
        return 0
    print(summary_text(result))
    for label, path in (("JSON", args.exportJson), ("plot", args.plot)):
        if path:
            print(f"{label} written to {path}")
    return 0


def _build_first(args: argparse.Namespace) -> dict:
    """trtexec's build step of bench: the ONNX model into a plan (written to --saveEngine when given)."""
    from trtflow.backends import canonical_engine

    engine = canonical_engine(args.engine)
    if engine not in ("auto", "tensorrt") or not str(args.model).lower().endswith(".onnx"):
        raise UsageError("--saveEngine/--buildOnly build a TensorRT engine from an ONNX model: give --onnx=MODEL.onnx "
                         "(and --engine tensorrt or no --engine)")
    config = options.build_config_of(args)
    if args.useCudaGraph:  # the plan the engine's CUDA graphs can capture (TensorRT-RTX refuses others)
        from trtflow.backends.tensorrt.flavor import load_flavor

        config = config.for_cuda_graphs(load_flavor().is_rtx)
    with output.bar("building", enabled=not args.json) as progress:
        if args.saveEngine:
            from trtflow.cli import build

            options.check_out_path(args.saveEngine, "--saveEngine")
            args.no_cache = getattr(args, "no_cache", False)
            meta, _ = build._build(args, config, progress)
            return {"engine": args.saveEngine, "engine_bytes": meta["engine_bytes"],
                    "inferred_profiles": meta.get("inferred_profiles", [])}
        from trtflow.backends.tensorrt.builder import build_engine

        result = build_engine(args.model, config, progress=progress)
        return {"engine": None, "engine_bytes": result.engine_bytes, "inferred_profiles": result.notes}
