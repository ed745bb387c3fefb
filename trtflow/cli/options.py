"""Option groups shared by subcommands; trtexec's flag names where trtexec has the flag."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from trtflow.errors import UsageError
from trtflow.spec import Profile, TensorSpec, make_profile, parse_names, parse_shapes


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def add_gpus(parser: argparse.ArgumentParser, help: str = "one engine per GPU, e.g. 0,1 or all (every visible GPU)") -> None:
    """``--gpus 0,1|all``: the GPUs to spread engines over; ``gpus_of(args)`` checks and resolves it."""
    parser.add_argument("--gpus", metavar="0,1|all", help=help)


def gpus_of(args: argparse.Namespace) -> list[int] | None:
    """The GPU indices of ``--gpus`` (None when not given).

    Raises:
        UsageError: malformed, repeated, or a GPU that does not exist (naming how many are visible).
    """
    text = getattr(args, "gpus", None)
    if text is None:
        return None
    from trtflow.backends.devices import parse_gpus, visible_gpus

    return parse_gpus(text, visible_gpus())


def add_engine(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    parser.add_argument(
        "--engine", default=default, help="auto, ort, torch or tensorrt (default: %(default)s)"
    )
    parser.add_argument(
        "--providers", default="cpu", help="ONNX Runtime providers, comma-separated (default: cpu)"
    )


def add_shapes(parser: argparse.ArgumentParser, profiles: bool = False) -> None:
    """trtexec's shape flags: NAME:1x3x224x224[,NAME2:...]."""
    group = parser.add_argument_group("shapes (trtexec syntax: NAME:1x3x224x224,NAME2:...)")
    group.add_argument("--shapes", action="append", help="concrete input shapes (sets min=opt=max when building)")
    group.add_argument("--minShapes", action="append", help="minimum shapes of the optimization profile")
    group.add_argument("--optShapes", action="append", help="shapes the profile is tuned for")
    group.add_argument("--maxShapes", action="append", help="maximum shapes of the optimization profile")
    if profiles:
        group.add_argument(
            "--profile",
            action="append",
            metavar="MIN;OPT;MAX",
            help="one more profile as 'min=NAME:AxB,...;opt=...;max=...' (repeatable)",
        )


def add_precision(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("precision (trtexec flags)")
    group.add_argument("--fp16", action="store_true", help="allow FP16 kernels")
    group.add_argument("--bf16", action="store_true", help="allow BF16 kernels")
    group.add_argument("--int8", action="store_true", help="allow INT8 kernels (needs Q/DQ nodes or calibration)")
    group.add_argument("--best", action="store_true", help="allow every precision")
    group.add_argument("--stronglyTyped", action="store_true", help="take precision from the ONNX types only")


INPUT_METAVAR = "NAME=FILE|random"
INPUT_HELP = ("input values: NAME=FILE.npy, NAME=FILE.npz (its array NAME), NAME=FILE.npz:KEY or NAME=random "
              "(repeatable; default: random)")


def add_inputs(parser: argparse.ArgumentParser, help: str = INPUT_HELP) -> None:
    """``--input NAME=FILE|random`` (one meaning in every command) and ``--seed``."""
    parser.add_argument("--input", action="append", metavar=INPUT_METAVAR, help=help)
    add_seed(parser)


def add_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=count(0), default=0, help="seed of the random inputs (default: 0)")


def add_tolerances(parser: argparse.ArgumentParser, atol: float, rtol: float, what: str = "") -> None:
    """``--atol``/``--rtol``: a number for every output, or NAME=X for one output (repeatable)."""
    for flag, default in (("--atol", atol), ("--rtol", rtol)):
        kind = "absolute" if flag == "--atol" else "relative"
        parser.add_argument(flag, action="append", metavar="X|NAME=X",
                            help=f"{kind} tolerance{what}: X for every output or NAME=X for one (repeatable; "
                            f"default: {default:g})")


def tolerances_of(args: argparse.Namespace, atol: float, rtol: float) -> tuple[float, float, dict, dict]:
    """``(atol, rtol, per-output atol, per-output rtol)`` from --atol/--rtol, defaults where not given."""
    from trtflow.spec import parse_tolerances

    a, per_a = parse_tolerances(getattr(args, "atol", None), "--atol")
    r, per_r = parse_tolerances(getattr(args, "rtol", None), "--rtol")
    return (atol if a is None else a), (rtol if r is None else r), per_a, per_r


def add_out(parser: argparse.ArgumentParser, metavar: str, help: str, required: bool = False,
            aliases: tuple[str, ...] = ()) -> None:
    """``-o/--out PATH``: the output file of a command (trtexec's own commands keep their flag too)."""
    parser.add_argument("-o", "--out", *aliases, dest="out", metavar=metavar, required=required, help=help)


def check_out_path(path: str, flag: str, suffix: str | None = None) -> None:
    """Refuse an output path that cannot be written, before any work is done.

    Raises:
        UsageError: a wrong suffix, a folder, or a parent folder that is missing or not writable.
    """
    import os

    if not str(path).strip():  # Path("") is the current folder
        raise UsageError(f"{flag} is given an empty path; give a file name" + (f" ending in {suffix}" if suffix else ""))
    target = Path(path)
    if suffix and target.suffix.lower() != suffix:
        raise UsageError(f"{flag} {path}: give a file name ending in {suffix}")
    if target.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file path, e.g. {target / ('out' + (suffix or ''))}")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: the folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{flag} {path}: the folder {parent} is not writable")


def check_plot(path: str) -> None:
    """Refuse a --plot path that cannot be written or names no figure format (the library's rule, before any work)."""
    from trtflow.bench.report import check_plot_path

    check_out_path(path, "--plot")
    check_plot_path(path, "--plot")


def check_distinct_paths(*given: tuple[str, str | None]) -> None:
    """Refuse two output flags naming one file (the second written would replace the first).

    Raises:
        UsageError: two of the ``(flag, path)`` pairs (unset paths skipped) resolve to one file.
    """
    written = [(flag, Path(path).resolve(), path) for flag, path in given if path]
    for i, (flag, target, path) in enumerate(written):
        for other, then, _ in written[i + 1:]:
            if target == then:
                raise UsageError(f"{flag} and {other} name one file ({path}): the second would replace the first; "
                                 "give two file names")


def count(minimum: int = 0):
    """argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = "count"
    return parse


def number(minimum: float = 0.0):
    """argparse type: a finite number >= ``minimum`` (no nan, no inf)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum:g}, got '{text}'") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a finite number >= {minimum:g}, got '{text}'")
        return value

    parse.__name__ = "number"
    return parse


def shapes_of(args: argparse.Namespace) -> dict:
    """The concrete shapes asked for with --shapes (or --optShapes when only that is given)."""
    return parse_shapes(args.shapes) or parse_shapes(getattr(args, "optShapes", None))


def profiles_of(args: argparse.Namespace) -> list[Profile]:
    """Profiles from --shapes or --min/opt/maxShapes, then each --profile."""
    out = []
    fixed = parse_shapes(args.shapes)
    if fixed:
        out.append(make_profile(fixed, fixed, fixed))
    groups = [getattr(args, k, None) or [] for k in ("minShapes", "optShapes", "maxShapes")]
    if _repeated_groups(groups):  # trtexec: each repeated --minShapes/--optShapes/--maxShapes set is one more profile
        sets = max(len(g) for g in groups)  # a flag left out of every set (e.g. no --minShapes) is None in each
        for texts in zip(*(g if g else [None] * sets for g in groups)):
            out.append(make_profile(*(parse_shapes(t) for t in texts)))
    else:
        lo, mid, hi = (parse_shapes(g) for g in groups)
        if lo or mid or hi:
            out.append(make_profile(lo, mid, hi))
    for text in getattr(args, "profile", None) or []:
        parts = dict(p.strip().split("=", 1) for p in text.split(";") if "=" in p)
        if not parts or set(parts) - {"min", "opt", "max"}:
            raise UsageError(f"bad --profile '{text}': expected 'min=NAME:AxB,...;opt=...;max=...'")
        out.append(make_profile(*(parse_shapes(parts.get(k)) for k in ("min", "opt", "max"))))
    return out


def _repeated_groups(groups: list[list[str]]) -> bool:
    """True when the shape flags were repeated as whole sets naming the same inputs (several profiles)."""
    given = [g for g in groups if g]
    if not given or len(given[0]) < 2 or any(len(g) != len(given[0]) for g in given):
        return False
    names = [set(parse_shapes(t)) for g in given for t in g]
    return all(n == names[0] for n in names)


def add_build(parser: argparse.ArgumentParser) -> None:
    """trtexec's build flags (besides shapes and precision)."""
    group = parser.add_argument_group("build (trtexec flags)")
    group.add_argument("--memPoolSize", action="append", metavar="POOL:SIZE",
                       help="memory pool limits, e.g. workspace:4096 (MiB unless suffixed B/K/M/G); pools: "
                       "workspace, tacticSharedMem, dlaSRAM, dlaLocalDRAM, dlaGlobalDRAM")
    group.add_argument("--builderOptimizationLevel", type=count(0), metavar="N", help="builder optimization level 0..5")
    group.add_argument("--timingCacheFile", metavar="FILE", help="timing cache read before and written after the build")
    group.add_argument("--versionCompatible", action="store_true", help="build a version-compatible engine")
    group.add_argument("--hardwareCompatibilityLevel", metavar="LEVEL",
                       help="none, ampere+ or sameComputeCapability")
    group.add_argument("--plugins", action="append", metavar="LIB.so", default=[], help="plugin library to load (repeatable)")
    group.add_argument("--max-batch", dest="max_batch", type=count(1), default=16,
                       help="upper batch bound of the profile inferred when a dynamic batch has no shapes "
                       "(1..N, opt N; default: %(default)s)")


def build_config_of(args: argparse.Namespace):
    """A ``trtflow.backends.tensorrt.BuildConfig`` from the shape, precision and build flags."""
    from trtflow.backends.tensorrt.config import BuildConfig, parse_mem_pool_size

    return BuildConfig(
        profiles=profiles_of(args),
        fp16=getattr(args, "fp16", False),
        bf16=getattr(args, "bf16", False),
        int8=getattr(args, "int8", False),
        best=getattr(args, "best", False),
        strongly_typed=getattr(args, "stronglyTyped", False),
        mem_pool_size=parse_mem_pool_size(getattr(args, "memPoolSize", None)),
        builder_optimization_level=getattr(args, "builderOptimizationLevel", None),
        timing_cache_file=getattr(args, "timingCacheFile", None),
        version_compatible=getattr(args, "versionCompatible", False),
        hardware_compatibility_level=getattr(args, "hardwareCompatibilityLevel", None),
        plugins=tuple(getattr(args, "plugins", None) or ()),
        max_batch=getattr(args, "max_batch", 16),
    )


def pt2_precision_error(args: argparse.Namespace) -> UsageError | None:
    """The error for --fp16/--bf16/--int8/--best given with a .pt2 package (it runs the precision it
    was built with, so they would be ignored); None when none of them is given."""
    given = [f"--{f}" for f in _precision_of(args) if f != "strongly_typed"]
    if not given:
        return None
    return UsageError(f"a .pt2 package keeps the precision it was built with; drop {'/'.join(given)} "
                      "(build the package in the precision wanted: trtflow build MODULE:FACTORY --engine torch "
                      "--fp16|--bf16 --saveEngine M.pt2)")


INT8_TORCH = ("--int8 builds INT8 TensorRT engines; the torch engine runs fp32, --fp16 or --bf16 (for INT8, quantize "
              "the ONNX model with `trtflow surgeon quantize` and use --engine ort or tensorrt)")


def torch_dtype(args: argparse.Namespace) -> str:
    """The torch engine's dtype from --bf16, else --fp16/--best, else fp32.

    Raises:
        UsageError: --int8 (the torch engine has no INT8).
    """
    if args.int8:
        raise UsageError(INT8_TORCH)
    return "bf16" if args.bf16 else ("fp16" if args.fp16 or args.best else "fp32")


def engine_options(args: argparse.Namespace, engine: str) -> dict:
    """Engine constructor options taken from the shared flags."""
    opts: dict = {}
    if engine == "ort":
        opts["providers"] = list(parse_names(args.providers, "--providers"))
        if not opts["providers"]:
            raise UsageError(f"--providers '{args.providers}' names no provider; e.g. --providers cpu or cuda,cpu")
        if set(_precision_of(args)) - {"strongly_typed"}:  # serve, video: the flags exist for TensorRT and torch
            raise UsageError("ONNX Runtime runs the model's own types; drop --fp16/--bf16/--int8/--best (or convert "
                             "the ONNX model first: trtflow surgeon fp16 / quantize)")
    elif engine == "tensorrt" and hasattr(args, "memPoolSize"):
        opts["build_config"] = build_config_of(args)
    elif engine == "tensorrt" and hasattr(args, "minShapes"):
        profiles = profiles_of(args)
        if profiles:
            opts["profiles"] = profiles
        precision = _precision_of(args)
        if precision:  # serve and video take the precision flags without the other build flags
            from trtflow.backends.tensorrt.config import BuildConfig

            opts["build_config"] = BuildConfig(**precision)
    return opts


def _precision_of(args: argparse.Namespace) -> dict:
    """The BuildConfig precision fields that --fp16/--bf16/--int8/--best/--stronglyTyped turned on."""
    flags = {"fp16": "fp16", "bf16": "bf16", "int8": "int8", "best": "best", "strongly_typed": "stronglyTyped"}
    return {field: True for field, flag in flags.items() if getattr(args, flag, False)}


def feed_for(engine, files: dict, args: argparse.Namespace) -> dict:
    """``build_feed`` for ``engine`` at ``shapes_of(args)`` and --seed, after the engine (where it can)
    refused shapes too large for the memory, before any random array is made. A shape --shapes names
    must be that of an --input file of the same input (the file's shape is the one run)."""
    from trtflow.feeds import build_feed, dim_sizes, resolve_shape

    shapes = shapes_of(args)
    check = getattr(engine, "check_memory", None)
    names = [s.name for s in engine.inputs]
    unknown = [name for name in shapes if name not in names]
    if unknown:  # before the memory check, whose error for the input left without a shape hid the misspelt name
        raise UsageError(f"--shapes names '{unknown[0]}', which is not a model input; the model's inputs are {names}")
    if check is not None and not files:  # with --input, build_feed checks the names and reads the files first
        named = dim_sizes(engine.inputs, shapes)  # dims sharing a label with a given shape, as build_feed does
        check({s.name: resolve_shape(s, shapes, named) for s in engine.inputs})
    feed = build_feed(engine.inputs, files, shapes, args.seed)
    check_files_match_shapes(feed, files, args)
    return feed


def check_files_match_shapes(values, files: dict, args: argparse.Namespace, dynamic=None) -> None:
    """Refuse a --shapes shape that the --input file of the same input contradicts: ``values`` (name ->
    array or tensor, the files' values where given; None: read from the files) run at the file's shape,
    not the one asked for.
    With ``dynamic`` (input name -> {axis: label}, an export's dynamic axes), --shapes is the shape
    exported and a file may differ from it on those axes only.

    Raises:
        UsageError: a file whose shape the --shapes shape of its input does not take.
    """
    from trtflow.feeds import load_array

    for name, shape in parse_shapes(args.shapes).items():
        if files.get(name, "random") == "random" or (values is not None and name not in values):
            continue
        value = load_array(files[name], name, lazy=True) if values is None else values[name]
        axes = (dynamic or {}).get(name, {})
        exported = TensorSpec(name, "float32", tuple(axes.get(i, d) for i, d in enumerate(shape)))
        if not exported.takes(value.shape):
            have, want = "x".join(map(str, value.shape)), "x".join(map(str, shape))
            fix = f"drop --shapes {name} (the file sets its shape) or give a {want} file"
            if dynamic is not None:  # an export: a dynamic axis may differ
                fix += f", or make each axis they differ on dynamic (--dynamic {name}:AXIS=LABEL)"
            raise UsageError(f"--shapes {name}:{want} but --input {name}={files[name]} holds a {have} array, which "
                             f"is what would run: {fix}")


def check_files_fit_profiles(args: argparse.Namespace, files: dict) -> None:
    """Refuse --input files that no profile of the shape flags covers, before TensorRT builds the engine
    (which would refuse them only when they reach it). As in trtexec, --optShapes alone builds
    min = opt = max and --shapes fixes the shape; a --shapes a file contradicts is named as such.

    Raises:
        UsageError: file shapes outside every profile's [min, max].
    """
    from trtflow.backends.tensorrt.buffers import choose_profile
    from trtflow.errors import InputShapeError
    from trtflow.feeds import load_array
    from trtflow.spec import format_shape

    profiles = profiles_of(args)
    arrays = {n: load_array(v, n, lazy=True) for n, v in files.items() if v != "random"} if profiles else {}
    if not arrays:
        return
    check_files_match_shapes(arrays, files, args)
    shapes = {n: a.shape for n, a in arrays.items()}
    try:
        choose_profile(profiles, shapes)
    except InputShapeError:
        flags = [f for f in ("--shapes", "--minShapes", "--optShapes", "--maxShapes", "--profile")
                 if getattr(args, f.lstrip("-"), None)]
        ranges = "; ".join(", ".join(f"{n} {format_shape(p.min[n])}..{format_shape(p.max[n])}" for n in p.min)
                           for p in profiles)
        held = ", ".join(f"--input {n}={files[n]} holds {n}:{format_shape(s)}" for n, s in shapes.items())
        raise UsageError(f"{held}, which no profile of {'/'.join(flags)} covers (min..max: {ranges}); "
                         "TensorRT would refuse it after the build. Give --minShapes/--maxShapes covering it "
                         "(--optShapes alone builds min = opt = max, as trtexec does), or a file inside them") from None


def load_engine(args: argparse.Namespace, model, engine: str | None = None, **extra):
    """Load ``model`` with the engine chosen by --engine (or ``engine``), using the shared flags
    (and ``extra`` load options, e.g. ``device_options(name, gpu)``)."""
    from trtflow.backends import engine_name, load
    from trtflow.feeds import parse_input_args

    name = engine_name(engine or args.engine, model)
    if name != "torch" and isinstance(model, (str, Path)) and Path(model).suffix.lower() == ".pt2":  # read as ONNX or a plan
        raise UsageError(f"{model} is a .pt2 package, which the torch engine runs: give --engine torch, or leave "
                         f"--engine out (not --engine {name})")
    if name == "tensorrt" and isinstance(model, (str, Path)) and Path(model).suffix.lower() == ".onnx":
        check_files_fit_profiles(args, parse_input_args(getattr(args, "input", None)))  # before the build
    split = {"split_batches": True} if getattr(args, "split_batches", False) else {}
    return cli_split_hint(load(model, name, **engine_options(args, name), **split, **extra), args)


def cli_split_hint(engine, args: argparse.Namespace):
    """``engine``, whose error for a batch outside its range names --split-batches where the command
    has that flag and no option where not (the library's hint names the Python keyword)."""
    engine.split_hint = "Or pass --split-batches to run it in chunks the engine takes." if hasattr(args, "split_batches") else ""
    return engine
