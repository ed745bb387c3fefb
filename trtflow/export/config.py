"""Typed settings and results of a PyTorch -> ONNX export."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from trtflow.compare.core import OutputDiff, Tolerances
from trtflow.errors import UsageError
from trtflow.spec import TensorSpec

EXPORTERS = ("auto", "dynamo", "torchscript")
DEFAULT_OPSET = 18  # LayerNormalization (17) and Col2Im (18) are in; TensorRT 10 and ORT >= 1.14 read it


@dataclass(frozen=True)
class ExportConfig:
    """How to export a module.

    Attributes:
        input_names: ONNX input names, in the order of the example inputs (``"a,b"`` works too). Default:
            the keys of a mapping of example inputs, else the parameter names of ``forward``.
        output_names: ONNX output names, in the order the module returns them. Default: the keys
            of a returned dict, else ``output`` (one output) or ``output_0, output_1, ...``.
        dynamic: input name -> {axis: label}, e.g. ``{"x": {0: "batch"}}``. Axes sharing a label
            are one symbol. Output axes follow from the graph; naming them is optional.
        opset: the ai.onnx opset to target.
        exporter: "auto" (dynamo when it works, else TorchScript; see ``trtflow.export.torch_onnx``),
            "dynamo" or "torchscript".
        verify: compare ONNX Runtime with PyTorch after exporting and raise on a mismatch.
        atol: absolute tolerance of the verification.
        rtol: relative tolerance of the verification.
        per_output_atol: output name -> absolute tolerance for that output.
        per_output_rtol: output name -> relative tolerance for that output.
        min_agreement: integer outputs (class ids, argmax maps) pass when this share of their
            elements is equal (1.0: all).
    """

    input_names: Sequence[str] | None = None
    output_names: Sequence[str] | None = None
    dynamic: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    opset: int = DEFAULT_OPSET
    exporter: str = "auto"
    verify: bool = True
    atol: float = 1e-4
    rtol: float = 1e-3
    per_output_atol: Mapping[str, float] = field(default_factory=dict)
    per_output_rtol: Mapping[str, float] = field(default_factory=dict)
    min_agreement: float = 1.0

    def __post_init__(self):
        if self.exporter not in EXPORTERS:
            raise UsageError(f"unknown exporter '{self.exporter}'; choose one of: {', '.join(EXPORTERS)}")
        if isinstance(self.opset, bool) or not isinstance(self.opset, numbers.Integral):
            raise UsageError(f"opset must be a whole number such as {DEFAULT_OPSET}, got {self.opset!r}")
        if not 7 <= int(self.opset) <= 30:
            raise UsageError(f"opset {self.opset} is out of range; use an ai.onnx opset such as {DEFAULT_OPSET}")
        object.__setattr__(self, "opset", int(self.opset))
        if not isinstance(self.verify, bool):
            raise UsageError(f"verify: expected True or False, got {self.verify!r}")
        for key in ("input_names", "output_names"):
            object.__setattr__(self, key, _names(getattr(self, key), key))
        if not isinstance(self.dynamic, Mapping) or not all(isinstance(a, Mapping) for a in self.dynamic.values()):
            raise UsageError(f"dynamic: expected a dict input name -> {{axis: label}}, e.g. {{'x': {{0: 'batch'}}}}, "
                             f"got {self.dynamic!r}")
        _ = self.tolerances  # refuses tolerances of the wrong type or range
        for name, axes in self.dynamic.items():
            for axis, label in axes.items():
                if isinstance(axis, bool) or not isinstance(axis, int) or axis < 0:
                    raise UsageError(f"dynamic axis of '{name}' must be an integer >= 0, got {axis!r}")
                if not str(label).isidentifier():
                    raise UsageError(
                        f"dynamic axis label '{label}' of '{name}' must be an identifier, e.g. batch or seq_len"
                    )

    @property
    def tolerances(self) -> Tolerances:
        """The verification's tolerances (atol, rtol, per output, min_agreement) as ``Tolerances``."""
        return Tolerances(self.atol, self.rtol, self.per_output_atol, self.per_output_rtol,
                          min_agreement=self.min_agreement)


def _names(value, what: str) -> tuple[str, ...] | None:
    """None, ``"a,b"`` or a sequence of strings -> a tuple of names (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(n.strip() for n in value.split(",") if n.strip())
    if not isinstance(value, Sequence) or not all(isinstance(n, str) and n for n in value):
        raise UsageError(f"{what}: expected a list of non-empty names, e.g. ['images'], got {value!r}")
    return tuple(value)


@dataclass
class VerifyCase:
    """One verification run: the input shapes used and each output's difference."""

    name: str
    input_shapes: dict[str, tuple[int, ...]]
    diffs: list[OutputDiff]

    @property
    def passed(self) -> bool:
        return all(d.passed for d in self.diffs)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "passed": self.passed,
            "outputs": [d.to_dict() for d in self.diffs],
        }


@dataclass
class ExportResult:
    """What ``from_torch`` produced.

    Attributes:
        path: the ONNX file written (one self-contained file below 2 GB).
        inputs: specs of the ONNX inputs (dynamic axes carry their labels).
        outputs: specs of the ONNX outputs.
        exporter: the exporter that produced the file ("dynamo" or "torchscript").
        opset: the ai.onnx opset of the file.
        verification: one case per verification run (empty when verification was off).
        notes: why an exporter was chosen or skipped, and anything else worth knowing.
    """

    path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    exporter: str
    opset: int
    verification: list[VerifyCase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return bool(self.verification) and all(c.passed for c in self.verification)

    def max_errors(self) -> dict[str, dict[str, float]]:
        """Output name -> worst ``max_abs`` and ``max_rel`` over every verification case."""
        worst: dict[str, dict[str, float]] = {}
        for case in self.verification:
            for d in case.diffs:
                w = worst.setdefault(d.name, {"max_abs": 0.0, "max_rel": 0.0})
                w["max_abs"] = max(w["max_abs"], d.max_abs)
                w["max_rel"] = max(w["max_rel"], d.max_rel)
        return worst

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "exporter": self.exporter,
            "opset": self.opset,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "verified": self.verified,
            "verification": [c.to_dict() for c in self.verification],
            "max_errors": self.max_errors(),
            "notes": list(self.notes),
        }
