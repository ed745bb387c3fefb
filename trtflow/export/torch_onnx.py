"""Calling PyTorch's two ONNX exporters, and choosing between them.

Which exporter "auto" picks, and why (measured with torch 2.13 and onnxscript 0.7 on CPU):

* The dynamo exporter (``torch.export`` + onnxscript) comes first. It is PyTorch's default
  since 2.9 and the maintained one: the TorchScript exporter warns that it "will be removed".
  ``torch.export`` traces dynamic axes symbolically; when the model's code fixes a dynamic
  size (``int(x.shape[0])``) the input axis comes out static, which ``from_torch`` reports at
  once. TorchScript tracing instead bakes the example's size into the arithmetic while still
  declaring the axis dynamic: only the second-shape verification catches it. The dynamo
  optimizer also folds BatchNorm and constants: MobileNetV2 has 100 nodes against 170.
* Its costs: it needs onnxscript; it is slow (MobileNetV2: about 7 s against 0.4 s on two CPU
  cores); it emits ai.onnx opset 18 or later only (asked for 17 it still writes 18); it prints
  progress on stdout and writes weights as external data when asked or above 2 GB. We capture
  the prints and fold any external data back into one file.
* So "auto" takes TorchScript when onnxscript is missing, when an opset below 18 is asked for,
  or when ``torch.export`` cannot capture the model (data-dependent Python control flow,
  unsupported ops). Each such choice is logged and kept in ``ExportResult.notes``; the file is
  verified against PyTorch whichever exporter wrote it.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import tempfile
from pathlib import Path
from typing import Mapping

from trtflow.capture import capture_output
from trtflow.errors import ExportError, UsageError
from trtflow.graph.io import load_onnx

log = logging.getLogger(__name__)

DYNAMO_MIN_OPSET = 18
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def choose_exporter(requested: str, opset: int) -> tuple[list[str], list[str]]:
    """The exporters to try, in order, and notes saying why.

    Raises:
        UsageError: "dynamo" asked for without onnxscript, or with an opset it cannot write.
    """
    has_onnxscript = importlib.util.find_spec("onnxscript") is not None
    if requested == "torchscript":
        return ["torchscript"], []
    if requested == "dynamo":
        if not has_onnxscript:
            raise UsageError(
                "the dynamo exporter needs the package 'onnxscript'; install it with "
                'pip install "trtflow[torch]", or choose exporter="torchscript"'
            )
        if opset < DYNAMO_MIN_OPSET:
            raise UsageError(
                f"the dynamo exporter writes opset {DYNAMO_MIN_OPSET} or later, not {opset}; "
                f"ask for --opset {DYNAMO_MIN_OPSET} or use the torchscript exporter"
            )
        return ["dynamo"], []
    if not has_onnxscript:
        return ["torchscript"], ["dynamo exporter skipped: onnxscript is not installed"]
    if opset < DYNAMO_MIN_OPSET:
        return ["torchscript"], [f"dynamo exporter skipped: it cannot write opset {opset} (< {DYNAMO_MIN_OPSET})"]
    return ["dynamo", "torchscript"], []


_LOGGERS = ("torch", "onnxscript")  # whose records below ERROR are captured while exporting


def export_dynamo(module, inputs: Mapping, output_names: list[str], dynamic: Mapping[str, Mapping[int, str]], opset: int):
    """Export with ``torch.export`` + onnxscript; returns the ModelProto (external data folded in).

    Raises:
        ExportError: torch.export or the ONNX translation failed.
    """
    import torch

    dims: dict[str, object] = {}
    dynamic_shapes = tuple(
        {axis: dims.setdefault(label, torch.export.Dim(label)) for axis, label in dynamic.get(name, {}).items()} or None
        for name in inputs
    )
    with capture_output(_LOGGERS, log=log) as out, tempfile.TemporaryDirectory(prefix="trtflow-export-") as tmp:
        try:
            program = torch.onnx.export(
                module, tuple(inputs.values()), None, input_names=list(inputs), output_names=output_names,
                opset_version=opset, dynamo=True, dynamic_shapes=dynamic_shapes if dynamic else None,
                optimize=True, verbose=False,
            )
            path = Path(tmp) / "model.onnx"
            program.save(path)  # may write model.onnx.data beside it: load_onnx folds it in
            return load_onnx(path)
        except Exception as exc:  # torch raises many types here (TorchExportError, UserError, ...)
            raise ExportError(
                f"the dynamo exporter failed: {_first_line(exc)}{_hint(out.getvalue())}. Python code that branches "
                "on tensor values or an unsupported op stops torch.export; try --exporter torchscript"
            ) from exc


def export_torchscript(module, inputs: Mapping, output_names: list[str], dynamic: Mapping[str, Mapping[int, str]], opset: int):
    """Export with the TorchScript tracer; returns the ModelProto.

    Raises:
        ExportError: tracing or the ONNX conversion failed.
    """
    import torch

    # fds: on errors the TorchScript exporter's C++ code prints its graph straight to descriptor 1
    with capture_output(_LOGGERS, fds=True, log=log) as out, tempfile.TemporaryDirectory(prefix="trtflow-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(
                module, tuple(inputs.values()), str(path), input_names=list(inputs), output_names=output_names,
                opset_version=opset, dynamo=False, dynamic_axes={k: dict(v) for k, v in dynamic.items()} or None,
                do_constant_folding=True,
            )
            return load_onnx(path)
        except Exception as exc:
            raise ExportError(
                f"the TorchScript exporter failed: {_first_line(exc)}{_hint(out.getvalue())}. Simplify the "
                "failing operation in the model, or try --exporter dynamo"
            ) from exc


EXPORT_FUNCTIONS = {"dynamo": export_dynamo, "torchscript": export_torchscript}


def _first_line(exc: BaseException) -> str:
    """``Type: first line`` of the innermost cause (torch wraps the real reason in summaries)."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    lines = [t for t in _ANSI.sub("", str(root)).splitlines() if t.strip()]
    return f"{type(root).__name__}: {lines[0].strip() if lines else ''}"[:400]


def _hint(output: str) -> str:
    return " (run with --verbose for the exporter's full output)" if output.strip() else ""
