"""trtflow export MODULE:FACTORY --out model.onnx --input NAME:SHAPE[:DTYPE]: export and verify."""

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
    parser.add_argument("--out", required=True, metavar="MODEL.onnx", help="the ONNX file to write")
    add_export_options(parser)
    parser.add_argument("--atol", type=float, default=None, help="absolute tolerance of the verification (default: 1e-4)")
    parser.add_argument("--rtol", type=float, default=None, help="relative tolerance of the verification (default: 1e-3)")
    parser.add_argument("--no-verify", action="store_true", help="skip comparing ONNX Runtime with PyTorch")
    options.add_json(parser)


INPUT_HELP = "an example input in forward() order, e.g. x:1x3x224x224 or ids:1x16:int64 (repeatable)"


def add_export_options(
    parser: argparse.ArgumentParser, input_help: str = INPUT_HELP, input_metavar: str = "NAME:SHAPE[:DTYPE]"
) -> None:
    """Flags shared with ``trtflow compare MODULE:FACTORY``."""
    parser.add_argument("--input", action="append", metavar=input_metavar, help=input_help)
    parser.add_argument(
        "--dynamic", action="append", metavar="NAME:AXIS=LABEL",
        help="a dynamic axis, e.g. x:0=batch; axes sharing a label are one size (repeatable)",
    )
    parser.add_argument("--opset", type=int, default=None, help="ai.onnx opset (default: 18)")
    parser.add_argument("--output-names", metavar="A,B", help="names of the module's outputs, in order")
    parser.add_argument(
        "--exporter", default="auto", metavar="{auto,dynamo,torchscript}",
        help="PyTorch exporter (default: auto = dynamo, TorchScript when dynamo cannot)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random example inputs (default: 0)")


def module_and_examples(args: argparse.Namespace, spec: str):
    """The module from MODULE:FACTORY and its example inputs (from --input, or from the factory).

    Returns:
        ``(module, name -> tensor, input_names or None)``.

    Raises:
        ModelLoadError: the spec does not import or the factory fails.
        UsageError: no --input and a factory that returns no example inputs.
    """
    from trtflow.deps import require
    from trtflow.export.factory import load_factory
    from trtflow.export.inputs import parse_input_spec, random_examples

    require("torch", "trtflow export")
    specs = [parse_input_spec(text) for text in args.input or [] if "=" not in text]
    made = load_factory(spec)
    module, examples = (made if isinstance(made, tuple) and len(made) == 2 else (made, None))
    if not hasattr(module, "forward"):
        raise UsageError(f"{spec} returned a {type(module).__name__}, not a torch.nn.Module")
    if specs:
        return module, random_examples(specs, args.seed), [s.name for s in specs]
    if examples is None:
        raise UsageError(
            f"give the example input shapes of {spec}: --input NAME:SHAPE[:DTYPE] for each forward() "
            "argument, e.g. --input x:1x3x224x224"
        )
    return module, examples, None


def export_config(args: argparse.Namespace, input_names, verify: bool, atol: float | None = None,
                  rtol: float | None = None):
    """An ``ExportConfig`` from the shared flags (tolerances left at their defaults when None)."""
    from trtflow.export.config import DEFAULT_OPSET, ExportConfig
    from trtflow.export.inputs import parse_dynamic

    names = [n.strip() for n in args.output_names.split(",")] if args.output_names else None
    extra = {k: v for k, v in (("atol", atol), ("rtol", rtol)) if v is not None}
    return ExportConfig(
        input_names=input_names, output_names=names, dynamic=parse_dynamic(args.dynamic),
        opset=args.opset or DEFAULT_OPSET, exporter=args.exporter, verify=verify, **extra,
    )


def run(args: argparse.Namespace) -> int:
    from trtflow.compare.report import DIFF_COLUMNS, diff_row
    from trtflow.export import from_torch

    module, examples, names = module_and_examples(args, args.module)
    config = export_config(args, names, verify=not args.no_verify, atol=args.atol, rtol=args.rtol)
    with output.steps("exporting") as step:
        try:
            result = from_torch(module, examples, args.out, config=config, progress=step)
        except MismatchError as exc:
            result = exc.report
            if args.json and result is not None:
                output.print_json(result.to_dict())
            raise
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


def _shapes(shapes: dict) -> str:
    return ", ".join(f"{k}:{'x'.join(map(str, v))}" for k, v in shapes.items())

