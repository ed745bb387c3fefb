"""Optional dependencies, imported where they are needed, with an error naming the fix."""

from __future__ import annotations

import importlib
from types import ModuleType

from trtflow.errors import MissingDependencyError

# module name -> (extra that installs it, what needs it)
EXTRAS = {
    "torch": "torch",
    "onnxscript": "torch",
    "onnxruntime": "ort",
    "tensorrt": "tensorrt",
    "tensorrt_rtx": "rtx",
    "tensorrt_rtx_bindings": "rtx",
    "onnx_graphsurgeon": "graph",
    "onnxslim": "graph",
    "skimage": "demo",
    "sklearn": "demo",
    "matplotlib": "plot",
    "av": "video",
    "cv2": "video",
    "aiohttp": "serve",
    "grpc": "serve",
    "tritonclient": "serve",
    "ray": "ray",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional dependency.

    Args:
        module: the module to import, e.g. ``"torch"``.
        purpose: what needs it, for the message, e.g. ``"the torch engine"``.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: the module is not installed; the message names the extra.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = EXTRAS.get(module.split(".")[0])
        fix = f'pip install "trtflow[{extra}]"' if extra and extra != "ort" else f"pip install {module}"
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module}', which could not be imported ({exc}). "
            f"Install it with: {fix}"
        ) from exc
