"""The ``surgeon`` edits: each one applied, verified before vs after, and reported.

Every edit is verified with ONNX Runtime (before vs after) unless asked not to::

    from trtflow import edits
    new, report = edits.apply("fix-shapes", "model.onnx", shape=["images:1x3x640x640"])
    new, report = edits.apply("fp16", new)            # report["details"]["kept_fp32"]
    fp16_proto, info = edits.convert_fp16(proto)     # the bare conversion, no verification

This package imports nothing heavy; each edit loads its dependencies when used.
"""

from __future__ import annotations

from typing import Any, Mapping

# name -> module holding the function, loaded on first attribute access
_LAZY = {
    "convert_fp16": "trtflow.graph.fp16",
    "simplify_model": "trtflow.edits.simplify",
    "fix_shapes": "trtflow.edits.shapes",
    "embed_preprocess": "trtflow.edits.preprocess",
    "PreprocessSpec": "trtflow.edits.preprocess",
    "quantize_int8": "trtflow.edits.quantize",
    "QuantizeConfig": "trtflow.edits.quantize",
    "rename_io": "trtflow.edits.rename",
    "extract_subgraph": "trtflow.edits.extract",
    "VerifyConfig": "trtflow.edits.verify",
    "verify_edit": "trtflow.edits.verify",
}

__all__ = ["apply", "edits", *_LAZY]


def apply(name: str, model: Any, verify: bool = True, inputs: Mapping[str, str] | None = None,
          shapes: Mapping[str, Any] | None = None, atol: float | None = None, rtol: float | None = None,
          seed: int = 0, **options: Any) -> tuple[Any, dict]:
    """Apply the surgeon edit ``name`` to ``model`` and verify it with ONNX Runtime.

    Args:
        name: an edit of ``edits()`` ("simplify", "fix-shapes", "fp16", ...).
        model: path, bytes or onnx.ModelProto.
        verify: False skips the before/after comparison.
        inputs: input name -> .npy/.npz file fed to the verification besides random values.
        shapes: concrete shapes for dynamic inputs during verification.
        atol, rtol: tolerances (default: the edit's own).
        seed: seed of the random verification inputs.
        **options: the edit's options by their CLI dest names (``shape=["x:1x3x224x224"]``,
            ``keep_io_types=False``, ``calib_dir="imgs/"``).

    Returns:
        ``(onnx.ModelProto, report)``; the report says what changed and what was measured.

    Raises:
        UsageError: unknown edit or option. GraphError: the edit failed.
        MismatchError: the edited model's outputs differ beyond the tolerances.
    """
    from trtflow.edits.pipeline import apply as _apply

    return _apply(name, model, verify=verify, inputs=inputs, shapes=shapes, atol=atol, rtol=rtol,
                  seed=seed, **options)


def edits() -> list[str]:
    """Names of the registered surgeon edits."""
    from trtflow.edits.registry import EDIT_MODULES

    return list(EDIT_MODULES)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trtflow.edits' has no attribute '{name}'")
