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
    lo, mid, hi = (parse_shapes(getattr(args, k, None)) for k in ("minShapes", "optShapes", "maxShapes"))
    if lo or mid or hi:
        out.append(make_profile(lo, mid, hi))
    for text in getattr(args, "profile", None) or []:
        parts = dict(p.split("=", 1) for p in text.split(";") if "=" in p)
        out.append(make_profile(*(parse_shapes(parts.get(k)) for k in ("min", "opt", "max"))))
    return out


def engine_options(args: argparse.Namespace, engine: str) -> dict:
    """Engine constructor options taken from the shared flags."""
    opts: dict = {}
    if engine == "ort":
        opts["providers"] = [p.strip() for p in args.providers.split(",") if p.strip()]
    elif engine == "tensorrt" and hasattr(args, "minShapes"):
        profiles = profiles_of(args)
        if profiles:
            opts["profiles"] = profiles
    return opts


def load_engine(args: argparse.Namespace, model, engine: str | None = None):
    """Load ``model`` with the engine chosen by --engine (or ``engine``), using the shared flags."""
    from trtflow.engines import ALIASES, auto_engine, load

    name = engine or args.engine
    name = auto_engine(model) if name == "auto" else ALIASES.get(name.lower(), name.lower())
    return load(model, name, **engine_options(args, name))
