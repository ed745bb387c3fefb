"""The one place ONNX edits register: ``trtflow surgeon NAME`` and ``trtflow.edits.apply``.

An edit module calls ``register(Edit(...))`` at import; EDIT_MODULES lists those modules,
imported only when an edit is looked up, so heavy packages load only for the edit in use.
An edit is a typed function over its own options dataclass; the CLI turns flags into that
dataclass (``trtflow/cli/surgeon.py``), Python code builds it directly.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from trtflow.errors import UsageError

# module that registers each edit (several edits may share a module)
EDIT_MODULES = {
    "simplify": "trtflow.edits.simplify",
    "fix-shapes": "trtflow.edits.shapes",
    "embed-preprocess": "trtflow.edits.preprocess",
    "add-nms": "trtflow.edits.nms",
    "fp16": "trtflow.edits.fp16",
    "quantize": "trtflow.edits.quantize",
    "rename": "trtflow.edits.rename",
    "extract": "trtflow.edits.extract",
}

# keyword arguments an edit's apply function may ask the pipeline for (see Edit.wants)
CONTEXT = ("verify_config", "progress")


@dataclass(frozen=True)
class Edit:
    """One graph edit.

    Attributes:
        name: the surgeon subcommand ("add-nms").
        help: one line for --help.
        options: the edit's options dataclass (``FixShapesOptions``); its ``__post_init__`` raises
            UsageError on a bad value.
        apply: ``(model_proto, options, **context) -> (new_proto, report)``; the report is a JSON-able
            dict of what changed. ``context`` holds the keywords named in ``wants``.
        verify: optional ``(before_proto, after_proto, options, verify_config, feeds, progress=None) -> dict``;
            raises MismatchError on failure. ``verify_config`` is the run's ``VerifyConfig`` with the
            tolerances resolved; ``feeds`` is ``[(label, {input: array})]`` for the before model, or
            None when its dynamic dims left nothing to build them from. None means the default:
            ONNX Runtime outputs before vs after, same names.
        atol: default absolute tolerance of the verification (``VerifyConfig.atol`` overrides).
        rtol: default relative tolerance of the verification (``VerifyConfig.rtol`` overrides).
        wants: the keywords of CONTEXT that ``apply`` takes: "verify_config" (edits that look at the
            verification inputs first, like fp16's range check), "progress" (long edits).
        verify_feeds: False when ``verify`` builds its own feeds (raw frames, held-back samples):
            it then gets ``feeds=None``.
    """

    name: str
    help: str
    options: type
    apply: Callable[..., tuple[Any, dict]]
    verify: Optional[Callable[..., dict]] = None
    atol: float = 1e-4
    rtol: float = 1e-4
    wants: tuple[str, ...] = ()
    verify_feeds: bool = True

    def __post_init__(self):
        if not dataclasses.is_dataclass(self.options):
            raise TypeError(f"edit '{self.name}': options must be a dataclass, not {self.options!r}")
        unknown = set(self.wants) - set(CONTEXT)
        if unknown:
            raise TypeError(f"edit '{self.name}': wants {sorted(unknown)}; choose among {CONTEXT}")

    def make_options(self, options: Any = None, fields: Mapping[str, Any] | None = None) -> Any:
        """The edit's options dataclass from an instance and/or field values.

        Args:
            options: an instance of ``self.options`` (None: the defaults).
            fields: field name -> value, replacing those of ``options``.

        Raises:
            UsageError: ``options`` of another type, an unknown field, a required field missing,
                or a value the dataclass refuses.
        """
        fields = dict(fields or {})
        if options is not None and not isinstance(options, self.options):
            raise UsageError(f"edit '{self.name}' takes {self.options.__name__}, "
                             f"not {type(options).__name__}")
        known = {f.name: f for f in dataclasses.fields(self.options) if f.init}
        unknown = sorted(set(fields) - set(known))
        if unknown:
            raise UsageError(f"edit '{self.name}' has no option(s) {unknown}; "
                             f"its options ({self.options.__name__}) are {sorted(known)}")
        if options is not None:
            return dataclasses.replace(options, **fields) if fields else options
        missing = [name for name, f in known.items() if name not in fields
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise UsageError(f"edit '{self.name}' needs the option(s) {missing} "
                             f"(fields of {self.options.__name__})")
        return self.options(**fields)


EDITS: dict[str, Edit] = {}


def register(edit: Edit) -> Edit:
    EDITS[edit.name] = edit
    return edit


def get_edit(name: str) -> Edit:
    """The registered edit called ``name``, importing its module on first use.

    Raises:
        UsageError: no edit of that name.
    """
    if name not in EDIT_MODULES:
        raise UsageError(f"unknown surgeon edit '{name}'; choose one of: {', '.join(EDIT_MODULES)}")
    if name not in EDITS:
        importlib.import_module(EDIT_MODULES[name])
    return EDITS[name]
