"""Apply one registered edit: options -> edit -> verification -> report. Shared by the CLI and the API."""

from __future__ import annotations

import argparse
import logging
from typing import Any, Mapping

from trtflow.errors import UsageError
from trtflow.edits.registry import Edit, get_edit

log = logging.getLogger(__name__)


def edit_parser(edit: Edit, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """An argparse parser holding the edit's own options (``add_arguments`` of the edit)."""
    parser = parser or argparse.ArgumentParser(prog=f"trtflow surgeon {edit.name}", add_help=False)
    edit.add_arguments(parser)
    return parser


def namespace_for(edit: Edit, options: Mapping[str, Any]) -> argparse.Namespace:
    """The argparse namespace the edit would get from the CLI, built from Python keyword options.

    Keys are option dests (``keep_io_types``, ``shape``); a string given for a repeatable option
    becomes a one-item list.

    Raises:
        UsageError: an unknown option, or a required one missing.
    """
    parser = edit_parser(edit)
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    unknown = sorted(set(options) - set(actions))
    if unknown:
        raise UsageError(
            f"edit '{edit.name}' has no option(s) {unknown}; its options are {sorted(actions)}"
        )
    ns = argparse.Namespace()
    for dest, action in actions.items():
        if dest in options:
            value = options[dest]
            if isinstance(action, argparse._AppendAction) and isinstance(value, (str, int, float)):
                value = [value]
            elif isinstance(action, argparse._AppendAction) and isinstance(value, Mapping):
                value = [f"{k}={v}" for k, v in value.items()]
            setattr(ns, dest, value)
        elif action.required:
            raise UsageError(f"edit '{edit.name}' needs the option '{dest}' ({action.help})")
        else:
            setattr(ns, dest, action.default)
    return ns


def run_edit(
    edit: Edit,
    proto: Any,
    args: argparse.Namespace,
    verify: bool = True,
    config: Any | None = None,
) -> tuple[Any, dict]:
    """Apply ``edit`` to ``proto``, verify the result, and describe what changed.

    Args:
        edit: the registered edit.
        proto: the model (onnx.ModelProto).
        args: the edit's options (from the CLI or ``namespace_for``).
        verify: False skips the verification.
        config: a ``VerifyConfig``; None uses the edit's default tolerances and random inputs.

    Returns:
        ``(new_proto, report)``; the report holds ``edit``, ``changes`` (see ``report.describe_change``),
        ``details`` (the edit's own report) and ``verification`` (None when skipped).

    Raises:
        GraphError: the edit failed. MismatchError: the verification failed.
    """
    from trtflow.edits.report import describe_change
    from trtflow.edits.verify import VerifyConfig, build_feeds, verify_edit

    config = config or VerifyConfig(atol=edit.atol, rtol=edit.rtol)
    args.atol, args.rtol = config.atol, config.rtol
    args.verify_config = config  # edits that look at data before editing (fp16 --range-check) read it too
    new, details = edit.apply(proto, args)
    report = {"edit": edit.name, "changes": describe_change(proto, new), "details": details, "verification": None}
    if verify:
        if edit.verify is not None:
            try:
                feeds = build_feeds(proto, new, config, details.get("input_map"))
            except UsageError:
                if config.inputs or config.shapes:
                    raise
                feeds = None  # dynamic dims and nothing given: the edit's verify picks its own feeds
            report["verification"] = edit.verify(proto, new, args, feeds)
        else:
            report["verification"] = verify_edit(proto, new, config, details)
    return new, report


def apply(name: str, model: Any, verify: bool = True, inputs: Mapping[str, str] | None = None,
          shapes: Mapping[str, Any] | None = None, atol: float | None = None, rtol: float | None = None,
          seed: int = 0, **options: Any) -> tuple[Any, dict]:
    """See ``trtflow.edits.apply``."""
    from trtflow.graph.io import load_onnx
    from trtflow.edits.verify import VerifyConfig

    edit = get_edit(name)
    args = namespace_for(edit, options)
    config = VerifyConfig(
        atol=edit.atol if atol is None else atol,
        rtol=edit.rtol if rtol is None else rtol,
        inputs=dict(inputs or {}),
        shapes={k: tuple(v) for k, v in (shapes or {}).items()},
        seed=seed,
    )
    return run_edit(edit, load_onnx(model), args, verify=verify, config=config)
