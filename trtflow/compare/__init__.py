"""Comparing outputs: per-output error statistics and tolerances (the check behind every edit)."""

from trtflow.compare.core import OutputDiff, Tolerances, compare_outputs

__all__ = ["OutputDiff", "Tolerances", "compare_outputs"]
