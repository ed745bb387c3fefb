"""``simplify``: onnxslim's constant folding, fusions and dead-code removal, with node counts before/after."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from trtflow.deps import require
from trtflow.errors import GraphError, UsageError
from trtflow.edits import fields
from trtflow.edits.registry import Edit, register
from trtflow.graph.io import load_onnx
from trtflow.graph.ir import keep_model_info, op_counts

log = logging.getLogger(__name__)

PASSES = ("constant_folding", "graph_fusion", "dead_node_elimination", "subexpression_elimination", "weight_tying")


@dataclass(frozen=True)
class SimplifyOptions:
    """Options of the ``simplify`` edit.

    Attributes:
        skip: onnxslim passes to skip, among ``PASSES`` (a comma-separated string works too).
        size_threshold: constants larger than this many bytes (>= 1) are not folded (None: no limit).
    """

    skip: tuple[str, ...] = ()
    size_threshold: int | None = None

    def __post_init__(self):
        skip = fields.names(self.skip, "skip")
        bad = [s for s in skip if s not in PASSES]
        if bad:
            raise UsageError(f"unknown onnxslim pass(es) {bad}; choose among {list(PASSES)}")
        fields.set_field(self, "skip", skip)
        if self.size_threshold is not None:
            size = fields.number(self.size_threshold, "size_threshold", 0, integer=True)
            if size == 0:  # onnxslim reads 0 as no limit
                raise UsageError("size_threshold 0 would fold no constant, which onnxslim reads as no limit; "
                                 "to fold nothing, skip the pass: --skip constant_folding")
            fields.set_field(self, "size_threshold", size)


def simplify_model(proto: Any, options: SimplifyOptions | None = None) -> tuple[Any, dict]:
    """Simplify ``proto`` with onnxslim.

    Args:
        proto: an onnx.ModelProto, or a path or bytes of one (left unchanged).
        options: passes to skip and the folding size limit (None: every pass, no limit).

    Returns:
        ``(new_proto, report)``; the report holds ``nodes_before``, ``nodes_after`` and ``ops``
        (per op type: before and after counts, for the ops whose count changed).

    Raises:
        GraphError: onnxslim failed.
    """
    options = options or SimplifyOptions()
    proto = load_onnx(proto)
    skip = list(options.skip)
    onnxslim = require("onnxslim", "the simplify edit")
    try:
        new = onnxslim.slim(copy.deepcopy(proto), skip_optimizations=skip or None,
                            size_threshold=options.size_threshold)
    except Exception as exc:  # onnxslim raises whatever its passes raise
        raise GraphError(f"onnxslim could not simplify the model ({type(exc).__name__}: {exc}); "
                         "try skipping a pass with --skip, e.g. --skip graph_fusion") from None
    if new is None:
        raise GraphError("onnxslim returned no model")
    keep_model_info(new, proto)  # onnxslim drops the doc strings, domain and model_version
    before, after = op_counts(proto), op_counts(new)
    ops = {op: {"before": before.get(op, 0), "after": after.get(op, 0)}
           for op in sorted(set(before) | set(after)) if before.get(op, 0) != after.get(op, 0)}
    report = {"nodes_before": sum(before.values()), "nodes_after": sum(after.values()), "ops": ops, "skipped": skip}
    log.info("simplify: %d -> %d nodes", report["nodes_before"], report["nodes_after"])
    return new, report


register(Edit(
    name="simplify",
    help="fold constants, fuse and remove dead nodes with onnxslim; reports node counts before/after",
    options=SimplifyOptions,
    apply=simplify_model,
))
