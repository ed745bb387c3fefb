"""trtflow build MODEL.onnx --saveEngine PATH: trtexec's build flags, on TensorRT 10/11 or TensorRT-RTX."""

from __future__ import annotations

import argparse
from pathlib import Path

from trtflow.cli import options, output, trtexec

HELP = "build a TensorRT engine from an ONNX model (trtexec's flags; TensorRT 10/11 or TensorRT-RTX)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="the .onnx model (or trtexec's --onnx=FILE)")
    parser.add_argument("--saveEngine", "-o", "--out", dest="saveEngine", required=True, metavar="PATH",
                        help="where to write the plan (a PATH.json sidecar goes beside it); -o/--out are aliases")
    parser.add_argument("--no-cache", action="store_true",
                        help="build even when the engine cache holds this plan, and leave the cache untouched "
                        "(default: reuse and fill the cache that trtflow.load uses)")
    options.add_shapes(parser, profiles=True)
    options.add_precision(parser)
    options.add_build(parser)
    options.add_json(parser)
    trtexec.add_compat(parser)
    from trtflow.cli import build_torch  # --engine torch: an AOTInductor package instead of a plan

    build_torch.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    trtexec.apply_compat(args)
    if args.engine == "torch":
        from trtflow.cli import build_torch

        return build_torch.run(args)
    from trtflow.graph.io import load_onnx

    options.check_out_path(args.saveEngine, "--saveEngine")
    load_onnx(args.model, load_external_data=False)  # a missing or unreadable model: one line, before any work
    config = options.build_config_of(args)
    with output.bar("building", enabled=not args.json) as progress:
        meta, cache = _build(args, config, progress)
    report = {"engine": str(args.saveEngine), **{k: v for k, v in meta.items() if k != "key"}, "cache": cache}
    warning = inferred_warning(meta)
    if warning:
        report["warnings"] = [warning]
        if not args.json:
            output.console(stderr=True).print(output.styled("yellow", "warning", f": {warning}"), markup=True)
    if args.json:
        output.print_json(report)
        return 0
    built = "taken from the engine cache" if cache["hit"] else f"built in {meta['build_seconds']:.1f} s"
    output.print_table(
        f"{args.saveEngine}: {meta['engine_bytes'] / 2**20:.2f} MiB, {built}",
        ["item", "value"],
        [
            ("TensorRT", f"{meta['flavor']} {meta['version']}"),
            ("target", (meta.get("target") or {}).get("name")),
            ("precision", (meta.get("precision") or {}).get("path")),
            *((f"profile {k}" + (" (inferred)" if meta.get("inferred_profiles") else ""),
               "; ".join(f"{n}: {_dims(b['min'])} .. {_dims(b['max'])} (opt {_dims(b['opt'])})" for n, b in p.items()))
              for k, p in enumerate(meta.get("profiles", []))),
            *((f"input {s.name}", f"{s.dtype} {s.describe_shape()}") for s in _specs(meta, "inputs")),
            *((f"output {s.name}", f"{s.dtype} ({', '.join(map(str, s.shape))})") for s in _specs(meta, "outputs")),
            ("cache", cache["note"]),
        ],
    )
    return 0


def _build(args: argparse.Namespace, config, progress) -> tuple[dict, dict]:
    """Build (or take from the engine cache) and write the plan and its sidecar to --saveEngine."""
    import json

    from trtflow.backends.tensorrt.builder import build_engine
    from trtflow.backends.tensorrt.cache import EngineCache
    from trtflow.backends.tensorrt.sidecar import atomic_write, sidecar_path, write_plan
    from trtflow.backends.tuned import model_digest

    if args.no_cache:
        result = build_engine(args.model, config, progress=progress)
        meta = write_plan(args.saveEngine, result, source=str(args.model), config=config.key_dict(),
                          onnx_sha256=model_digest(args.model))  # what the cache records: external data included
        return meta, {"hit": False, "key": None, "note": "not used (--no-cache)"}
    store = EngineCache()
    entry = store.get_or_build(args.model, config, progress=progress)
    meta = {**entry.meta, "source": str(args.model)}
    atomic_write(Path(args.saveEngine), entry.plan())
    atomic_write(sidecar_path(args.saveEngine), json.dumps(meta, indent=2).encode())
    note = (f"reused entry {entry.key[:12]} (same ONNX, flags, TensorRT and GPU); --no-cache rebuilds" if entry.hit
            else f"filled entry {entry.key[:12]} for trtflow.load and later builds")
    return meta, {"hit": entry.hit, "key": entry.key, "path": str(entry.plan_path), "note": note}


def _dims(shape) -> str:
    return "x".join(map(str, shape))


def _specs(meta: dict, which: str):
    from trtflow.spec import TensorSpec

    return [TensorSpec.from_dict(s) for s in meta.get(which, [])]


def inferred_warning(meta: dict) -> str | None:
    """A warning when the profile was inferred: batches above its max will not fit the engine."""
    notes = meta.get("inferred_profiles") or []
    if not notes:
        return None
    return ("no shapes given for a dynamic input, so trtflow inferred the profile (" + "; ".join(notes) + "); "
            "a larger batch will not fit this engine: give --max-batch N or "
            "--minShapes/--optShapes/--maxShapes NAME:NxCxHxW for the batch you run")
