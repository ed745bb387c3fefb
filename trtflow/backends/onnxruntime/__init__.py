"""The ONNX Runtime backend: ``runner.OrtEngine`` (sessions are built from the ONNX file on load)."""
