"""PyTorch -> ONNX export with automatic verification against ONNX Runtime."""
