"""trtflow: PyTorch -> ONNX -> TensorRT, with one engine contract for every runtime.

Heavy packages (torch, onnxruntime, tensorrt) are imported only when used.
"""

from trtflow import errors
from trtflow.engines import load
from trtflow.engines.base import Engine
from trtflow.spec import Bounds, Profile, TensorSpec

__version__ = "0.1.0"

__all__ = ["Bounds", "Engine", "Profile", "TensorSpec", "__version__", "errors", "load"]
