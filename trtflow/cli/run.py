"""trtflow run MODEL: one inference with given or random inputs."""

from __future__ import annotations

import argparse
import time

import numpy as np

from trtflow.arrays import dtype_of, to_numpy
from trtflow.cli import options, output

HELP = "run a model once on given or random inputs and show the outputs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an .onnx file, an engine plan or a .pt2 package")
    options.add_engine(parser)
    options.add_inputs(parser)
    options.add_shapes(parser)
    options.add_out(parser, "OUT.npz", "save the outputs (one array per output name)")
    parser.add_argument("--save-inputs", metavar="IN.npz", help="save the inputs used (reusable as --input NAME=IN.npz)")
    parser.add_argument("--split-batches", action="store_true",
                        help="run a batch outside the engine's batch range in chunks it takes (a partial last chunk "
                        "of a static-batch engine is padded): one engine call per chunk")
    options.add_json(parser)


def _stats(value) -> dict:
    info = {"shape": list(value.shape), "dtype": dtype_of(value)}
    arr = to_numpy(value)  # a torch output too (bfloat16 as float32: numpy has no bfloat16)
    if arr.size and arr.dtype.kind in "fiub":
        a = arr.astype(np.float64)
        info.update(min=float(a.min()), max=float(a.max()), mean=float(a.mean()))
        if arr.dtype.kind == "f":
            info["nan"] = int(np.isnan(a).sum())
    return info


def run(args: argparse.Namespace) -> int:
    from trtflow.feeds import parse_input_args, save_npz

    for flag, path in (("--save-inputs", args.save_inputs), ("--out", args.out)):
        if path is not None:  # -o "" too: refused, not taken as no -o
            options.check_out_path(path, flag, ".npz")
    options.check_distinct_paths(("--save-inputs", args.save_inputs), ("--out", args.out))
    with options.load_engine(args, args.model) as engine:
        feed = options.feed_for(engine, parse_input_args(args.input), args)
        start = time.perf_counter()
        outputs = engine.infer(feed)
        ms = (time.perf_counter() - start) * 1e3
        name = engine.name
    if args.save_inputs:
        save_npz(args.save_inputs, feed)
    if args.out:
        save_npz(args.out, outputs)
    result = {
        "engine": name,
        "model": str(args.model),
        "latency_ms": ms,
        "inputs": {k: {"shape": list(v.shape), "dtype": dtype_of(v)} for k, v in feed.items()},
        "outputs": {k: _stats(v) for k, v in outputs.items()},
    }
    if args.json:
        output.print_json(result)
        return 0
    output.print_table(
        f"{args.model} on {name} ({ms:.2f} ms, first call)",
        ["output", "shape", "dtype", "min", "max", "mean"],
        [
            (k, "x".join(map(str, v["shape"])), v["dtype"], *(f"{v[s]:.4g}" if s in v else "-" for s in ("min", "max", "mean")))
            for k, v in result["outputs"].items()
        ],
    )
    if args.out:
        output.console().print(f"outputs saved to {args.out}")
    return 0
