"""Engines behind one contract, and ``load`` which picks one.

| engine       | folder                       | runs on                      |
|--------------|------------------------------|------------------------------|
| ``ort``      | trtflow.backends.onnxruntime | ONNX Runtime (CPU default)   |
| ``torch``    | trtflow.backends.torch       | PyTorch eager/compile/AOTI   |
| ``tensorrt`` | trtflow.backends.tensorrt    | TensorRT 10/11, TensorRT-RTX |

Each backend folder holds its loader/builder and its runner; ``base.py`` is the contract.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from pathlib import Path
from typing import Any

from trtflow.backends.base import Engine
from trtflow.errors import ModelLoadError, UsageError

log = logging.getLogger(__name__)

ENGINES = {
    "ort": ("trtflow.backends.onnxruntime.runner", "OrtEngine"),
    "torch": ("trtflow.backends.torch.runner", "TorchEngine"),
    "tensorrt": ("trtflow.backends.tensorrt.runner", "TensorRTEngine"),
}
ALIASES = {"onnxruntime": "ort", "onnxrt": "ort", "trt": "tensorrt", "pytorch": "torch", "pt": "torch"}
ENGINE_FILES = {".plan": "tensorrt", ".engine": "tensorrt", ".trt": "tensorrt", ".pt2": "torch"}


def canonical_engine(name: str) -> str:
    """An engine name with its aliases resolved and lower-cased ("onnxruntime" -> "ort"); "auto" stays."""
    return ALIASES.get(name.lower(), name.lower())


def engine_name(name: str, model: Any) -> str:
    """The engine ``name`` stands for with ``model``: ``auto_engine(model)`` for "auto", else
    ``canonical_engine(name)``."""
    name = canonical_engine(name)
    return auto_engine(model) if name == "auto" else name


def engine_class(name: str) -> type[Engine]:
    """The engine class for a name ("ort", "torch", "tensorrt" or an alias).

    Raises:
        UsageError: an unknown engine name.
    """
    key = canonical_engine(name)
    if key not in ENGINES:
        raise UsageError(f"unknown engine '{name}'; choose one of: auto, {', '.join(ENGINES)}")
    module, cls = ENGINES[key]
    return getattr(importlib.import_module(module), cls)


def tensorrt_usable() -> bool:
    """True when a TensorRT flavor is importable and can execute on this machine's GPU."""
    try:
        from trtflow.backends.tensorrt.runner import runtime_usable
    except ImportError:
        return False
    return runtime_usable()


def auto_engine(model: Any) -> str:
    """Pick the engine for a model: torch for modules and .pt2, TensorRT for plans, and for
    ONNX TensorRT when it can run here, else ONNX Runtime."""
    if isinstance(model, (str, os.PathLike)):
        suffix = Path(model).suffix.lower()
        if suffix in ENGINE_FILES:
            return ENGINE_FILES[suffix]
        return "tensorrt" if tensorrt_usable() else "ort"
    if isinstance(model, (bytes, bytearray)) or type(model).__name__ == "ModelProto":
        return "tensorrt" if tensorrt_usable() else "ort"
    return "torch"


def load(model: Any, engine: str = "auto", **options: Any) -> Engine:
    """Load a model behind the engine contract.

    Args:
        model: an ONNX path/bytes/ModelProto, a TensorRT plan path, an ``nn.Module``
            (with ``example_inputs=``), a ``torch.export`` ExportedProgram or a ``.pt2`` package.
        engine: "auto", "ort", "torch" or "tensorrt".
        **options: passed to the engine (e.g. ``providers=["cpu"]`` for ort, ``dtype="fp16"``
            for torch, ``min_shapes=...`` for tensorrt). ``tune=True`` (or ``config="tuned"``)
            applies the configuration ``trtflow tune`` saved for this model, shapes (``shapes=``
            or the example inputs), engine, device and library versions. ``split_batches=True``
            runs batches outside the engine's batch range in chunks (padding a partial batch of a
            static-batch engine); see ``Engine.infer``.

    Returns:
        An ``Engine``; ``engine.name`` says which was chosen.

    Raises:
        UsageError: an unknown engine name or option.
        ModelLoadError: the model cannot be read.
        MissingDependencyError: the engine's package is not installed.
    """
    if model is None:
        raise ModelLoadError("no model given (None); pass an .onnx path, a TensorRT plan, an nn.Module or a .pt2 path")
    if not isinstance(engine, str):
        raise UsageError(f"engine must be a name (auto, {', '.join(ENGINES)}), got {type(engine).__name__}")
    cls = engine_class(engine_name(engine, model))
    if options.pop("tune", False) or options.get("config") == "tuned":  # the choice saved by trtflow tune
        from trtflow.backends.tuned import apply_tuned

        options.pop("config", None)
        model, options = apply_tuned(model, cls.name, options)
    split = bool(options.pop("split_batches", False))
    _check_options(cls, options)
    log.info("loading with the %s engine", cls.name)
    loaded = cls(model, **options)
    loaded.split_batches = split
    return loaded


def _check_options(cls: type[Engine], options: dict) -> None:
    """Refuse options the engine's constructor does not take, naming those it does."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    takes = [n for n, p in params.items() if n not in ("self", "model") and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise UsageError(
            f"the {cls.name} engine does not take the option(s) {', '.join(unknown)}; it takes: {', '.join(takes)}"
        )
