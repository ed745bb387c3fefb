"""The ``fp16`` surgeon edit: ``graph.fp16.convert_fp16`` with a range check on real or random data."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from trtflow.edits import fields
from trtflow.edits.registry import Edit, register
from trtflow.edits.verify import VerifyConfig, build_feeds, run_ort
from trtflow.errors import GraphError, UsageError
from trtflow.graph.fp16 import DEFAULT_BLOCK_OPS, FP16_ATOL, FP16_RTOL, convert_fp16
from trtflow.graph.io import load_onnx
from trtflow.progress import Progress, report as progress_of


@dataclass(frozen=True)
class Fp16Options:
    """Options of the ``fp16`` edit.

    Attributes:
        keep_io_types: keep float32 model inputs and outputs (casts at the edges).
        block: op types also kept in FP32, besides ``DEFAULT_BLOCK_OPS`` (e.g. ``("Resize",)``).
        allow: op types converted even though ``DEFAULT_BLOCK_OPS`` holds them.
        range_check: run the FP32 model on the verification inputs first and keep in FP32 the
            nodes whose values exceed float16's range.
    """

    keep_io_types: bool = True
    block: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    range_check: bool = True

    def __post_init__(self):
        fields.set_field(self, "keep_io_types", fields.boolean(self.keep_io_types, "keep_io_types"))
        fields.set_field(self, "range_check", fields.boolean(self.range_check, "range_check"))
        fields.set_field(self, "block", fields.names(self.block, "block"))
        fields.set_field(self, "allow", fields.names(self.allow, "allow"))
        both = sorted(set(self.block) & set(self.allow))
        if both:
            raise UsageError(f"op(s) {both} are both blocked and allowed; keep them in one of block/allow")

    @property
    def block_ops(self) -> set[str]:
        """The default block list plus ``block`` minus ``allow``."""
        return (set(DEFAULT_BLOCK_OPS) | set(self.block)) - set(self.allow)


def activation_peaks(proto: Any, feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Largest finite |value| of every float32 tensor of ``proto`` (inputs too) over ``feeds`` (ONNX Runtime, FP32).

    Raises:
        GraphError: the probe model (every float tensor exposed as an output) does not run.
    """
    import onnx

    from trtflow.graph.ir import infer_shapes

    probe = infer_shapes(copy.deepcopy(proto))
    have = {o.name for o in probe.graph.output}
    for v in probe.graph.value_info:
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and v.name not in have:
            probe.graph.output.append(v)
    peaks: dict[str, float] = {}
    try:
        for feed in feeds:  # the inputs too: a float32 input beyond float16 is cast to inf
            for name, value in {**feed, **run_ort(probe, feed)}.items():
                a = np.asarray(value)
                if a.dtype == np.float32 and a.size:
                    finite = np.abs(a[np.isfinite(a)])
                    peaks[name] = max(peaks.get(name, 0.0), float(finite.max()) if finite.size else 0.0)
    except Exception as exc:
        raise GraphError(f"the FP16 range check could not run the FP32 model with every tensor exposed: {exc}") from None
    return peaks


def to_fp16(proto: Any, options: Fp16Options | None = None, verify_config: VerifyConfig | None = None,
            progress: Progress | None = None) -> tuple[Any, dict]:
    """The ``fp16`` edit: ``convert_fp16`` after a range check on the verification inputs.

    Args:
        proto: an onnx.ModelProto, or a path or bytes of one (left unchanged).
        options: I/O types, block/allow lists, range check (None: the defaults).
        verify_config: the inputs, shapes and seed the range check runs the FP32 model on
            (None: one random feed, seed 0).
        progress: told when the range check and the conversion start.

    Returns:
        ``(new_proto, report)``: ``convert_fp16``'s report plus ``range_checked_feeds``.

    Raises:
        UsageError: dynamic dims the range check cannot size (give ``verify_config.shapes``).
        GraphError: the range check or the conversion failed.
    """
    options = options or Fp16Options()
    proto = load_onnx(proto)
    progress = progress_of(progress)
    feeds = None
    if options.range_check:
        progress("fp16: range check (FP32 activations)")
        try:  # it runs with --no-verify too: name the flag that skips it
            feeds = [feed for _, feed in build_feeds(proto, None, verify_config or VerifyConfig(),
                                                     skip="--no-range-check (range_check=False)")]
        except UsageError as exc:
            raise UsageError(f"the FP16 range check runs the FP32 model first: {exc}") from None
    progress("fp16: converting")
    new, report = convert_fp16(proto, keep_io_types=options.keep_io_types, block_ops=options.block_ops,
                               peaks=activation_peaks(proto, feeds) if feeds else None)
    report["range_checked_feeds"] = len(feeds or [])
    return new, report


register(Edit(
    name="fp16",
    help="convert to FP16, keeping overflow-prone ops (Exp, Softmax, norms, large reductions...) in FP32",
    options=Fp16Options,
    apply=to_fp16,
    atol=FP16_ATOL,
    rtol=FP16_RTOL,
    wants=("verify_config", "progress"),
))
