"""Comparing outputs: per-output error statistics and tolerances (the check behind every edit)."""

from trtflow.compare.core import OutputDiff, Tolerances, compare_outputs
from trtflow.compare.engines import compare_engines
from trtflow.compare.report import CompareReport, EngineComparison

__all__ = ["CompareReport", "EngineComparison", "OutputDiff", "Tolerances", "compare_engines", "compare_outputs"]
