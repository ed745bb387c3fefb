"""The ``surgeon`` edits: each one a typed function over its own options dataclass, applied,
verified before vs after with ONNX Runtime, and reported.

::

    from trtflow import edits

    new, report = edits.apply("fix-shapes", "model.onnx", dims={"batch": 1})   # options by field
    new, report = edits.apply("fp16", new, edits.Fp16Options(block=("Resize",)),
                              verify_config=edits.VerifyConfig(shapes={"images": (1, 3, 640, 640)}))
    report["details"]["kept_fp32"], report["verification"]["max_abs"]

    fixed, info = edits.fix_shapes(proto, edits.FixShapesOptions(dims={"batch": 1}))  # no verification
    fp16_proto, info = edits.convert_fp16(proto)     # the bare conversion

This package imports nothing heavy; each edit loads its dependencies when used.
"""

from __future__ import annotations

from typing import Any

# name -> module holding it, loaded on first attribute access
_LAZY = {
    "convert_fp16": "trtflow.graph.fp16",
    "SimplifyOptions": "trtflow.edits.simplify",
    "simplify_model": "trtflow.edits.simplify",
    "FixShapesOptions": "trtflow.edits.shapes",
    "fix_shapes": "trtflow.edits.shapes",
    "parse_dims": "trtflow.edits.shapes",
    "PreprocessOptions": "trtflow.edits.preprocess",
    "embed_preprocess": "trtflow.edits.preprocess",
    "NmsOptions": "trtflow.edits.nms",
    "add_nms": "trtflow.edits.nms",
    "Fp16Options": "trtflow.edits.fp16",
    "to_fp16": "trtflow.edits.fp16",
    "QuantizeOptions": "trtflow.edits.quantize",
    "QuantizeConfig": "trtflow.edits.quantize",
    "quantize_model": "trtflow.edits.quantize",
    "quantize_int8": "trtflow.edits.quantize",
    "RenameOptions": "trtflow.edits.rename",
    "rename_io": "trtflow.edits.rename",
    "ExtractOptions": "trtflow.edits.extract",
    "extract_subgraph": "trtflow.edits.extract",
    "VerifyConfig": "trtflow.edits.verify",
    "verify_edit": "trtflow.edits.verify",
}

__all__ = ["apply", "edits", "options_of", *_LAZY]


def apply(name: str, model: Any, options: Any = None, verify: bool = True, verify_config: Any = None,
          progress: Any = None, **option_fields: Any) -> tuple[Any, dict]:
    """Apply the surgeon edit ``name`` to ``model`` and verify it with ONNX Runtime.

    Args:
        name: an edit of ``edits()`` ("simplify", "fix-shapes", "fp16", ...).
        model: path, bytes or onnx.ModelProto.
        options: the edit's options dataclass (``options_of(name)``, e.g. ``Fp16Options(...)``);
            None builds it from ``option_fields``.
        verify: False skips the before/after comparison.
        verify_config: a ``VerifyConfig``: tolerances (unset: the edit's own), input files, shapes
            of dynamic inputs, seed.
        progress: a ``trtflow.progress.Progress`` callback told what runs (None: silent).
        **option_fields: fields of the edit's options dataclass (``keep_io_types=False``,
            ``dims={"batch": 1}``, ``calib_dir="imgs/"``); with ``options``, they replace its fields.

    Returns:
        ``(onnx.ModelProto, report)``; the report says what changed and what was measured.

    Raises:
        UsageError: unknown edit, unknown or missing option, a bad option value.
        GraphError: the edit failed. MismatchError: the edited model's outputs differ beyond the tolerances.
    """
    from trtflow.edits.pipeline import apply as _apply

    return _apply(name, model, options, verify=verify, verify_config=verify_config, progress=progress,
                  **option_fields)


def edits() -> list[str]:
    """Names of the registered surgeon edits."""
    from trtflow.edits.registry import EDIT_MODULES

    return list(EDIT_MODULES)


def options_of(name: str) -> type:
    """The options dataclass of the edit ``name`` (``options_of("fp16")`` is ``Fp16Options``).

    Raises:
        UsageError: no edit of that name.
    """
    from trtflow.edits.registry import get_edit

    return get_edit(name).options


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trtflow.edits' has no attribute '{name}'")
