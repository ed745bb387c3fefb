"""trtflow tune MODEL: the fastest configuration of an engine within an accuracy bound, saved for reuse."""

from __future__ import annotations

import argparse

from trtflow.cli import options, output
from trtflow.errors import MismatchError, UsageError

HELP = "find the fastest engine configuration within an accuracy bound vs FP32, and save it for load(tune=True)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an .onnx file (ort, tensorrt) or MODULE:FACTORY (torch; exported to ONNX for ort/tensorrt)")
    parser.add_argument("--shapes", action="append", help="input shapes to tune for, trtexec syntax: NAME:64x3x224x224")
    parser.add_argument("--engine", default="torch", help="torch, ort or tensorrt (default: %(default)s)")
    parser.add_argument("--precisions", default="fp32,fp16",
                        help="comma-separated from fp32, fp16, bf16, int8, fp8 (default: %(default)s)")
    bound = parser.add_argument_group("accuracy bound vs the FP32 reference")
    bound.add_argument("--atol", type=options.number(0), help="absolute tolerance (default 1e-2, with --rtol 1e-2)")
    bound.add_argument("--rtol", type=options.number(0), help="relative tolerance")
    bound.add_argument("--metric", choices=("allclose", "relative", "top1"),
                       help="allclose (default): |out - FP32| <= atol + rtol |FP32| per element; relative: "
                            "max |out - FP32| <= rtol max |FP32| per output; top1: top-1 agreement of classifier outputs")
    bound.add_argument("--min-agreement", type=options.number(0), help="top-1 agreement needed with --metric top1 (default 0.99)")
    parser.add_argument("--calib", metavar="DIR|NPZ",
                        help="accuracy inputs and INT8 calibration set: a folder of .npy/.npz (or images, ONNX only) "
                             "or one .npz (default: random inputs)")
    parser.add_argument("--calib-preprocess", metavar="SPEC", help='image preprocessing for --calib images, e.g. '
                        '"resize=256,crop=224,mean=0.485,0.456,0.406,std=0.229,0.224,0.225"')
    parser.add_argument("--budget-s", type=options.number(0), default=600.0, help="stop trying configurations after S seconds (default: %(default)s)")
    parser.add_argument("--only", action="append", metavar="GLOB", help="try only configurations matching (e.g. 'fp16 *graphs*')")
    parser.add_argument("--threads", help="ONNX Runtime thread counts to try, comma-separated (default: 1, half, all cores)")
    parser.add_argument("--providers", action="append", metavar="P[,P]",
                        help="an ONNX Runtime provider list to try, in priority order (repeatable, e.g. --providers cpu "
                             "--providers cuda,cpu; default: cpu, and cuda,cpu where installed)")
    parser.add_argument("--short-s", type=options.number(0), default=0.3, help="first timing of each configuration (default: %(default)s)")
    parser.add_argument("--full-s", type=options.number(0), default=1.0, help="full timing of the survivors (default: %(default)s)")
    parser.add_argument("--device", default=None, help="torch device (default: the GPU when there is one)")
    parser.add_argument("--no-save", dest="save", action="store_false", help="do not save the choice")
    parser.add_argument("--plot", metavar="FILE", help="write throughput per configuration as a figure (.png, .svg or .pdf)")
    options.add_seed(parser)
    options.add_json(parser)


def _model(args: argparse.Namespace):
    from trtflow.backends import canonical_engine
    from trtflow.export.factory import is_factory_spec, load_factory

    if not is_factory_spec(args.model):
        if canonical_engine(args.engine) == "torch":
            raise UsageError(f"the torch engine tunes a MODULE:FACTORY model; '{args.model}' is a file. "
                             "Use --engine ort or tensorrt for ONNX")
        return args.model
    made = load_factory(args.model)
    return made[0] if isinstance(made, tuple) else made


def run(args: argparse.Namespace) -> int:
    from trtflow.spec import parse_names, parse_shapes
    from trtflow.tune import TuneOptions, tune
    from trtflow.tune.result import COLUMNS, plot, table_rows

    if args.plot is not None:  # --plot "" too: refused, not taken as no --plot
        options.check_plot(args.plot)
        # checked before the tuning, not after it: a plot that cannot be drawn would lose the table
        from trtflow.deps import require

        require("matplotlib", "--plot")
    try:
        threads = [int(t) for t in args.threads.split(",")] if args.threads else None
    except ValueError:
        raise UsageError(f"--threads {args.threads}: expected comma-separated integers, e.g. 1,2,4") from None
    providers = [list(parse_names(item, "--providers")) for item in args.providers or []] or None
    opts = TuneOptions(short_s=args.short_s, full_s=args.full_s, only=args.only, threads=threads, providers=providers,
                       calib_preprocess=args.calib_preprocess, seed=args.seed, save=args.save)
    model = _model(args)
    try:
        with output.bar(f"tune {args.model}", enabled=not args.json) as progress:
            result = tune(model, shapes=parse_shapes(args.shapes) or None, engine=args.engine,
                          precisions=args.precisions, atol=args.atol,
                          rtol=args.rtol, metric=args.metric, min_agreement=args.min_agreement, calib=args.calib,
                          budget_s=args.budget_s, progress=progress, device=args.device, options=opts)
    except MismatchError as exc:  # none within the bound: the measurements still show (--json: main prints them)
        configs = list(exc.report or [])
        if args.json:
            exc.json_report = {"chosen": None, "configs": [c.to_dict() for c in configs]}
        elif configs:
            output.print_table(f"trtflow tune {args.model}: no configuration within the bound", COLUMNS,
                               table_rows(configs))
        raise
    if args.plot:
        plot(result, args.plot)
    if args.json:
        output.print_json(result.to_dict())
        return 0
    output.print_table(f"trtflow tune: {result.engine} on {result.device}, shapes {result.shapes}", COLUMNS,
                       table_rows(result))
    best = result.best
    print(f"chosen: {result.chosen} ({best.throughput:.5g} inferences/s, p50 {best.p50_ms:.4g} ms)")
    print(f"bound: {result.bound}; accuracy inputs: {result.accuracy_inputs}")
    for note in result.notes:
        print(f"note: {note}")
    print(f"tune took {result.wall_s:.1f} s" + (f"; saved to {result.record_path} (trtflow.load(..., tune=True) uses it)"
                                                 if result.record_path else ""))
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0
