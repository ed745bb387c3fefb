"""``trtflow build MODULE:FACTORY --engine torch --saveEngine model.pt2``: an AOTInductor package.

The branch of ``trtflow build`` for the torch engine: the module comes from a MODULE:FACTORY
spec, example inputs from ``--optShapes`` (or ``--shapes``), dynamic dims from where
``--minShapes`` and ``--maxShapes`` differ, precision from ``--fp16``/``--bf16``.
"""

from __future__ import annotations

import argparse
import time

from trtflow.cli import options, output
from trtflow.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags only the torch branch takes (the rest are ``trtflow build``'s own)."""
    group = parser.add_argument_group("torch engine (--engine torch: an AOTInductor .pt2 from MODULE:FACTORY)")
    group.add_argument("--engine", choices=("tensorrt", "torch"), default="tensorrt",
                       help="tensorrt: a TensorRT plan from ONNX (default); torch: an AOTInductor package")
    group.add_argument("--device", default=None, help="torch device the package is compiled for (default: cuda if present)")
    group.add_argument("--channels-last", action="store_true", help="channels-last weights")


def run(args: argparse.Namespace) -> int:
    """Build the package; print where it went and its specs."""
    import numpy as np

    from trtflow.deps import require
    from trtflow.backends.torch.package import build_aoti
    from trtflow.export.factory import is_factory_spec, load_factory
    from trtflow.spec import parse_shapes

    torch = require("torch", "trtflow build --engine torch")
    dtype = options.torch_dtype(args)
    if not is_factory_spec(args.model):
        raise UsageError(f"--engine torch builds from a MODULE:FACTORY spec (e.g. mypkg.models:make); got '{args.model}'")
    options.check_out_path(args.saveEngine, "--saveEngine")
    if not str(args.saveEngine).endswith(".pt2"):
        raise UsageError(f"--saveEngine for --engine torch is an AOTInductor package; give a name ending in .pt2, not '{args.saveEngine}'")
    lo, hi = parse_shapes(args.minShapes), parse_shapes(args.maxShapes)
    opt = parse_shapes(args.optShapes) or parse_shapes(args.shapes) or hi
    if not opt:
        raise UsageError("give the input shapes: --shapes NAME:1x3x224x224, or --minShapes/--optShapes/--maxShapes")
    made = load_factory(args.model)
    module = made[0] if isinstance(made, tuple) else made
    rng = np.random.default_rng(0)
    examples = {name: torch.from_numpy(rng.standard_normal(shape).astype(np.float32)) for name, shape in opt.items()}
    dynamic = {name: {i: "?" for i, (a, b) in enumerate(zip(lo.get(name, s), hi.get(name, s))) if a != b}
               for name, s in opt.items()}
    start = time.perf_counter()
    with output.bar(f"export and compile {args.model} (AOTInductor)"):
        path = build_aoti(
            module, examples, args.saveEngine, dynamic={k: v for k, v in dynamic.items() if v},
            min_shapes=lo or None, max_shapes=hi or None, device=args.device, channels_last=args.channels_last,
            dtype=dtype,
        )
    seconds = time.perf_counter() - start
    from trtflow.backends.torch.aoti import package_specs

    inputs, outputs = package_specs(path)
    report = {"engine": str(path), "kind": "aoti", "build_seconds": seconds,
              "inputs": [s.to_dict() for s in inputs], "outputs": [s.to_dict() for s in outputs]}
    if args.json:
        output.print_json(report)
        return 0
    output.print_table(
        f"{path}: AOTInductor package, built in {seconds:.1f} s", ["item", "value"],
        [*((f"input {s.name}", f"{s.dtype} {s.describe_shape()}") for s in inputs),
         *((f"output {s.name}", f"{s.dtype} ({', '.join(map(str, s.shape))})") for s in outputs)],
    )
    return 0
