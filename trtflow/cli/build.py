"""trtflow build MODEL.onnx --saveEngine PATH: trtexec's build flags, on TensorRT 10/11 or TensorRT-RTX."""

from __future__ import annotations

import argparse
from pathlib import Path

from trtflow.cli import options, output
from trtflow.errors import UsageError

HELP = "build a TensorRT engine from an ONNX model (trtexec's flags; TensorRT 10/11 or TensorRT-RTX)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the .onnx model")
    parser.add_argument("--saveEngine", required=True, metavar="PATH", help="where to write the plan (a PATH.json sidecar goes beside it)")
    options.add_shapes(parser, profiles=True)
    options.add_precision(parser)
    options.add_build(parser)
    options.add_json(parser)
    from trtflow.cli import build_torch  # --engine torch: an AOTInductor package instead of a plan

    build_torch.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.engine == "torch":
        from trtflow.cli import build_torch

        return build_torch.run(args)
    from trtflow.backends.tensorrt.builder import build_engine
    from trtflow.backends.tensorrt.sidecar import sha256, write_plan

    if not Path(args.model).exists():
        raise UsageError(f"no such file: {args.model}")
    config = options.build_config_of(args)
    with output.bar("building", enabled=not args.json) as progress:
        result = build_engine(args.model, config, progress=progress)
    meta = write_plan(args.saveEngine, result, source=str(args.model), config=config.key_dict(),
                      onnx_sha256=sha256(Path(args.model).read_bytes()))
    report = {"engine": str(args.saveEngine), **result.to_dict(), "plan_sha256": meta["plan_sha256"]}
    if args.json:
        output.print_json(report)
        return 0
    output.print_table(
        f"{args.saveEngine}: {result.engine_bytes / 2**20:.2f} MiB, built in {result.build_seconds:.1f} s",
        ["item", "value"],
        [
            ("TensorRT", f"{result.flavor} {result.version}"),
            ("target", result.target.get("name")),
            ("precision", result.precision["path"]),
            *((f"profile {k}" + (" (inferred)" if result.notes else ""), "; ".join(f"{n}: {'x'.join(map(str, p.min[n]))} .. {'x'.join(map(str, p.max[n]))} (opt {'x'.join(map(str, p.opt[n]))})" for n in p.min))
              for k, p in enumerate(result.profiles)),
            *((f"input {s.name}", f"{s.dtype} {s.describe_shape()}") for s in result.inputs),
            *((f"output {s.name}", f"{s.dtype} ({', '.join(map(str, s.shape))})") for s in result.outputs),
        ],
    )
    return 0
