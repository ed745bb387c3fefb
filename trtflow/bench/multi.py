"""One copy of the engine per GPU, benchmarked at the same time: each copy runs ``run_bench`` in
its own thread on its own CUDA stream(s) and GPU, all start their warm-up together (a timed
warm-up, so on equal GPUs the timed loops start at about the same time), and the throughput is
reported per GPU and summed.

Threads suffice while the GPUs, not the Python host, are the bottleneck (the CUDA loop spends its
time waiting on events with the GIL released); the per-GPU ``gpu_busy_fraction`` in the JSON
says whether each GPU was kept fed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from trtflow.bench.loop import BenchConfig, BenchResult, run_bench
from trtflow.bench.report import throughput, to_dict
from trtflow.errors import UsageError
from trtflow.progress import Progress, report


@dataclass
class MultiResult:
    """The runs of one copy per GPU.

    Attributes:
        results: one ``BenchResult`` per copy, in the order of the engines given.
    """

    results: list[BenchResult]

    @property
    def inferences_per_s(self) -> float:
        """Summed over the copies (they ran at the same time)."""
        return sum(throughput(r)["inferences_per_s"] for r in self.results)

    @property
    def qps(self) -> float:
        return sum(throughput(r)["qps"] for r in self.results)


def run_multi(engines: Sequence[Any], feed: Mapping[str, np.ndarray], config: BenchConfig = BenchConfig(),
              progress: Progress | None = None) -> MultiResult:
    """Benchmark every engine of ``engines`` (one per GPU) concurrently on ``feed``.

    Args:
        engines: loaded engines, typically one per GPU (``trtflow.backends.devices``).
        feed: input name -> numpy array; each copy gets its own pinned and device buffers.
        config: the ``BenchConfig`` every copy runs.
        progress: called with the fraction done of the first copy.

    Returns:
        The ``MultiResult``.

    Raises:
        UsageError: no engine given, or a ``progress`` that is not callable.
        TrtflowError: the first error any copy raised.
    """
    progress = report(progress)
    if not engines:
        raise UsageError("run_multi needs at least one engine")
    results: list[BenchResult | None] = [None] * len(engines)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def one(index: int) -> None:
        engine = engines[index]
        try:
            _set_device(engine)
            barrier.wait()  # every GPU starts its (timed) warm-up at the same time
            results[index] = run_bench(engine, feed, config, progress=progress if index == 0 else None)
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=one, args=(i,), name=f"trtflow-bench-{i}", daemon=True)
               for i in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return MultiResult([r for r in results if r is not None])


def _set_device(engine: Any) -> None:
    """Make the engine's GPU this thread's current CUDA device (events and streams go there)."""
    device = str(getattr(engine, "device", "") or "")
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(torch.device(device))


def multi_to_dict(multi: MultiResult) -> dict:
    """``{"gpus": [per-copy summary...], "total": {...}, "runs": [to_dict per copy]}``."""
    runs = [to_dict(r) for r in multi.results]
    per = [{"device": r.device, "queries": r.queries, "batch": r.batch, **throughput(r),
            "latency_median_ms": d["latency"]["median"], "gpu_busy_fraction": d["gpu_busy_fraction"]}
           for r, d in zip(multi.results, runs)]
    return {
        "gpus": per,
        "total": {"copies": len(per), "qps": multi.qps, "inferences_per_s": multi.inferences_per_s},
        "runs": runs,
    }


def multi_text(multi: MultiResult) -> str:
    """One line per copy, then the total."""
    lines = [f"=== {len(multi.results)} copies, one per GPU, run concurrently ==="]
    for r in multi.results:
        tp = throughput(r)
        lines.append(f"{r.device}: {tp['qps']:.5g} qps ({tp['inferences_per_s']:.5g} inferences/s at batch {r.batch}), "
                     f"{r.queries} queries")
    lines.append(f"Total: {multi.qps:.5g} qps ({multi.inferences_per_s:.5g} inferences/s)")
    return "\n".join(lines)
