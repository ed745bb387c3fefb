"""Apply one registered edit: options -> edit -> verification -> report. Shared by the CLI and the API."""

from __future__ import annotations

import logging
from typing import Any

from trtflow.edits.registry import Edit, get_edit
from trtflow.edits.report import describe_change
from trtflow.edits.verify import VerifyConfig, build_feeds, verify_edit
from trtflow.errors import UsageError
from trtflow.progress import Progress, report as progress_of

log = logging.getLogger(__name__)


def run_edit(
    edit: Edit,
    proto: Any,
    options: Any,
    verify: bool = True,
    config: VerifyConfig | None = None,
    progress: Progress | None = None,
) -> tuple[Any, dict]:
    """Apply ``edit`` to ``proto``, verify the result, and describe what changed.

    Args:
        edit: the registered edit.
        proto: the model (onnx.ModelProto).
        options: an instance of ``edit.options``.
        verify: False skips the verification.
        config: a ``VerifyConfig``; None, or unset tolerances, take the edit's defaults.
        progress: told what runs (editing, verifying on each feed).

    Returns:
        ``(new_proto, report)``; the report holds ``edit``, ``changes`` (see ``report.describe_change``),
        ``details`` (the edit's own report) and ``verification`` (None when skipped).

    Raises:
        UsageError: options of another edit. GraphError: the edit failed.
        MismatchError: the verification failed.
    """
    if not isinstance(options, edit.options):
        raise UsageError(f"edit '{edit.name}' takes {edit.options.__name__}, not {type(options).__name__}")
    config = (config or VerifyConfig()).resolved(edit.atol, edit.rtol)
    progress = progress_of(progress)
    context = {"verify_config": config, "progress": progress}
    progress(f"{edit.name}: editing")
    new, details = edit.apply(proto, options, **{k: context[k] for k in edit.wants})
    report = {"edit": edit.name, "changes": describe_change(proto, new), "details": details, "verification": None}
    if not verify:
        return new, report
    progress(f"{edit.name}: verifying")
    if edit.verify is None:
        report["verification"] = verify_edit(proto, new, config, details, progress=progress)
        return new, report
    feeds = None
    if edit.verify_feeds:
        try:
            feeds = build_feeds(proto, new, config, details.get("input_map"))
        except UsageError:
            if config.inputs or config.shapes:
                raise
            # dynamic dims and nothing given: the edit's verify picks its own feeds
    report["verification"] = edit.verify(proto, new, options, config, feeds, progress=progress)
    return new, report


def apply(name: str, model: Any, options: Any = None, verify: bool = True, verify_config: VerifyConfig | None = None,
          progress: Progress | None = None, **option_fields: Any) -> tuple[Any, dict]:
    """See ``trtflow.edits.apply``."""
    from trtflow.graph.io import load_onnx

    edit = get_edit(name)
    if verify_config is not None and not isinstance(verify_config, VerifyConfig):
        raise UsageError(f"verify_config must be a trtflow.edits.VerifyConfig, not {type(verify_config).__name__}")
    options = edit.make_options(options, option_fields)
    return run_edit(edit, load_onnx(model), options, verify=verify, config=verify_config, progress=progress)
