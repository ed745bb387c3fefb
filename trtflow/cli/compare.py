"""trtflow compare MODEL --engines ort,tensorrt: the same inputs through every engine, first is the reference.

MODEL is an .onnx file, or a MODULE:FACTORY spec: the module is exported to a temporary ONNX
file and PyTorch (``torch``) is compared with the engines that run that file.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile

from trtflow.cli import options, output
from trtflow.cli.export import add_export_options
from trtflow.errors import MismatchError, UsageError

HELP = "run the same inputs through several engines and compare each output with the first engine's"

DEFAULT_ENGINES = {"onnx": "ort,tensorrt", "module": "torch,ort"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an .onnx file, or MODULE:FACTORY to compare PyTorch with its ONNX export")
    parser.add_argument("other", nargs="?", metavar="OTHER",
                        help="a second model file compared with MODEL (the reference) on the same inputs: "
                        "two ONNX files on --engines' first engine (default ort), or MODULE:FACTORY (torch) "
                        "against this ONNX file (ort)")
    parser.add_argument(
        "--engines", metavar="A,B[,C]",
        help="engines to run, the first is the reference: ort, torch, tensorrt "
        f"(default: {DEFAULT_ENGINES['onnx']} for .onnx, {DEFAULT_ENGINES['module']} for MODULE:FACTORY)",
    )
    options.add_tolerances(parser, 1e-5, 1e-5)
    parser.add_argument("--equal-nan", action="store_true", help="a NaN on both sides at one place passes (default: NaN fails)")
    add_min_agreement(parser)
    parser.add_argument(
        "--providers", default="cpu", help="ONNX Runtime providers for the ort engine, comma-separated (default: cpu)"
    )
    options.add_shapes(parser)
    options.add_inputs(parser)
    group = parser.add_argument_group("MODULE:FACTORY (exported to ONNX first; inputs in forward() order)")
    add_export_options(group)
    options.add_json(parser)


def add_min_agreement(parser: argparse.ArgumentParser) -> None:
    """``--min-agreement X``: the share of equal elements integer outputs (class ids) need."""
    parser.add_argument("--min-agreement", type=options.number(0), default=1.0, metavar="SHARE",
                        help="integer and bool outputs (class ids, argmax maps) pass when at least this share of "
                        "their elements is equal (default: 1, all; 0.99 lets 1%% differ)")


def _engine_names(text: str) -> list[str]:
    from trtflow.backends import ENGINES, canonical_engine

    names = [n.strip() for n in text.split(",") if n.strip()]
    out = []
    for name in names:
        key = canonical_engine(name)
        if key not in ENGINES:
            raise UsageError(f"unknown engine '{name}' in --engines; choose from: {', '.join(ENGINES)}")
        out.append(key)
    if len(out) < 2:
        raise UsageError(f"--engines needs at least two engines, the first being the reference; got '{text}'")
    if len(set(out)) != len(out):
        raise UsageError(f"--engines lists an engine twice: '{text}'")
    return out


def run(args: argparse.Namespace) -> int:
    from trtflow.compare.core import Tolerances
    from trtflow.export.factory import is_factory_spec

    is_module = is_factory_spec(args.model)
    atol, rtol, per_atol, per_rtol = options.tolerances_of(args, 1e-5, 1e-5)
    tolerances = Tolerances(atol, rtol, per_atol, per_rtol, equal_nan=args.equal_nan, min_agreement=args.min_agreement)
    if args.dtypes and not is_module:
        raise UsageError("--dtypes sets the example inputs of a MODULE:FACTORY; an ONNX model has its own dtypes")
    if args.other:
        engines = None
    else:
        engines = _engine_names(args.engines or DEFAULT_ENGINES["module" if is_module else "onnx"])
    with contextlib.ExitStack() as stack:
        if args.other:
            report = _compare_files(args, is_module, tolerances, stack)
        elif is_module:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="trtflow-compare-"))
            report = _compare_module(args, engines, tolerances, tmp, stack)
        else:
            report = _compare_onnx(args, engines, tolerances, stack)
    if not args.json:
        _print(report, tolerances)
    try:
        report.raise_for_mismatch()
    except MismatchError as exc:  # --json: main prints the report with the error, one object
        exc.json_report = report.to_dict()
        raise
    if args.json:
        output.print_json(report.to_dict())
    return 0


def _compare_onnx(args, engines: list[str], tolerances, stack: contextlib.ExitStack):
    from trtflow.compare.engines import compare_engines
    from trtflow.feeds import parse_input_args

    if "torch" in engines:
        raise UsageError(
            "the torch engine runs PyTorch modules, not ONNX files: compare an .onnx with --engines ort,tensorrt, "
            "or give MODULE:FACTORY to compare PyTorch with its ONNX export"
        )
    files = parse_input_args(args.input)
    loaded = {}
    with output.bar("loading") as step:
        for name in engines:
            step(f"loading the {name} engine")
            loaded[name] = stack.enter_context(options.load_engine(args, args.model, name))
        step("running")
        ref = loaded[engines[0]]
        feed = options.feed_for(ref, files, args)  # a --shapes an --input file contradicts is refused, as in run
        return compare_engines(loaded, feed, tolerances, model=str(args.model))


def _compare_files(args, is_module: bool, tolerances, stack: contextlib.ExitStack):
    """MODEL against OTHER, each on one engine: two ONNX files, or a module against an ONNX file."""
    from trtflow.arrays import to_numpy
    from trtflow.backends import load
    from trtflow.cli.export import module_and_examples
    from trtflow.compare.engines import compare_engines
    from trtflow.export.factory import is_factory_spec
    from trtflow.feeds import parse_input_args

    if is_factory_spec(args.other):
        raise UsageError(f"OTHER ({args.other}) must be a model file, e.g. an .onnx file (MODEL may be MODULE:FACTORY)")
    engine = (args.engines or "ort").split(",")[0].strip().lower()
    if "," in (args.engines or ""):
        raise UsageError("with two model files, --engines names one engine both run on (e.g. --engines ort)")
    files = parse_input_args(args.input)
    with output.bar("loading") as step:
        other = stack.enter_context(options.load_engine(args, args.other, engine))
        if is_module:
            step(f"loading {args.model} (torch)")
            names = [s.name for s in other.inputs]
            unknown = [n for n in files if n not in names]
            if unknown:
                raise UsageError(f"--input names {unknown}, not inputs of {args.other}; its inputs are {names}")
            # the --input files are the example inputs: PyTorch then runs at their shapes, not --shapes'
            module, examples, _ = module_and_examples(args, args.model, use_files=True)
            options.check_files_match_shapes(examples, files, args)  # as run and bench refuse it
            # examples named after --shapes/--input, in the order given: put them in OTHER's input order
            values = ([examples[n] for n in names] if isinstance(examples, dict) and set(examples) == set(names)
                      else _example_list(examples))
            first = load(module, engine="torch", example_inputs=values,
                         input_names=names, output_names=[s.name for s in other.outputs])
            options.cli_split_hint(first, args)
            feed = {s.name: to_numpy(v) for s, v in zip(other.inputs, values)}
            labels = (f"torch:{args.model}", f"{engine}:{args.other}")
        else:
            first = options.load_engine(args, args.model, engine)
            feed = options.feed_for(first, files, args)
            labels = (f"{engine}:{args.model}", f"{engine}:{args.other}")
        first = stack.enter_context(first)
        if labels[0] == labels[1]:
            labels = (labels[0], labels[1] + " (OTHER)")
        step("running")
        return compare_engines({labels[0]: first, labels[1]: other}, feed, tolerances,
                               model=f"{args.model} vs {args.other}")


def _compare_module(args, engines: list[str], tolerances, tmp: str, stack: contextlib.ExitStack):
    from trtflow.arrays import to_numpy
    from trtflow.cli.export import export_config, module_and_examples
    from trtflow.compare.engines import compare_engines
    from trtflow.feeds import build_feed, parse_input_args
    from trtflow.backends import load
    from trtflow.export import from_torch

    files = parse_input_args(args.input)  # the values compared on
    on_file = {n: v for n, v in files.items() if v != "random"}
    # the export uses --shapes, else the --input files (compared at their own shapes), else the factory's examples
    use_files = bool(on_file) and not options.shapes_of(args)
    module, examples, names = module_and_examples(args, args.model, use_files=use_files)
    config = export_config(args, names, verify=False)
    options.check_files_match_shapes(None, files, args, config.dynamic)  # before the export, as run refuses it
    onnx_path = f"{tmp}/model.onnx"
    loaded = {}
    with output.bar("exporting") as step:
        result = from_torch(module, examples, onnx_path, config=config, progress=step)
        input_names = [s.name for s in result.inputs]
        output_names = [s.name for s in result.outputs]
        for name in engines:
            step(f"loading the {name} engine")
            if name == "torch":
                engine = load(
                    module, engine="torch", example_inputs=_example_list(examples), input_names=input_names,
                    output_names=output_names, dynamic=config.dynamic or None,
                )
                options.cli_split_hint(engine, args)
            else:
                engine = options.load_engine(args, onnx_path, name)
            loaded[name] = stack.enter_context(engine)
        step("running")
        if isinstance(examples, dict):  # the example inputs themselves
            feed = {k: to_numpy(v) for k, v in examples.items()}
        else:  # a tensor or a sequence (a factory's own examples): in forward() order
            feed = {s.name: to_numpy(v) for s, v in zip(result.inputs, _example_list(examples))}
        if files:
            shapes = {s.name: tuple(feed[s.name].shape) for s in result.inputs if s.name in feed}
            feed = build_feed(result.inputs, files, shapes, args.seed)
        report = compare_engines(loaded, feed, tolerances, model=args.model)
    report.notes.append(f"exported with the {result.exporter} exporter, opset {result.opset}")
    return report


def _example_list(examples) -> list:
    """Example inputs as a list in forward() order: from a name -> tensor dict, a sequence or one tensor
    (what a factory may return beside its module, as ``from_torch`` takes them)."""
    if isinstance(examples, dict):
        return list(examples.values())
    return list(examples) if isinstance(examples, (list, tuple)) else [examples]


def _print(report, tolerances) -> None:
    from trtflow.compare.report import DIFF_COLUMNS

    con = output.console()
    shapes = ", ".join(f"{k}:{'x'.join(map(str, v['shape']))} {v['dtype']}" for k, v in report.inputs.items())
    con.print(f"{report.model}: inputs {shapes}; reference engine: {report.engines[0]}")
    for note in report.notes:
        con.print(f"note: {note}")
    output.print_table(
        f"compared with {report.engines[0]} (atol {tolerances.atol:g}, rtol {tolerances.rtol:g})",
        ["engine", *DIFF_COLUMNS], report.rows(),
    )
    con.print("PASSED" if report.passed else "FAILED: outputs differ beyond tolerance")

