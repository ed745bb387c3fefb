"""The ``fp16`` surgeon edit: ``graph.fp16.convert_fp16`` with a range check on real or random data."""

from __future__ import annotations

import argparse
import copy
from typing import Any, Mapping, Sequence

import numpy as np

from trtflow.errors import GraphError
from trtflow.graph.fp16 import DEFAULT_BLOCK_OPS, FP16_ATOL, FP16_RTOL, convert_fp16
from trtflow.edits.registry import Edit, register


def activation_peaks(proto: Any, feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Largest finite |value| of every float32 tensor of ``proto`` over ``feeds`` (ONNX Runtime, FP32).

    Raises:
        GraphError: the probe model (every float tensor exposed as an output) does not run.
    """
    import onnx

    from trtflow.graph.ir import infer_shapes
    from trtflow.edits.verify import run_ort

    probe = infer_shapes(copy.deepcopy(proto))
    have = {o.name for o in probe.graph.output}
    for v in probe.graph.value_info:
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and v.name not in have:
            probe.graph.output.append(v)
    peaks: dict[str, float] = {}
    try:
        for feed in feeds:
            for name, value in run_ort(probe, feed).items():
                a = np.asarray(value)
                if a.dtype == np.float32 and a.size:
                    finite = np.abs(a[np.isfinite(a)])
                    peaks[name] = max(peaks.get(name, 0.0), float(finite.max()) if finite.size else 0.0)
    except Exception as exc:
        raise GraphError(f"the FP16 range check could not run the FP32 model with every tensor exposed: {exc}") from None
    return peaks


# -- surgeon edit --------------------------------------------------------------------------

def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep-io-types", dest="keep_io_types", action=argparse.BooleanOptionalAction, default=True,
                        help="keep float32 model inputs/outputs (default: on)")
    parser.add_argument("--block", action="append", metavar="OP[,OP]",
                        help="also keep these op types in FP32 (e.g. Resize)")
    parser.add_argument("--allow", action="append", metavar="OP[,OP]",
                        help="convert these op types even though they are blocked by default")
    parser.add_argument("--range-check", dest="range_check", action=argparse.BooleanOptionalAction, default=True,
                        help="run the FP32 model on the verification inputs (--input files and random) first "
                             "and keep in FP32 the nodes whose values exceed float16's range (default: on; "
                             "ONNX Runtime's CPU FP16 kernels compute in FP32, so the verification alone "
                             "does not see such overflows)")


def block_ops_of(block: list[str] | None, allow: list[str] | None) -> set[str]:
    """The default block list plus ``block`` minus ``allow`` (comma-separated op names)."""
    ops = set(DEFAULT_BLOCK_OPS)
    for item in block or []:
        ops |= {p.strip() for p in item.split(",") if p.strip()}
    for item in allow or []:
        ops -= {p.strip() for p in item.split(",") if p.strip()}
    return ops


def _apply(proto: Any, args: argparse.Namespace) -> tuple[Any, dict]:
    feeds = None
    if getattr(args, "range_check", False):
        from trtflow.edits.verify import VerifyConfig, build_feeds

        config = getattr(args, "verify_config", None) or VerifyConfig()
        feeds = [feed for _, feed in build_feeds(proto, None, config)]
    new, report = convert_fp16(proto, keep_io_types=args.keep_io_types,
                               block_ops=block_ops_of(getattr(args, "block", None), getattr(args, "allow", None)),
                               peaks=activation_peaks(proto, feeds) if feeds else None)
    report["range_checked_feeds"] = len(feeds or [])
    return new, report


register(Edit(
    name="fp16",
    help="convert to FP16, keeping overflow-prone ops (Exp, Softmax, norms, large reductions...) in FP32",
    add_arguments=_add_arguments,
    apply=_apply,
    atol=FP16_ATOL,
    rtol=FP16_RTOL,
))
