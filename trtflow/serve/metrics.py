"""Per-model counters in Triton's metric names, rendered as Prometheus text."""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# (name, help, type): Triton's names; durations are cumulative microseconds
COUNTERS = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes", "counter"),
    ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes", "counter"),
    ("nv_inference_count", "Number of inferences performed (a batch of N counts N)", "counter"),
    ("nv_inference_exec_count", "Number of model executions performed (a batch counts 1)", "counter"),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds", "counter"),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds", "counter"),
    ("nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds", "counter"),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds", "counter"),
    ("nv_inference_compute_output_duration_us", "Cumulative inference compute output duration in microseconds", "counter"),
)


# the counters of COUNTERS that requests add to; the others are read from the executions (ModelStats.by_size)
REQUEST_COUNTERS = ("nv_inference_request_success", "nv_inference_request_failure",
                    "nv_inference_request_duration_us", "nv_inference_queue_duration_us")
COMPUTE_COUNTERS = ("nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
                    "nv_inference_compute_output_duration_us")


@dataclass
class ModelStats:
    """Counters of one model (updated from the event loop and the instance threads). Executions are
    recorded once, per batch size (``by_size``, which the statistics extension's ``batch_stats``
    lists); the model-level execution counters and the batch-size histogram are sums of it."""

    requests: dict = field(default_factory=lambda: dict.fromkeys(REQUEST_COUNTERS, 0))
    pending: int = 0
    inflight: int = 0
    failure_us: float = 0.0  # cumulative duration of the failed requests (Triton has no metric for it)
    by_size: dict = field(default_factory=dict)  # batch size -> [executions, input_us, infer_us, output_us]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **amounts: float) -> None:
        with self.lock:
            for name, value in amounts.items():
                self.requests["nv_inference_" + name] += value

    def success(self, duration_us: float) -> None:
        """One request answered (``add(request_success=1, request_duration_us=...)``, cheaper)."""
        with self.lock:
            r = self.requests
            r["nv_inference_request_success"] += 1
            r["nv_inference_request_duration_us"] += duration_us

    def failure(self, duration_us: float) -> None:
        """One request failed after ``duration_us``."""
        with self.lock:
            self.requests["nv_inference_request_failure"] += 1
            self.failure_us += duration_us

    def batch(self, size: int, input_us: float, infer_us: float, output_us: float) -> None:
        """One execution of ``size`` rows and its times."""
        with self.lock:
            runs = self.by_size.get(size)
            if runs is None:
                runs = self.by_size[size] = [0, 0.0, 0.0, 0.0]
            runs[0] += 1
            runs[1] += input_us
            runs[2] += infer_us
            runs[3] += output_us

    def executions(self) -> list[tuple[int, list]]:
        """(batch size, [executions, input_us, infer_us, output_us]) of each size executed, smallest first."""
        with self.lock:
            return sorted((size, list(runs)) for size, runs in self.by_size.items())

    def snapshot(self) -> dict:
        """The counters as plain data, for another process (which reads them with ``update``)."""
        with self.lock:
            return {"requests": dict(self.requests), "pending": self.pending, "inflight": self.inflight,
                    "failure_us": self.failure_us, "by_size": {k: list(v) for k, v in self.by_size.items()}}

    def update(self, snapshot: dict) -> None:
        """Take the counters of another process's ``snapshot()``."""
        with self.lock:
            self.requests.update(snapshot["requests"])
            self.pending, self.inflight = snapshot["pending"], snapshot["inflight"]
            self.failure_us, self.by_size = snapshot["failure_us"], snapshot["by_size"]

    def totals(self) -> tuple[dict, list[tuple[int, list]]]:
        """Every counter of ``COUNTERS`` by name (the requests' as counted, the executions' summed) and the
        executions by size (as ``executions``), from one copy: the two agree while batches keep running."""
        with self.lock:
            out, runs = dict(self.requests), sorted((size, list(r)) for size, r in self.by_size.items())
        out["nv_inference_exec_count"] = sum(r[0] for _, r in runs)
        out["nv_inference_count"] = sum(size * r[0] for size, r in runs)
        for i, name in enumerate(COMPUTE_COUNTERS, 1):
            out[name] = sum(r[i] for _, r in runs)
        return out, runs

    @property
    def values(self) -> dict:
        """Every counter of ``COUNTERS`` by name (a copy)."""
        return self.totals()[0]

    @property
    def batch_counts(self) -> list[int]:
        """Executions per bucket of ``BATCH_BUCKETS`` (up to and including its bound), then above the last."""
        return bucket_counts(self.executions())


def bucket_counts(runs: list[tuple[int, list]]) -> list[int]:
    """Executions (``ModelStats.executions``) per bucket of ``BATCH_BUCKETS``, then above the last."""
    counts = [0] * (len(BATCH_BUCKETS) + 1)
    for size, r in runs:
        counts[bisect.bisect_left(BATCH_BUCKETS, size)] += r[0]
    return counts


def render(stats: dict[str, ModelStats], version: str = "1") -> str:
    """Prometheus text exposition of every model's counters, plus a batch-size histogram."""
    lines, totals = [], {model: s.totals() for model, s in stats.items()}
    values = {model: v for model, (v, _) in totals.items()}
    for name, help_text, kind in COUNTERS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for model, v in values.items():
            lines.append(f'{name}{{model="{model}",version="{version}"}} {int(v[name])}')
    lines += ["# HELP nv_inference_pending_request_count Instantaneous number of pending requests awaiting execution",
              "# TYPE nv_inference_pending_request_count gauge"]
    lines += [f'nv_inference_pending_request_count{{model="{m}",version="{version}"}} {s.pending}' for m, s in stats.items()]
    lines += ["# HELP trtflow_inference_inflight_request_count Requests accepted and not yet answered (queued or running)",
              "# TYPE trtflow_inference_inflight_request_count gauge"]
    lines += [f'trtflow_inference_inflight_request_count{{model="{m}",version="{version}"}} {s.inflight}' for m, s in stats.items()]
    name = "trtflow_inference_batch_size"
    lines += [f"# HELP {name} Rows per model execution (dynamic batching)", f"# TYPE {name} histogram"]
    for model, s in stats.items():
        label = f'model="{model}",version="{version}"'
        total, counts = 0, bucket_counts(totals[model][1])
        for bound, count in zip(BATCH_BUCKETS, counts):
            total += count
            lines.append(f'{name}_bucket{{{label},le="{bound}"}} {total}')
        total += counts[-1]
        rows = values[model]["nv_inference_count"]
        lines += [f'{name}_bucket{{{label},le="+Inf"}} {total}', f"{name}_sum{{{label}}} {rows}",
                  f"{name}_count{{{label}}} {total}"]
    return "\n".join(lines) + "\n"


def parse(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (for tests and the load generator)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out
