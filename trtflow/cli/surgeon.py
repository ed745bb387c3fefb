"""trtflow surgeon EDIT IN.onnx -o OUT.onnx: one graph edit, verified with ONNX Runtime before vs after.

The edit's own flags are parsed only once the edit is chosen, so listing commands imports no
edit module (and a missing optional package disables one edit, not the CLI). The flags become
the edit's options dataclass (``surgeon_flags.py``); the edits themselves know nothing of argparse.
"""

from __future__ import annotations

import argparse
import logging

from trtflow.errors import MismatchError, UsageError

HELP = "edit an ONNX graph (simplify, fix-shapes, fp16, quantize, ...), verified with ONNX Runtime"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from trtflow.edits.registry import EDIT_MODULES

    names = ", ".join(EDIT_MODULES)
    parser.description = (
        f"{HELP}. Edits: {names}. Run `trtflow surgeon EDIT --help` for the options of one edit."
    )
    parser.add_argument("edit", metavar="EDIT", help=f"one of: {names}")
    parser.add_argument("rest", nargs=argparse.REMAINDER, metavar="IN.onnx -o OUT.onnx [options]",
                        help="the model, the output path and the edit's options")


def edit_command_parser(edit) -> argparse.ArgumentParser:
    """The full parser of ``trtflow surgeon EDIT``: common options plus the edit's own."""
    from trtflow.cli import options
    from trtflow.cli.main import ArgParser
    from trtflow.cli.surgeon_flags import add_edit_flags

    parser = ArgParser(prog=f"trtflow surgeon {edit.name}", description=edit.help)
    parser.add_argument("model", metavar="IN.onnx", help="the model to edit")
    parser.add_argument("-o", "--out", dest="out", required=True, metavar="OUT.onnx", help="where to write the edited model")
    add_edit_flags(edit, parser.add_argument_group(f"{edit.name} options"))
    group = parser.add_argument_group("verification (ONNX Runtime, before vs after)")
    group.add_argument("--no-verify", dest="verify", action="store_false", help="skip the verification")
    group.add_argument("--input", "--feed", dest="feed", action="append", metavar="NAME=FILE.npy|FILE.npz[:KEY]|random",
                       help="input values to verify on, besides random ones (one input per flag, as in every command)")
    group.add_argument("--shapes", action="append", metavar="NAME:1x3x224x224",
                       help="shapes of dynamic inputs for the verification (trtexec syntax)")
    group.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    options.add_tolerances(group, edit.atol, edit.rtol)
    if "--min-agreement" not in parser._option_string_actions:  # quantize has its own (top-1 agreement)
        group.add_argument("--min-agreement", dest="verify_min_agreement", type=float, default=1.0, metavar="SHARE",
                           help="integer outputs (class ids) pass when this share of elements is equal (default: 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    return parser


def run(args: argparse.Namespace) -> int:
    from trtflow.cli import options, output
    from trtflow.cli.surgeon_flags import options_from_flags
    from trtflow.edits.pipeline import run_edit
    from trtflow.edits.registry import get_edit
    from trtflow.edits.verify import VerifyConfig
    from trtflow.feeds import parse_input_args
    from trtflow.graph.io import load_onnx, save_onnx
    from trtflow.spec import parse_shapes

    args.json = "--json" in args.rest  # main prints the error object of a failed --json run too
    args.verbose = getattr(args, "verbose", False) or bool({"-v", "--verbose"} & set(args.rest))  # and the traceback
    edit = get_edit(args.edit)
    ns = edit_command_parser(edit).parse_args(args.rest)
    if ns.verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    options.check_out_path(ns.out, "-o", ".onnx")  # a wrong suffix, a missing folder or a folder named OUT.onnx: before the edit
    if edit.name == "rename":
        _refuse_old_rename_input(ns.feed or [])
    edit_options = options_from_flags(edit, ns)
    atol, rtol, per_atol, per_rtol = options.tolerances_of(ns, None, None)
    config = VerifyConfig(atol=atol, rtol=rtol, per_output_atol=per_atol, per_output_rtol=per_rtol,
                          inputs=parse_input_args(ns.feed), shapes=parse_shapes(ns.shapes), seed=ns.seed,
                          min_agreement=getattr(ns, "verify_min_agreement", 1.0))
    proto = load_onnx(ns.model)
    try:
        with output.bar(f"{edit.name}: editing") as progress:
            new, report = run_edit(edit, proto, edit_options, verify=ns.verify, config=config, progress=progress)
    except MismatchError as exc:  # --json: main prints the measured errors with the error, one object
        exc.json_report = {"model": ns.model, "output": None, "edit": edit.name, "verification": exc.report}
        raise
    save_onnx(new, ns.out)
    report = {"model": ns.model, "output": ns.out, **report}
    if ns.json:
        output.print_json(report)
        return 0
    _print_report(report)
    return 0


def _refuse_old_rename_input(items: list[str]) -> None:
    """``rename --input OLD=NEW`` was the old spelling; --input now gives verification inputs everywhere."""
    from trtflow.feeds import split_npz

    for item in items:
        name, sep, value = str(item).partition("=")
        if sep and value != "random" and split_npz(value)[0].suffix.lower() not in (".npy", ".npz"):
            raise UsageError(f"surgeon rename: --input {item} gives a verification input (NAME=FILE.npy or "
                             f"NAME=random, as in every command); rename an input with --rename-input {item}")


def _print_report(report: dict) -> None:
    from trtflow.cli import output
    from trtflow.edits.report import io_rows, summary_lines

    con = output.console()
    con.print(f"{report['edit']}: {report['model']} -> {report['output']}")
    for line in summary_lines(report):
        con.print("  " + line)
    output.print_table("inputs and outputs", ["", "name", "before", "after"], io_rows(report))
    ver = report["verification"]
    if ver is None:
        con.print("verification skipped (--no-verify)")
        return
    for run in ver.get("runs", []):
        output.print_table(
            f"verification on {run['feed']} (atol {ver['atol']:g}, rtol {ver['rtol']:g})",
            ["output", "max abs", "mean abs", "max rel", "ok"],
            [(d["name"], f"{d['max_abs']:.3g}", f"{d['mean_abs']:.3g}", f"{d['max_rel']:.3g}",
              "yes" if d["passed"] else "NO") for d in run["outputs"]],
        )
    for key, value in ver.items():
        if key not in ("runs", "passed", "atol", "rtol", "max_abs", "mean_abs") and not isinstance(value, (dict, list)):
            con.print(f"  {key}: {value}")
