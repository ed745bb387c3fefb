"""trtflow export MODULE:FACTORY -o model.onnx --shapes NAME:SHAPE [--dtypes NAME:DTYPE]: export and verify."""

from __future__ import annotations

import argparse
import logging

from trtflow.cli import options, output
from trtflow.errors import MismatchError, UsageError

HELP = "export a PyTorch module (MODULE:FACTORY) to one ONNX file and verify it against PyTorch"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "module", metavar="MODULE:FACTORY",
        help="an importable module and a function returning the nn.Module (or (module, example_inputs))",
    )
    options.add_out(parser, "MODEL.onnx", "the ONNX file to write", required=True)
    parser.add_argument("--shapes", action="append", metavar="NAME:1x3x224x224",
                        help="example input shapes in forward() order, trtexec syntax: x:1x3x224x224,ids:1x16")
    options.add_inputs(parser, help="example input values: NAME=FILE.npy, NAME=FILE.npz[:KEY] or NAME=random "
                       "(repeatable; default: random values of --shapes, or the factory's own examples)")
    add_export_options(parser)
    options.add_tolerances(parser, 1e-4, 1e-3, " of the verification")
    parser.add_argument("--min-agreement", type=options.number(0), default=1.0, metavar="SHARE",
                        help="integer outputs (class ids, argmax maps) pass when this share of their elements is "
                        "equal (default: 1)")
    parser.add_argument("--no-verify", action="store_true", help="skip comparing ONNX Runtime with PyTorch")
    options.add_json(parser)


def add_export_options(parser: argparse.ArgumentParser) -> None:
    """Flags shared with ``trtflow compare MODULE:FACTORY`` (shapes and --input come from the command)."""
    parser.add_argument("--dtypes", action="append", metavar="NAME:DTYPE",
                        help="dtype of an example input when not float32, e.g. ids:int64 (repeatable)")
    parser.add_argument(
        "--dynamic", action="append", metavar="NAME:AXIS=LABEL",
        help="a dynamic axis, e.g. x:0=batch; axes sharing a label are one size (repeatable)",
    )
    parser.add_argument("--opset", type=options.count(1), default=None, help="ai.onnx opset (default: 18)")
    parser.add_argument("--output-names", metavar="A,B", help="names of the module's outputs, in order")
    parser.add_argument(
        "--exporter", default="auto", metavar="{auto,dynamo,torchscript}",
        help="PyTorch exporter (default: auto = dynamo, TorchScript when dynamo cannot)",
    )


def module_and_examples(args: argparse.Namespace, spec: str, use_files: bool = True):
    """The module from MODULE:FACTORY and its example inputs (from --shapes/--dtypes, --input
    files when ``use_files``, or from the factory; without --shapes, files for some of the
    factory's named examples take their places).

    Returns:
        ``(module, name -> tensor, input_names or None)``.

    Raises:
        ModelLoadError: the spec does not import, the factory fails, an --input file is unreadable.
        UsageError: no shapes and a factory that returns no example inputs; --dtypes for an unknown input.
    """
    from trtflow.arrays import to_torch
    from trtflow.deps import require
    from trtflow.export.factory import load_factory
    from trtflow.export.inputs import parse_dtypes
    from trtflow.feeds import load_array, parse_input_args, random_array, _rng
    from trtflow.spec import TensorSpec

    torch = require("torch", "trtflow export")
    shapes = options.shapes_of(args)
    dtypes = parse_dtypes(args.dtypes)
    files = parse_input_args(args.input) if use_files else {}
    rng = _rng(args.seed)  # refuses a bad seed before the factory runs
    made = load_factory(spec)
    module, examples = (made if isinstance(made, tuple) and len(made) == 2 else (made, None))
    if not hasattr(module, "forward"):
        raise UsageError(f"{spec} returned a {type(module).__name__}, not a torch.nn.Module")
    if examples is not None and not shapes and files and len(files) < _count(examples):
        return module, _with_files(spec, examples, files), None  # the factory's set, some from files
    names = list(dict.fromkeys([*shapes, *files]))
    unknown = [n for n in dtypes if n not in names]
    if unknown:
        raise UsageError(f"--dtypes names {unknown}, which have no --shapes or --input; give --shapes NAME:SHAPE too")
    if names:
        values = {}
        for name in names:
            if files.get(name, "random") != "random":
                values[name] = to_torch(load_array(files[name], name))
            elif name not in shapes:
                raise UsageError(f"--input {name}=random needs a shape: add --shapes {name}:1x3x224x224")
            else:
                tensor_spec = TensorSpec(name, dtypes.get(name, "float32"), shapes[name])
                values[name] = torch.from_numpy(random_array(tensor_spec, shapes[name], rng))
        return module, values, names
    if examples is None:
        raise UsageError(
            f"give the example input shapes of {spec}: --shapes NAME:SHAPE for each forward() argument, "
            "e.g. --shapes x:1x3x224x224 (and --dtypes ids:int64 for non-float inputs)"
        )
    return module, examples, None


def _count(examples) -> int:
    """How many inputs a factory's examples hold (a dict or sequence of them, or one tensor)."""
    return len(examples) if isinstance(examples, (dict, list, tuple)) else 1


def _with_files(spec: str, examples, files: dict) -> dict:
    """A factory's examples (by name) with the --input files in place of those they name."""
    from trtflow.arrays import to_torch
    from trtflow.feeds import load_array

    unknown = sorted(set(files) - set(examples)) if isinstance(examples, dict) else sorted(files)
    if unknown:
        have = (f"inputs {sorted(examples)}" if isinstance(examples, dict)
                else f"{_count(examples)} unnamed example inputs")
        raise UsageError(f"--input {', '.join(unknown)}: {spec} returns {have}, and the files name only some of "
                         "them; give --input for every input, or --shapes NAME:SHAPE for each")
    return {name: to_torch(load_array(files[name], name)) if files.get(name, "random") != "random"
            else value for name, value in examples.items()}


def export_config(args: argparse.Namespace, input_names, verify: bool, tolerances: bool = False):
    """An ``ExportConfig`` from the shared flags (with --atol/--rtol when ``tolerances``)."""
    from trtflow.export.config import DEFAULT_OPSET, ExportConfig
    from trtflow.export.inputs import parse_dynamic

    names = [n.strip() for n in args.output_names.split(",")] if args.output_names else None
    extra = {}
    if tolerances:
        defaults = ExportConfig()
        atol, rtol, per_atol, per_rtol = options.tolerances_of(args, defaults.atol, defaults.rtol)
        extra = dict(atol=atol, rtol=rtol, per_output_atol=per_atol, per_output_rtol=per_rtol,
                     min_agreement=getattr(args, "min_agreement", 1.0))
    return ExportConfig(
        input_names=input_names, output_names=names, dynamic=parse_dynamic(args.dynamic),
        opset=args.opset or DEFAULT_OPSET, exporter=args.exporter, verify=verify, **extra,
    )


def run(args: argparse.Namespace) -> int:
    from trtflow.compare.report import DIFF_COLUMNS, diff_row
    from trtflow.export import from_torch

    options.check_out_path(args.out, "--out", ".onnx")
    module, examples, names = module_and_examples(args, args.module)
    config = export_config(args, names, verify=not args.no_verify, tolerances=True)
    with output.bar("exporting") as step:
        try:
            result = from_torch(module, examples, args.out, config=config, progress=step)
        except MismatchError as exc:  # --json: main prints the result with the error, one object
            if exc.report is not None:
                exc.json_report = exc.report.to_dict()
            raise
    random_inputs = _random_inputs(args, names)
    if random_inputs:
        from trtflow.feeds import INT_RANGE

        result.notes.append(f"example inputs {random_inputs} are random: standard normal floats (seed {args.seed}), "
                            f"integers in [{INT_RANGE[0]}, {INT_RANGE[1]}); verify on realistic values with "
                            "--input NAME=FILE.npy")
    if args.json:
        output.print_json(result.to_dict())
        return 0
    con = output.console()
    con.print(f"wrote {result.path} (opset {result.opset}, {result.exporter} exporter)")
    for note in result.notes:
        con.print(f"note: {note}")
    output.print_table(
        "ONNX inputs and outputs", ["io", "name", "dtype", "shape"],
        [("input", s.name, s.dtype, "x".join(map(str, s.shape))) for s in result.inputs]
        + [("output", s.name, s.dtype, "x".join(map(str, s.shape))) for s in result.outputs],
    )
    if result.verification:
        output.print_table(
            f"verification: ONNX Runtime vs PyTorch (atol {config.atol:g}, rtol {config.rtol:g})",
            ["inputs", *DIFF_COLUMNS],
            [diff_row(d, (_shapes(case.input_shapes),)) for case in result.verification for d in case.diffs],
        )
    else:
        con.print("not verified (--no-verify)")
    return 0


def _random_inputs(args: argparse.Namespace, names) -> list[str]:
    """The example inputs drawn at random (from --shapes, without an --input file)."""
    from trtflow.feeds import parse_input_args

    files = parse_input_args(args.input)
    return [n for n in (names or []) if files.get(n, "random") == "random"]


def _shapes(shapes: dict) -> str:
    return ", ".join(f"{k}:{'x'.join(map(str, v))}" for k, v in shapes.items())

