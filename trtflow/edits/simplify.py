"""``simplify``: onnxslim's constant folding, fusions and dead-code removal, with node counts before/after."""

from __future__ import annotations

import argparse
import copy
import logging
from typing import Any, Iterable

from trtflow.deps import require
from trtflow.errors import GraphError, UsageError
from trtflow.graph.ir import op_counts
from trtflow.edits.registry import Edit, register

log = logging.getLogger(__name__)

PASSES = ("constant_folding", "graph_fusion", "dead_node_elimination", "subexpression_elimination", "weight_tying")


def simplify_model(proto: Any, skip: Iterable[str] = (), size_threshold: int | None = None) -> tuple[Any, dict]:
    """Simplify ``proto`` with onnxslim.

    Args:
        proto: an onnx.ModelProto (left unchanged).
        skip: onnxslim passes to skip, among ``PASSES``.
        size_threshold: constants larger than this many bytes are not folded (None: no limit).

    Returns:
        ``(new_proto, report)``; the report holds ``nodes_before``, ``nodes_after`` and ``ops``
        (per op type: before and after counts, for the ops whose count changed).

    Raises:
        UsageError: an unknown pass name. GraphError: onnxslim failed.
    """
    onnxslim = require("onnxslim", "the simplify edit")
    skip = list(skip)
    bad = [s for s in skip if s not in PASSES]
    if bad:
        raise UsageError(f"unknown onnxslim pass(es) {bad}; choose among {list(PASSES)}")
    try:
        new = onnxslim.slim(copy.deepcopy(proto), skip_optimizations=skip or None, size_threshold=size_threshold)
    except Exception as exc:  # onnxslim raises whatever its passes raise
        raise GraphError(f"onnxslim could not simplify the model ({type(exc).__name__}: {exc}); "
                         "try skipping a pass with --skip, e.g. --skip graph_fusion") from None
    if new is None:
        raise GraphError("onnxslim returned no model")
    before, after = op_counts(proto), op_counts(new)
    ops = {op: {"before": before.get(op, 0), "after": after.get(op, 0)}
           for op in sorted(set(before) | set(after)) if before.get(op, 0) != after.get(op, 0)}
    report = {"nodes_before": sum(before.values()), "nodes_after": sum(after.values()), "ops": ops, "skipped": skip}
    log.info("simplify: %d -> %d nodes", report["nodes_before"], report["nodes_after"])
    return new, report


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip", action="append", choices=PASSES, help="skip one onnxslim pass (repeatable)")
    parser.add_argument("--size-threshold", type=int, default=None, metavar="BYTES",
                        help="do not fold constants larger than this")


def _apply(proto: Any, args: argparse.Namespace) -> tuple[Any, dict]:
    return simplify_model(proto, args.skip or (), args.size_threshold)


register(Edit(
    name="simplify",
    help="fold constants, fuse and remove dead nodes with onnxslim; reports node counts before/after",
    add_arguments=_add_arguments,
    apply=_apply,
))
