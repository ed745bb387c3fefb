"""ONNX models below every backend: loading with clear errors, I/O specs, the graphsurgeon IR,
a small graph builder and the bare FP16 conversion. Verified edits live in ``trtflow.edits``."""
