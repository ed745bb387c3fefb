"""Option groups shared by subcommands; trtexec's flag names where trtexec has the flag."""

from __future__ import annotations

import argparse

from trtflow.spec import Profile, make_profile, parse_shapes


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


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


def add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", action="append", metavar="NAME=FILE.npy|random", help="input values (default: random)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for random inputs (default: 0)")


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
        for texts in zip(*(g if g else [None] * len(groups[0]) for g in groups)):
            out.append(make_profile(*(parse_shapes(t) for t in texts)))
    else:
        lo, mid, hi = (parse_shapes(g) for g in groups)
        if lo or mid or hi:
            out.append(make_profile(lo, mid, hi))
    for text in getattr(args, "profile", None) or []:
        parts = dict(p.split("=", 1) for p in text.split(";") if "=" in p)
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
    group.add_argument("--builderOptimizationLevel", type=int, metavar="N", help="builder optimization level 0..5")
    group.add_argument("--timingCacheFile", metavar="FILE", help="timing cache read before and written after the build")
    group.add_argument("--versionCompatible", action="store_true", help="build a version-compatible engine")
    group.add_argument("--hardwareCompatibilityLevel", metavar="LEVEL",
                       help="none, ampere+ or sameComputeCapability")
    group.add_argument("--plugins", action="append", metavar="LIB.so", default=[], help="plugin library to load (repeatable)")
    group.add_argument("--max-batch", dest="max_batch", type=int, default=16,
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


def engine_options(args: argparse.Namespace, engine: str) -> dict:
    """Engine constructor options taken from the shared flags."""
    opts: dict = {}
    if engine == "ort":
        opts["providers"] = [p.strip() for p in args.providers.split(",") if p.strip()]
    elif engine == "tensorrt" and hasattr(args, "memPoolSize"):
        opts["build_config"] = build_config_of(args)
    elif engine == "tensorrt" and hasattr(args, "minShapes"):
        profiles = profiles_of(args)
        if profiles:
            opts["profiles"] = profiles
    return opts


def load_engine(args: argparse.Namespace, model, engine: str | None = None):
    """Load ``model`` with the engine chosen by --engine (or ``engine``), using the shared flags."""
    from trtflow.backends import ALIASES, auto_engine, load

    name = engine or args.engine
    name = auto_engine(model) if name == "auto" else ALIASES.get(name.lower(), name.lower())
    return load(model, name, **engine_options(args, name))
