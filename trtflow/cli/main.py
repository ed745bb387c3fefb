"""``trtflow`` entry point: a registry of subcommand modules, errors turned into one line.

Each module in COMMANDS defines ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``
and imports nothing heavy at module level, so a missing optional package disables only the
subcommand that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from trtflow.errors import TrtflowError

COMMANDS = [
    "quickstart", "export", "inspect", "run", "compare",
    "build", "check", "cache", "bench", "surgeon",
]


def _parser() -> tuple[argparse.ArgumentParser, dict]:
    from trtflow import __version__

    parser = argparse.ArgumentParser(prog="trtflow", description="PyTorch -> ONNX -> TensorRT, checked and measured.")
    parser.add_argument("--version", action="version", version=f"trtflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"trtflow.cli.{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:
            if exc.name == f"trtflow.cli.{name}":
                continue  # subcommand not shipped in this build
            raise
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        cmd.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        module.add_arguments(cmd)
        modules[name] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = _parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].run(args) or 0)
    except TrtflowError as exc:
        if verbose:
            raise
        print(f"trtflow {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
