"""The precision path of a build: TensorRT 10 builder flags, or an ONNX converted before parsing.

TensorRT 11 and TensorRT-RTX build every network strongly typed (no FP16/BF16/INT8 builder
flags): there ``--fp16`` converts the ONNX with ``trtflow.graph.fp16.convert_fp16`` and says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from trtflow.backends.tensorrt.config import BuildConfig
from trtflow.backends.tensorrt.flavor import Flavor
from trtflow.errors import UsageError

log = logging.getLogger(__name__)

FLAG_NAMES = {"fp16": ("FP16",), "bf16": ("BF16",), "int8": ("INT8",), "best": ("FP16", "BF16", "INT8")}


@dataclass
class PrecisionPlan:
    """What a build does about precision.

    Attributes:
        strongly_typed: the network is created strongly typed (types come from the ONNX).
        flags: BuilderFlag member names to set (TensorRT 10 only).
        path: one line for people and --json, e.g. "builder flags FP16".
        conversion: the FP16 converter's report when the ONNX was converted, else None.
        proto: the ONNX to parse (converted or the original).
    """

    strongly_typed: bool
    flags: list[str]
    path: str
    proto: Any
    conversion: dict | None = None
    requested: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {"requested": self.requested, "strongly_typed": self.strongly_typed, "path": self.path, "builder_flags": self.flags}
        if self.conversion is not None:
            kept = self.conversion.get("kept_fp32", [])
            out["fp16_conversion"] = {
                "converted_nodes": self.conversion.get("converted_nodes"),
                "kept_fp32": len(kept),
                "kept_fp32_by_op": self.conversion.get("kept_fp32_by_op", {}),
                "keep_io_types": self.conversion.get("keep_io_types"),
            }
        return out


def plan_precision(proto: Any, config: BuildConfig, flavor: Flavor) -> PrecisionPlan:
    """Decide how to honour ``config``'s precision flags on ``flavor``.

    Raises:
        UsageError: a flag this flavor cannot honour (INT8/--best/BF16 on a strongly typed
            network); the message says what to do instead.
    """
    requested = config.precisions
    strongly = flavor.always_strongly_typed or config.strongly_typed
    if not strongly:
        flags = sorted({f for p in requested for f in FLAG_NAMES[p]})
        missing = [f for f in flags if not hasattr(flavor.trt.BuilderFlag, f)]
        if missing:
            raise UsageError(f"{flavor.label} has no BuilderFlag {missing}; drop {['--' + p for p in requested]}")
        path = f"builder flags {'+'.join(flags)} (TensorRT chooses per layer)" if flags else "fp32"
        return PrecisionPlan(False, flags, path, proto, requested=requested)

    why = f"{flavor.label} builds strongly typed networks" if flavor.always_strongly_typed else "--stronglyTyped"
    if config.int8 or config.best:
        flag = "--int8" if config.int8 else "--best"
        raise UsageError(
            f"{flag} needs precision builder flags, which do not apply here: {why} (precision comes from the "
            "ONNX types). Insert Q/DQ nodes for INT8 (e.g. with `trtflow surgeon quantize`), or use --fp16, which converts "
            "the ONNX to FP16 first."
        )
    if config.bf16:
        raise UsageError(
            f"--bf16: {why} and trtflow has no BF16 ONNX converter. Export the model in bfloat16 "
            "(e.g. model.to(torch.bfloat16) before `trtflow export`), or use --fp16, which converts the ONNX to "
            "FP16 first, or full TensorRT 10 without --stronglyTyped, where --bf16 is a builder flag."
        )
    if config.fp16:
        from trtflow.graph.fp16 import convert_fp16

        converted, report = convert_fp16(proto, keep_io_types=config.keep_io_types)
        kept = len(report.get("kept_fp32", []))
        path = (
            f"ONNX converted to FP16 before parsing ({why}): {report.get('converted_nodes')} nodes in FP16, "
            f"{kept} kept in FP32"
        )
        log.info(path)
        return PrecisionPlan(True, [], path, converted, conversion=report, requested=requested)
    return PrecisionPlan(True, [], f"ONNX types ({why})", proto, requested=requested)
