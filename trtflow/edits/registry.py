"""The one place ONNX edits register: ``trtflow surgeon NAME`` and ``trtflow.edits.apply``.

An edit module calls ``register(Edit(...))`` at import; EDIT_MODULES lists those modules,
imported only when an edit is looked up, so heavy packages load only for the edit in use.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

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


@dataclass(frozen=True)
class Edit:
    """One graph edit.

    Attributes:
        name: the surgeon subcommand ("add-nms").
        help: one line for --help.
        add_arguments: adds the edit's own options to its argparse parser.
        apply: ``(model_proto, args) -> (new_proto, report)``; report is a JSON-able dict of what changed.
        verify: optional ``(before_proto, after_proto, args, feeds) -> dict``; raises MismatchError on
            failure. ``feeds`` is ``[(label, {input: array})]`` for the before model (None when its
            dynamic dims left nothing to build them from); ``args.atol``/``args.rtol`` hold the
            tolerances and ``args.verify_config`` the whole ``trtflow.edits.verify.VerifyConfig``.
            None means the default: ONNX Runtime outputs before vs after, same names.
        atol: default absolute tolerance of the default verification (``--atol`` overrides).
        rtol: default relative tolerance of the default verification (``--rtol`` overrides).
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    apply: Callable[[Any, argparse.Namespace], tuple[Any, dict]]
    verify: Optional[Callable[..., dict]] = None
    atol: float = 1e-4
    rtol: float = 1e-4


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
