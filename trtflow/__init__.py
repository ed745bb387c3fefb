"""trtflow: PyTorch -> ONNX -> TensorRT, with one engine contract for every runtime.

Nothing heavy is imported here: torch, onnx, onnxruntime and TensorRT load when the function
that needs them is first used (``trtflow.from_torch`` etc. resolve lazily).
"""

import importlib

from trtflow import errors
from trtflow.backends import load
from trtflow.backends.base import Engine
from trtflow.spec import Bounds, Profile, TensorSpec

__version__ = "0.1.0"

# public name -> module that defines it, imported on first access
_LAZY = {
    "from_torch": "trtflow.export",
    "ExportConfig": "trtflow.export",
    "ExportResult": "trtflow.export",
    "compare_engines": "trtflow.compare.engines",
    "Tolerances": "trtflow.compare.core",
    "BuildConfig": "trtflow.backends.tensorrt",
    "build_engine": "trtflow.backends.tensorrt",
    "EngineCache": "trtflow.backends.tensorrt",
    "BenchConfig": "trtflow.bench",
    "run_bench": "trtflow.bench",
    "decode_detections": "trtflow.vision",
    "cache_dir": "trtflow.cache_dir",
    "Predictor": "trtflow.video.predictor",
    "tune": "trtflow.tune",
}

__all__ = ["Bounds", "Engine", "Profile", "TensorSpec", "__version__", "errors", "load", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trtflow' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
