"""Engines behind one contract, and ``load`` which picks one.

| engine     | module                      | runs on                      |
|------------|-----------------------------|------------------------------|
| ``ort``    | trtflow.engines.ort         | ONNX Runtime (CPU default)   |
| ``torch``  | trtflow.engines.torch       | PyTorch eager/compile/AOTI   |
| ``tensorrt`` | trtflow.engines.tensorrt  | TensorRT 10/11, TensorRT-RTX |
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

from trtflow.engines.base import Engine
from trtflow.errors import UsageError

log = logging.getLogger(__name__)

ENGINES = {
    "ort": ("trtflow.engines.ort", "OrtEngine"),
    "torch": ("trtflow.engines.torch", "TorchEngine"),
    "tensorrt": ("trtflow.engines.tensorrt", "TensorRTEngine"),
}
ALIASES = {"onnxruntime": "ort", "onnxrt": "ort", "trt": "tensorrt", "pytorch": "torch", "pt": "torch"}
ENGINE_FILES = {".plan": "tensorrt", ".engine": "tensorrt", ".trt": "tensorrt", ".pt2": "torch"}


def engine_class(name: str) -> type[Engine]:
    """The engine class for a name ("ort", "torch", "tensorrt" or an alias).

    Raises:
        UsageError: an unknown engine name.
    """
    key = ALIASES.get(name.lower(), name.lower())
    if key not in ENGINES:
        raise UsageError(f"unknown engine '{name}'; choose one of: auto, {', '.join(ENGINES)}")
    module, cls = ENGINES[key]
    return getattr(importlib.import_module(module), cls)


def tensorrt_usable() -> bool:
    """True when a TensorRT flavor is importable and can execute on this machine's GPU."""
    try:
        from trtflow.engines.tensorrt import runtime_usable
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
            for torch, ``min_shapes=...`` for tensorrt).

    Returns:
        An ``Engine``; ``engine.name`` says which was chosen.

    Raises:
        UsageError: an unknown engine name or option.
        ModelLoadError: the model cannot be read.
        MissingDependencyError: the engine's package is not installed.
    """
    name = auto_engine(model) if engine == "auto" else engine
    cls = engine_class(name)
    log.info("loading with the %s engine", cls.name)
    try:
        return cls(model, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc) or "positional argument" in str(exc):
            raise UsageError(f"the {cls.name} engine does not take these options: {exc}") from None
        raise
