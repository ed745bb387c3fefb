"""trtflow cache list|clear: the engines built by trtflow.load(..., engine="tensorrt")."""

from __future__ import annotations

import argparse

from trtflow.cli import options, output

HELP = "list or clear cached TensorRT engines ($TRTFLOW_CACHE_DIR/engines)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "clear"], help="list the cached engines, or delete them all")
    options.add_json(parser)


def run(args: argparse.Namespace) -> int:
    from trtflow.backends.tensorrt.cache import EngineCache

    store = EngineCache()
    if args.action == "clear":
        removed = store.clear()
        if args.json:
            output.print_json({"root": str(store.root), "removed": removed})
        else:
            output.console().print(f"removed {removed} engine(s) from {store.root}")
        return 0
    entries = store.entries()
    if args.json:
        output.print_json({"root": str(store.root), "engines": entries})
        return 0
    output.print_table(
        f"{len(entries)} cached engine(s) in {store.root}",
        ["key", "source", "TensorRT", "target", "precision", "MiB", "built (s)"],
        [
            (e["key"][:12], e["source"] or "-",
             f"{e['flavor']} {e['version']}" if e["complete"] else "no usable sidecar: rebuilt on next use",
             (e["target"] or {}).get("name", "-"),
             e["precision"] or "-", f"{e['engine_bytes'] / 2**20:.2f}", e["build_seconds"] or "-")
            for e in entries
        ],
    )
    return 0
