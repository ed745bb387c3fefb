"""Benchmarks in trtexec's terms: a timing loop (CUDA events or perf_counter), summary stats,
trtexec's warnings, a JSON record and a latency plot."""

from trtflow.bench.loop import BenchConfig, BenchResult, run_bench
from trtflow.bench.report import plot, summary_text, to_dict, warnings, write_json
from trtflow.bench.stats import Stats

__all__ = ["BenchConfig", "BenchResult", "Stats", "plot", "run_bench", "summary_text", "to_dict", "warnings", "write_json"]
