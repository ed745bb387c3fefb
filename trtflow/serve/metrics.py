"""Per-model counters in Triton's metric names, rendered as Prometheus text."""

from __future__ import annotations

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


@dataclass
class ModelStats:
    """Counters of one model (updated from the event loop and the instance threads)."""

    values: dict = field(default_factory=lambda: {name: 0 for name, _, _ in COUNTERS})
    pending: int = 0
    inflight: int = 0
    batch_counts: list = field(default_factory=lambda: [0] * (len(BATCH_BUCKETS) + 1))
    batch_sum: int = 0
    failure_us: float = 0.0  # cumulative duration of the failed requests (Triton has no metric for it)
    by_size: dict = field(default_factory=dict)  # batch size -> [executions, input_us, infer_us, output_us]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **amounts: float) -> None:
        with self.lock:
            for name, value in amounts.items():
                self.values["nv_inference_" + name] += value

    def success(self, duration_us: float) -> None:
        """One request answered (``add(request_success=1, request_duration_us=...)``, cheaper)."""
        with self.lock:
            v = self.values
            v["nv_inference_request_success"] += 1
            v["nv_inference_request_duration_us"] += duration_us

    def failure(self, duration_us: float) -> None:
        """One request failed after ``duration_us``."""
        with self.lock:
            self.values["nv_inference_request_failure"] += 1
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
            v = self.values
            v["nv_inference_exec_count"] += 1
            v["nv_inference_count"] += size
            v["nv_inference_compute_input_duration_us"] += input_us
            v["nv_inference_compute_infer_duration_us"] += infer_us
            v["nv_inference_compute_output_duration_us"] += output_us
            self.batch_sum += size
            for i, bound in enumerate(BATCH_BUCKETS):
                if size <= bound:
                    self.batch_counts[i] += 1
                    break
            else:
                self.batch_counts[-1] += 1


def render(stats: dict[str, ModelStats], version: str = "1") -> str:
    """Prometheus text exposition of every model's counters, plus a batch-size histogram."""
    lines = []
    for name, help_text, kind in COUNTERS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for model, s in stats.items():
            lines.append(f'{name}{{model="{model}",version="{version}"}} {int(s.values[name])}')
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
        total = 0
        for bound, count in zip(BATCH_BUCKETS, s.batch_counts):
            total += count
            lines.append(f'{name}_bucket{{{label},le="{bound}"}} {total}')
        total += s.batch_counts[-1]
        lines += [f'{name}_bucket{{{label},le="+Inf"}} {total}', f"{name}_sum{{{label}}} {s.batch_sum}",
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
