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

from trtflow.errors import TrtflowError, UsageError

COMMANDS = [
    "quickstart", "export", "inspect", "run", "compare",
    "build", "check", "cache", "bench", "surgeon",
    "serve", "loadgen", "video", "tune", "triton-repo", "trtexec",
]


class ArgumentError(UsageError):
    """A flag argparse refused; ``prog`` is the command it belongs to (``trtflow run``)."""

    def __init__(self, message: str, prog: str):
        super().__init__(message)
        self.prog = prog


class ArgParser(argparse.ArgumentParser):
    """argparse with one-line errors: a refused flag raises ``ArgumentError`` instead of printing
    the usage dump, and ``main`` prints it as ``trtflow CMD: error: ... (see trtflow CMD --help)``.
    Subcommand parsers inherit it; a subcommand with its own parser (surgeon) uses it too."""

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(args or [])  # for error(): a trtexec flag trtflow lacks is the better message
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        from trtflow.cli.trtexec import unsupported_hint

        unknown = [a for a in getattr(self, "_given", []) if a.split("=", 1)[0] not in self._option_string_actions]
        raise ArgumentError(unsupported_hint(unknown) or " ".join(message.split()), self.prog)


def _parser() -> tuple[argparse.ArgumentParser, dict]:
    from trtflow import __version__

    parser = ArgParser(prog="trtflow", description="PyTorch -> ONNX -> TensorRT, checked and measured.")
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
    """Run ``trtflow ARGV``; return the exit code (0 ok, 1 a check ran and failed, 2 bad input).

    Every error is one line on stderr, ``trtflow CMD: error: ...``; ``--verbose`` adds the traceback.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, modules = _parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and getattr(args, "takes_extra", False):  # trtflow trtexec: passes every flag on
            args.extra, extra = extra, []
        if extra:  # named after the subcommand they were given to
            command = getattr(args, "command", None)
            from trtflow.cli.trtexec import unsupported_hint

            raise ArgumentError(unsupported_hint(extra) or f"unrecognized arguments: {' '.join(extra)}",
                                f"trtflow {command}" if command else "trtflow")
    except ArgumentError as exc:
        print(f"{exc.prog}: error: {exc} (see {exc.prog} --help)", file=sys.stderr)
        if "--json" in argv:  # a refused flag is a failure too: one JSON object on stdout
            _print_error_json(exc, str(exc), exc.exit_code)
        return exc.exit_code
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.command:
        print(f"trtflow: error: give a command, one of: {', '.join(modules)} (see trtflow --help)", file=sys.stderr)
        return 2
    prog = f"trtflow {args.command}"
    try:
        return int(modules[args.command].run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error becomes one line unless --verbose
        if getattr(args, "verbose", False):  # read again: a command's own parser may set it (surgeon EDIT ... -v)
            raise
        line, code = _one_line(exc)
        print(f"{prog}: error: {line}", file=sys.stderr)
        if getattr(args, "json", False):  # --json: one JSON object on stdout, failures too
            _print_error_json(exc, line, code)
        return code


def _print_error_json(exc: BaseException, line: str, code: int) -> None:
    """The one JSON object of a failed --json command: the command's own report where it made one
    (``exc.json_report``: a comparison that ran and failed) with the error fields added."""
    from trtflow.cli.output import print_json

    report = {**(getattr(exc, "json_report", None) or {}), "ok": False, "error": line, "type": type(exc).__name__,
              "exit_code": code}
    if getattr(exc, "failures", None):
        report["failures"] = exc.failures
    print_json(report)


def _one_line(exc: BaseException) -> tuple[str, int]:
    """The message and exit code of an error: trtflow's own as they are, an OS error (a file that
    cannot be read or written) as bad input, anything else as an internal error worth reporting."""
    if isinstance(exc, TrtflowError):
        text, code = str(exc), exc.exit_code
    elif isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        text, code = f"{exc.strerror or exc}{where}; check the path and its permissions", 2
    elif isinstance(exc, MemoryError):
        text, code = "out of memory; use smaller shapes or a smaller batch", 2
    else:
        text, code = (f"internal error {type(exc).__name__}: {exc} (a trtflow bug: please report it with the "
                      "output of --verbose)"), 1
    text = " ".join(text.split()) if "\n" in text else text
    return text, code


if __name__ == "__main__":
    raise SystemExit(main())
