"""Benchmarks in trtexec's terms: a timing loop (CUDA events or perf_counter), summary stats,
trtexec's warnings, a JSON record and a latency plot."""

from trtflow.bench.loop import BenchConfig, BenchResult, run_bench
from trtflow.bench.multi import MultiResult, multi_text, multi_to_dict, run_multi
from trtflow.bench.report import plot, summary_text, to_dict, warnings, write_json
from trtflow.bench.stats import Stats

__all__ = ["BenchConfig", "BenchResult", "MultiResult", "Stats", "multi_text", "multi_to_dict", "plot", "run_bench",
           "run_multi", "summary_text", "to_dict", "warnings", "write_json"]
