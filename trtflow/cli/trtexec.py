"""trtflow trtexec ...: a whole trtexec command line, run as ``trtflow build`` and/or ``trtflow bench``.

Also home of the trtexec spellings that ``build`` and ``bench`` accept besides their own
(``--onnx=FILE``, ``--loadEngine=PLAN``, ``--buildOnly``, ``--workspace=N``, ``--explicitBatch``)
and of the table of trtexec flags trtflow does not have, each with what to use instead.
"""

from __future__ import annotations

import argparse
import sys

from trtflow.cli.options import count
from trtflow.errors import UsageError

HELP = "run a trtexec command line unchanged: --buildOnly -> trtflow build, otherwise trtflow bench on TensorRT"

LAYER_INFO = ("per-layer information is not collected; the engine's inputs, outputs and profiles are in its sidecar "
              "PLAN.json (written by `trtflow build`, printed by `trtflow build --json`)")

# trtexec flags trtflow has no equivalent of, with what to use instead.
UNSUPPORTED = {
    "--batch": "implicit batch is gone since TensorRT 10; give --shapes NAME:NxCxHxW",
    "--maxBatch": "implicit batch is gone since TensorRT 10; give --maxShapes NAME:NxCxHxW or --max-batch N",
    "--calib": "INT8 calibration caches are not read; quantize with `trtflow surgeon quantize` (Q/DQ) and build with --int8",
    "--loadInputs": "give --input NAME=FILE.npy (or NAME=FILE.npz:KEY)",
    "--exportTimes": "--exportJson FILE writes every per-query time",
    "--exportOutput": "`trtflow run MODEL --input NAME=FILE.npy -o OUT.npz` saves the outputs",
    "--dumpOutput": "`trtflow run MODEL --input NAME=FILE.npy -o OUT.npz` saves the outputs (and prints their shapes "
                    "and min/max/mean)",
    "--exportProfile": "per-layer profiles are not collected; use nsys/ncu on `trtflow bench`",
    "--dumpProfile": "per-layer profiles are not collected; use nsys/ncu on `trtflow bench`",
    "--separateProfileRun": "per-layer profiles are not collected; use nsys/ncu on `trtflow bench`",
    "--exportLayerInfo": LAYER_INFO,
    "--dumpLayerInfo": LAYER_INFO,
    "--profilingVerbosity": LAYER_INFO,
    "--avgRuns": "--iterations N and --duration S set how long bench measures",
    "--percentile": "bench always reports the 50/90/95/99th percentiles",
    "--infStreams": "use --streams N",
    "--threads": "use --streams N",
    "--useSpinWait": "bench synchronizes each query already; drop the flag",
    "--idleTime": "drop the flag; bench runs queries back to back",
    "--skipInference": "use --buildOnly (or `trtflow build`)",
    "--noTF32": "drop the flag (TF32 stays TensorRT's default)",
    "--sparsity": "structured sparsity is not enabled by trtflow; drop the flag",
    "--useDLACore": "DLA is not supported; drop the flag",
    "--allowGPUFallback": "DLA is not supported; drop the flag",
    "--inputIOFormats": "engine I/O keeps the ONNX types; convert with `trtflow surgeon` for other formats",
    "--outputIOFormats": "engine I/O keeps the ONNX types; convert with `trtflow surgeon` for other formats",
    "--precisionConstraints": "use --stronglyTyped with an ONNX model converted by `trtflow surgeon fp16`",
    "--layerPrecisions": "use --stronglyTyped with an ONNX model converted by `trtflow surgeon fp16 --keep ...`",
    "--layerOutputTypes": "use --stronglyTyped with an ONNX model converted by `trtflow surgeon fp16 --keep ...`",
    "--tacticSources": "drop the flag; TensorRT's default tactic sources are used",
    "--minTiming": "drop the flag; TensorRT's default timing is used",
    "--avgTiming": "drop the flag; TensorRT's default timing is used",
    "--noBuilderCache": "`trtflow build MODEL --saveEngine PLAN --no-cache` builds without trtflow's engine cache",
    "--safe": "safety engines are not supported",
    "--consistency": "safety engines are not supported",
    "--deploy": "Caffe models are not supported; export to ONNX",
    "--model": "Caffe models are not supported; export to ONNX and give --onnx=FILE",
    "--uff": "UFF models are not supported; export to ONNX and give --onnx=FILE",
    "--uffInput": "UFF models are not supported; export to ONNX and give --onnx=FILE",
}

# bench's inference flags, which trtexec takes (and ignores) with --buildOnly and `trtflow build` does not have
INFERENCE_FLAGS = {"--iterations", "--duration", "--warmUp", "--useCudaGraph", "--noDataTransfers", "--streams",
                   "--exportJson"}

EXPLICIT_BATCH_NOTE = "--explicitBatch has no effect: TensorRT 10 and TensorRT-RTX networks are always explicit-batch"


def unsupported_hint(extra: list[str]) -> str | None:
    """One line for the first trtexec flag in ``extra`` that trtflow lacks, else None."""
    for token in extra:
        flag = token.split("=", 1)[0]
        if flag in UNSUPPORTED:
            return f"trtexec's {flag} is not supported by trtflow: {UNSUPPORTED[flag]}"
    return None


def add_compat(parser: argparse.ArgumentParser, bench: bool = False) -> None:
    """trtexec's spellings for ``build`` (and ``bench`` with ``bench=True``)."""
    group = parser.add_argument_group("trtexec spellings")
    group.add_argument("--onnx", metavar="FILE.onnx", help="the ONNX model (instead of the positional MODEL)")
    if bench:
        group.add_argument("--loadEngine", metavar="PLAN", help="a TensorRT plan to benchmark (instead of MODEL)")
        group.add_argument("--saveEngine", metavar="PLAN", help="build the ONNX model into PLAN, then benchmark it")
    group.add_argument("--buildOnly", action="store_true", help="build the engine and stop (no inference)")
    group.add_argument("--workspace", type=count(1), metavar="MiB", help="trtexec's older flag: = --memPoolSize workspace:N")
    group.add_argument("--explicitBatch", action="store_true", help="accepted for old command lines; no effect")


def apply_compat(args: argparse.Namespace) -> None:
    """Fold trtexec's spellings into the command's own options (``args.model``, ``args.memPoolSize``).

    Raises:
        UsageError: the model given twice or not at all, or the workspace given twice.
    """
    given = [(flag, value) for flag, value in (("MODEL", getattr(args, "model", None)),
                                                ("--onnx", getattr(args, "onnx", None)),
                                                ("--loadEngine", getattr(args, "loadEngine", None))) if value]
    if len(given) > 1:
        raise UsageError(f"the model is given twice ({' and '.join(f for f, _ in given)}); give one of them")
    if not given:
        raise UsageError("no model given: pass MODEL.onnx, --onnx=MODEL.onnx" +
                         (" or --loadEngine=PLAN" if hasattr(args, "loadEngine") else ""))
    args.model = given[0][1]
    if args.onnx and args.onnx.lower().endswith((".engine", ".plan", ".trt")):
        raise UsageError(f"--onnx={args.onnx} names a TensorRT plan; --onnx takes the .onnx model "
                         f"(to benchmark a plan, give --loadEngine={args.onnx})")
    if args.workspace is not None:
        pools = getattr(args, "memPoolSize", None) or []
        if any(p.strip().startswith("workspace") for text in pools for p in text.split(",")):
            raise UsageError("the workspace is given twice (--workspace and --memPoolSize workspace:...); give one")
        args.memPoolSize = [*pools, f"workspace:{args.workspace}"]
    if args.explicitBatch and getattr(args, "verbose", False):
        print(f"note: {EXPLICIT_BATCH_NOTE}", file=sys.stderr)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="TRTEXEC_FLAGS",
                        help="trtexec's flags, e.g. --onnx=model.onnx --fp16 --saveEngine=model.engine --buildOnly "
                        "(a leading 'trtexec' is dropped)")
    parser.set_defaults(takes_extra=True)


def translate(argv: list[str]) -> list[str]:
    """The trtflow command line for a trtexec one: ``build`` for --buildOnly, else ``bench --engine tensorrt``.

    Raises:
        UsageError: no flags, or a positional argument (trtexec takes none).
    """
    argv = list(argv)
    if argv and argv[0] in ("trtexec", "./trtexec") or argv and argv[0].endswith("/trtexec"):
        argv = argv[1:]
    if not argv:
        raise UsageError("give a trtexec command line, e.g. trtflow trtexec --onnx=model.onnx --saveEngine=model.engine")
    stray = [i for i, a in enumerate(argv) if not a.startswith("-")]
    if stray:
        i = stray[0]
        value = argv[i]
        if value.lower().endswith((".engine", ".plan", ".trt")):
            flag = "--loadEngine"
        elif value.lower().endswith(".onnx") or not i or "=" in argv[i - 1]:
            flag = "--onnx"
        else:  # the value of the flag before it (--shapes x:1x3x224x224)
            flag = argv[i - 1]
        raise UsageError(f"trtexec takes flags only; '{value}' is not one (write --flag=VALUE, e.g. {flag}={value})")
    flags = {a.split("=", 1)[0] for a in argv}
    if "--buildOnly" in argv and ("--saveEngine" in flags or "-o" in flags or "--out" in flags) \
            and not flags & INFERENCE_FLAGS:
        return ["build", *argv]  # build's table; without --saveEngine (or with inference flags) bench builds and stops
    return ["bench", *argv] if "--engine" in flags else ["bench", "--engine", "tensorrt", *argv]


def run(args: argparse.Namespace) -> int:
    from trtflow.cli.main import main

    argv = [*getattr(args, "extra", []), *args.argv]
    args.json = "--json" in argv  # a line translate refuses is one JSON object too, as bench's own errors are
    command = translate(argv)
    if {"-v", "--verbose"} & set(argv):  # trtexec's --verbose (passed on with the rest): debug logs, tracebacks
        import logging

        args.verbose = True
        logging.getLogger().setLevel(logging.DEBUG)
    elif getattr(args, "verbose", False):  # trtflow --verbose trtexec ...
        command.insert(1, "--verbose")
    if args.verbose:
        print("runs: trtflow " + " ".join(command), file=sys.stderr)
    return main(command)
