"""trtflow check MODEL.onnx: does the installed TensorRT convert it? Names every failing node."""

from __future__ import annotations

import argparse

from trtflow.cli import options, output, trtexec

HELP = "parse and build an ONNX model with the installed TensorRT (TensorRT-RTX builds on the CPU); exit 1 naming each failing node"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="the .onnx model (or trtexec's --onnx=FILE)")
    options.add_shapes(parser, profiles=True)
    options.add_precision(parser)
    options.add_build(parser)
    options.add_json(parser)
    trtexec.add_compat(parser)


def check_model(model, config, progress=None) -> dict:
    """Try to build ``model``; a dict with ``converts`` and one ``failures`` record per failing node.

    Raises:
        ModelLoadError, UsageError, MissingDependencyError: the check could not run.
    """
    from trtflow.backends.tensorrt.builder import build_engine
    from trtflow.backends.tensorrt.flavor import load_flavor
    from trtflow.errors import BuildError

    flavor = load_flavor()
    report = {"model": str(model), "flavor": flavor.name, "version": flavor.version}
    try:
        result = build_engine(model, config, progress=progress, flavor=flavor)
    except BuildError as exc:
        failures = exc.failures or [{"node": "(network)", "op": "-", "reason": str(exc), "fix": ""}]
        return {**report, "converts": False, "stage": exc.stage, "failures": failures}
    return {
        **report,
        "converts": True,
        "failures": [],
        "build_seconds": round(result.build_seconds, 3),
        "engine_bytes": result.engine_bytes,
        "precision": result.precision["path"],
        "inferred_profiles": result.notes,
    }


def run(args: argparse.Namespace) -> int:
    trtexec.apply_compat(args)  # a trtexec build line checks unchanged (--onnx, --workspace, --buildOnly)
    with output.bar("building", enabled=not args.json) as progress:
        report = check_model(args.model, options.build_config_of(args), progress=progress)
    if args.json:
        output.print_json(report)
        return 0 if report["converts"] else 1
    label = f"{'TensorRT-RTX' if report['flavor'] == 'tensorrt_rtx' else 'TensorRT'} {report['version']}"
    if report["converts"]:
        output.console().print(output.styled(
            "green", "converts", f": {args.model} builds with {label} "
            f"({report['engine_bytes'] / 2**20:.2f} MiB in {report['build_seconds']:.1f} s)"), markup=True)
        return 0
    output.print_table(
        f"{args.model} does not convert with {label} ({report['stage']} failed)",
        ["node", "op", "reason", "fix"],
        [(f["node"], f["op"], f["reason"], f.get("fix") or "-") for f in report["failures"]],
    )
    return 1
