"""ONNX graphs: loading with clear errors, reading I/O specs, and the ``surgeon`` edits."""
