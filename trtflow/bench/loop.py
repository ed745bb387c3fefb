"""The timing loop: trtexec's model of a benchmark, for any engine.

Each iteration is one query: copy the inputs host-to-device (H2D), run the engine (GPU
compute), copy the outputs device-to-host (D2H). On a CUDA engine the three phases are timed
with CUDA events recorded on the stream, the host time spent in ``infer`` is the enqueue time,
and up to ``RING`` iterations per stream are in flight, as trtexec keeps the GPU fed; CPU
engines are timed with ``perf_counter`` (there, latency = enqueue = compute). The loop runs at
least ``iterations`` queries and at least ``duration_s`` seconds, after ``warmup_ms`` of warm-up.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from trtflow.backends.base import check_names
from trtflow.errors import UsageError
from trtflow.progress import Progress, report

log = logging.getLogger(__name__)

RING = 16  # iterations in flight per stream before the loop waits for the oldest
SERIES = ("latency", "enqueue", "h2d", "compute", "d2h")


@dataclass(frozen=True)
class BenchConfig:
    """What to run (trtexec's flags in brackets).

    Attributes:
        iterations: at least this many queries [--iterations].
        duration_s: and at least this long [--duration].
        warmup_ms: warm-up before timing [--warmUp]; at least two queries.
        data_transfers: time H2D and D2H copies around each query [not --noDataTransfers].
        streams: queries spread round-robin over this many CUDA streams [--streams].
    """

    iterations: int = 10
    duration_s: float = 3.0
    warmup_ms: float = 200.0
    data_transfers: bool = True
    streams: int = 1

    def __post_init__(self):
        numbers = (self.iterations, self.duration_s, self.warmup_ms, self.streams)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers) or (
                self.iterations < 1 or self.duration_s < 0 or self.warmup_ms < 0 or self.streams < 1
                or int(self.iterations) != self.iterations or int(self.streams) != self.streams):
            raise UsageError(
                f"bench needs whole iterations >= 1, a finite duration >= 0 s, a finite warmUp >= 0 ms and whole "
                f"streams >= 1; got {asdict(self)}"
            )


@dataclass
class BenchResult:
    """Raw timings of a run; ``trtflow.bench.report`` summarizes them.

    Attributes:
        engine: engine id.
        device: "cpu" or "cuda:N" (and the GPU name when known).
        timing: "cuda-events" or "perf_counter".
        batch: queries are batches of this many inferences (first dim of the first input).
        shapes: input name -> shape used.
        walltime_s: host time from the first timed query to the end of the last.
        times_ms: series name ("latency", "enqueue", "h2d", "compute", "d2h") -> one value per query.
        config: the ``BenchConfig``.
    """

    engine: str
    device: str
    timing: str
    batch: int
    shapes: dict[str, list[int]]
    walltime_s: float
    times_ms: dict[str, list[float]] = field(default_factory=dict)
    config: BenchConfig = field(default_factory=BenchConfig)

    @property
    def queries(self) -> int:
        return len(self.times_ms.get("latency", []))


def cuda_device_of(engine: Any) -> str | None:
    """The CUDA device an engine runs on ("cuda:0"), or None for a CPU engine."""
    device = getattr(engine, "device", None)
    text = str(device) if device is not None else ""
    return text if text.startswith("cuda") else None


def run_bench(engine: Any, feed: Mapping[str, np.ndarray], config: BenchConfig = BenchConfig(),
              progress: Progress | None = None) -> BenchResult:
    """Benchmark ``engine`` on ``feed`` (host arrays, one per input).

    Args:
        engine: any trtflow ``Engine``.
        feed: input name -> numpy array (e.g. from ``trtflow.feeds.random_feed``).
        config: the ``BenchConfig``.
        progress: called now and then with the fraction done (``progress("bench", fraction, 1.0)``).

    Returns:
        The ``BenchResult``.

    Raises:
        UsageError: --streams > 1 on a CPU engine, or a ``progress`` that is not callable.
        InputError: the feed does not match the engine.
    """
    progress = report(progress)
    check_names(feed, [s.name for s in engine.inputs])  # before the CUDA lanes pin the feed by these names
    shapes = {name: [int(d) for d in np.shape(a)] for name, a in feed.items()}
    first = next(iter(shapes.values()), [])
    batch = first[0] if first else 1
    device = cuda_device_of(engine)
    if device is None:
        if config.streams != 1:
            raise UsageError(f"--streams {config.streams} needs a CUDA engine; the {engine.name} engine runs on the CPU")
        times, wall = _run_host(engine, feed, config, progress)
        return BenchResult(engine.name, "cpu", "perf_counter", batch, shapes, wall, times, config)
    times, wall, gpu = _run_cuda(engine, feed, config, device, progress)
    return BenchResult(engine.name, f"{device} ({gpu})", "cuda-events", batch, shapes, wall, times, config)


def _until(config: BenchConfig, start: float, count: int) -> bool:
    return count >= config.iterations and time.perf_counter() - start >= config.duration_s


def _progress(config: BenchConfig, start: float, count: int) -> float:
    by_time = (time.perf_counter() - start) / config.duration_s if config.duration_s else 1.0
    return min(1.0, max(min(by_time, count / config.iterations), 0.0))


def _run_host(engine, feed, config, progress):
    warm_end = time.perf_counter() + config.warmup_ms / 1e3
    for i in range(1_000_000):
        engine.infer(feed)
        if i >= 1 and time.perf_counter() >= warm_end:
            break
    latency: list[float] = []
    start = time.perf_counter()
    while not _until(config, start, len(latency)):
        t0 = time.perf_counter()
        engine.infer(feed)
        latency.append((time.perf_counter() - t0) * 1e3)
        if len(latency) % 16 == 0:
            progress("bench", _progress(config, start, len(latency)), 1.0)
    wall = time.perf_counter() - start
    zeros = [0.0] * len(latency)
    return {"latency": latency, "enqueue": list(latency), "h2d": zeros, "compute": list(latency), "d2h": list(zeros)}, wall


class _Lane:
    """One CUDA stream with its own pinned inputs, device inputs, pinned outputs and event ring."""

    def __init__(self, torch, engine, feed, device):
        from trtflow.arrays import to_torch, torch_dtype

        self.stream = torch.cuda.Stream(device)
        specs = {s.name: s for s in engine.inputs}
        layout = torch.channels_last if getattr(engine, "channels_last", False) else torch.contiguous_format
        self.pinned = {  # 4-d inputs in the layout the engine takes (no layout copy in each query)
            n: to_torch(a).cpu().to(torch_dtype(specs[n].dtype))  # a scalar stays 0-d; a bfloat16 feed is a tensor
            .contiguous(memory_format=layout if np.ndim(a) == 4 else torch.contiguous_format).pin_memory()
            for n, a in feed.items()
        }
        self.device_in = {n: p.to(device) for n, p in self.pinned.items()}
        self.pinned_out: dict[str, Any] = {}
        self.events = [[torch.cuda.Event(enable_timing=True) for _ in range(4)] for _ in range(RING)]
        self.pending: list[tuple[int, float] | None] = [None] * RING

    def pin_outputs(self, torch, outputs: Mapping[str, Any]) -> None:
        for n in outputs_to_pin(self.pinned_out, outputs):
            self.pinned_out[n] = torch.empty(outputs[n].shape, dtype=outputs[n].dtype, pin_memory=True)


def outputs_to_pin(pinned: Mapping[str, Any], outputs: Mapping[str, Any]) -> list[str]:
    """The outputs that need a new pinned buffer: those not pinned yet and those whose shape or dtype
    differs from their buffer's (data-dependent outputs, such as NMS detections, change between queries)."""
    return [n for n, t in outputs.items()
            if n not in pinned or pinned[n].shape != t.shape or pinned[n].dtype != t.dtype]


def _run_cuda(engine, feed, config, device, progress):
    from trtflow.deps import require

    torch = require("torch", "benchmarking a CUDA engine")
    lanes = [_Lane(torch, engine, feed, device) for _ in range(config.streams)]
    rows: dict[int, tuple] = {}

    def harvest(lane: _Lane, slot: int) -> None:
        i, enqueue_ms = lane.pending[slot]
        e = lane.events[slot]
        e[3].synchronize()
        if config.data_transfers:
            h2d, compute, d2h = e[0].elapsed_time(e[1]), e[1].elapsed_time(e[2]), e[2].elapsed_time(e[3])
            rows[i] = (e[0].elapsed_time(e[3]), enqueue_ms, h2d, compute, d2h)
        else:  # back-to-back events still differ by a few us when another stream runs: no copies, no time
            compute = e[1].elapsed_time(e[2])
            rows[i] = (compute, enqueue_ms, 0.0, compute, 0.0)
        lane.pending[slot] = None

    def query(i: int) -> None:
        lane = lanes[i % len(lanes)]
        slot = (i // len(lanes)) % RING
        if lane.pending[slot] is not None:
            harvest(lane, slot)
        e = lane.events[slot]
        with torch.cuda.stream(lane.stream):
            e[0].record()
            if config.data_transfers:
                for name, dst in lane.device_in.items():
                    dst.copy_(lane.pinned[name], non_blocking=True)
            e[1].record()
            t0 = time.perf_counter()
            out = engine.infer(lane.device_in)
            enqueue_ms = (time.perf_counter() - t0) * 1e3
            e[2].record()
            if config.data_transfers:
                lane.pin_outputs(torch, out)  # again when an output's shape or dtype changed
                for name, src in out.items():
                    lane.pinned_out[name].copy_(src, non_blocking=True)
            e[3].record()
        lane.pending[slot] = (i, enqueue_ms)

    def drain() -> None:
        for lane in lanes:
            for slot in range(RING):
                if lane.pending[slot] is not None:
                    harvest(lane, slot)

    warm_end = time.perf_counter() + config.warmup_ms / 1e3
    for i in range(1_000_000):
        query(i)
        if i >= 2 * len(lanes) - 1 and time.perf_counter() >= warm_end:
            break
    drain()
    torch.cuda.synchronize(device)
    rows.clear()
    start = time.perf_counter()
    count = 0
    while not _until(config, start, count):
        query(count)
        count += 1
        if count % 64 == 0:
            progress("bench", _progress(config, start, count), 1.0)
    drain()
    torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    ordered = [rows[i] for i in sorted(rows)]
    times = {name: [r[k] for r in ordered] for k, name in enumerate(SERIES)}
    return times, wall, torch.cuda.get_device_name(device)
