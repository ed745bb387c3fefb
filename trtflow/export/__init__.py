"""PyTorch -> ONNX export with automatic verification against ONNX Runtime.

``from_torch(module, example_inputs, "model.onnx", dynamic={"x": {0: "batch"}})`` writes one
self-contained ONNX file, checks it, and compares ONNX Runtime with PyTorch on the example
inputs and on inputs with every dynamic axis resized. Torch is imported only when used.
"""

from trtflow.export.config import ExportConfig, ExportResult, VerifyCase
from trtflow.export.pipeline import from_torch

__all__ = ["ExportConfig", "ExportResult", "VerifyCase", "from_torch"]
