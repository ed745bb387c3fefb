"""trtexec's performance summary, its warnings, the JSON record and a latency plot."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trtflow.bench.loop import SERIES, BenchResult
from trtflow.bench.stats import Stats
from trtflow.errors import UsageError

COV_THRESHOLD = 0.01  # trtexec flags GPU compute time varying more than 1 %
ENQUEUE_BOUND = 0.8  # enqueue taking 80 % of compute or more ...
BUSY = 0.9  # ... while the stream is busy less than 90 % of the walltime: the GPU waits for the host
PLOT_SUFFIXES = (".png", ".svg", ".pdf")  # formats matplotlib writes without another package
LABELS = {"latency": "Latency", "enqueue": "Enqueue Time", "h2d": "H2D Latency", "compute": "GPU Compute Time",
          "d2h": "D2H Latency"}


def summarize(result: BenchResult) -> dict[str, Stats]:
    """Series name -> ``Stats``."""
    return {name: Stats.of(result.times_ms.get(name, [])) for name in SERIES}


def throughput(result: BenchResult) -> dict[str, float]:
    """Queries and inferences per second over the host walltime."""
    qps = result.queries / result.walltime_s if result.walltime_s > 0 else 0.0
    return {"qps": qps, "inferences_per_s": qps * result.batch}


def gpu_busy(result: BenchResult) -> float:
    """Fraction of the walltime the stream spent in queries (H2D + compute + D2H); near 1 means the
    GPU was never waiting for the host, even if ``infer`` blocked on a full queue."""
    busy_s = sum(result.times_ms.get("latency", [])) / 1e3 / max(result.config.streams, 1)
    return busy_s / result.walltime_s if result.walltime_s > 0 else 0.0


def warnings(result: BenchResult, stats: dict[str, Stats] | None = None) -> list[str]:
    """trtexec's warnings: enqueue-bound, transfer-bound, unstable GPU compute time."""
    stats = stats or summarize(result)
    out = []
    compute, what = stats["compute"], ("GPU Compute" if result.timing == "cuda-events" else "Compute")
    if result.timing == "cuda-events" and compute.mean > 0:
        if stats["enqueue"].median >= ENQUEUE_BOUND * compute.median and gpu_busy(result) < BUSY:
            out.append(
                "Throughput may be bound by Enqueue Time rather than GPU Compute and the GPU may be under-utilized "
                f"(enqueue median {stats['enqueue'].median:.4g} ms vs GPU compute median {compute.median:.4g} ms). "
                "If not already in use, --useCudaGraph may increase the throughput."
            )
        if stats["h2d"].median > compute.median:
            out.append(
                "Throughput may be bound by host-to-device transfers for the inputs rather than GPU Compute "
                f"(H2D median {stats['h2d'].median:.4g} ms). Add --noDataTransfers to measure the engine alone, "
                "or keep the inputs on the GPU."
            )
        if stats["d2h"].median > compute.median:
            out.append(
                "Throughput may be bound by device-to-host transfers for the outputs rather than GPU Compute "
                f"(D2H median {stats['d2h'].median:.4g} ms). Add --noDataTransfers to measure the engine alone, "
                "or keep the outputs on the GPU."
            )
    if compute.cov > COV_THRESHOLD:
        out.append(
            f"{what} time is unstable, with coefficient of variance = {compute.cov * 100:.3g}%. "
            + ("Locking the GPU clock or running fewer processes on the GPU may improve the stability."
               if result.timing == "cuda-events" else
               "Other processes or CPU frequency scaling may be interfering; run longer (--duration) or on an idle machine.")
        )
    return out


def to_dict(result: BenchResult) -> dict[str, Any]:
    """Every figure of the summary plus the per-iteration times (ms), for --exportJson / --json."""
    stats = summarize(result)
    return {
        "engine": result.engine,
        "device": result.device,
        "timing": result.timing,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "batch": result.batch,
        "shapes": result.shapes,
        "config": {
            "iterations": result.config.iterations, "duration_s": result.config.duration_s,
            "warmup_ms": result.config.warmup_ms, "data_transfers": result.config.data_transfers,
            "streams": result.config.streams,
        },
        "queries": result.queries,
        "throughput": throughput(result),
        **{name: stats[name].to_dict() for name in SERIES},
        "total_host_walltime_s": result.walltime_s,
        "total_gpu_compute_s": sum(result.times_ms.get("compute", [])) / 1e3,
        "gpu_busy_fraction": gpu_busy(result) if result.timing == "cuda-events" else None,
        "warnings": warnings(result, stats),
        "iterations": {f"{name}_ms": list(result.times_ms.get(name, [])) for name in SERIES},
    }


def summary_text(result: BenchResult) -> str:
    """The summary in trtexec's words and order, warnings last."""
    stats = summarize(result)
    tp = throughput(result)
    compute_label = "GPU Compute Time" if result.timing == "cuda-events" else "Compute Time"
    lines = [
        f"=== Performance summary ({result.engine} on {result.device}, timed with {result.timing}) ===",
        f"Throughput: {tp['qps']:.5g} qps ({tp['inferences_per_s']:.5g} inferences/s at batch {result.batch})",
    ]
    for name in SERIES:
        label = compute_label if name == "compute" else LABELS[name]
        lines.append(f"{label}: {stats[name].line()}")
    lines += [
        f"Total Host Walltime: {result.walltime_s:.5g} s",
        f"Total {compute_label.replace(' Time', '')} Time: {sum(result.times_ms['compute']) / 1e3:.5g} s",
        f"Queries: {result.queries}; data transfers "
        + ("none (host engine)" if result.timing == "perf_counter" else
           "included" if result.config.data_transfers else "excluded")
        + f"; streams {result.config.streams}",
    ]
    notes = warnings(result, stats)
    if notes:
        lines.append("Warnings:")
        lines += [f"* {w}" for w in notes]
    return "\n".join(lines)


def write_json(result: BenchResult, path: str | Path) -> Path:
    """Write ``to_dict(result)`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(result), indent=2) + "\n")
    return path


def plot(result: BenchResult, path: str | Path) -> Path:
    """A figure of the latency distribution (histogram with median and p99) and latency per query:
    PNG, SVG or PDF after ``path``'s suffix (``save_figure``)."""
    from trtflow.deps import require

    matplotlib = require("matplotlib", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = summarize(result)
    lat = result.times_ms["latency"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.hist(lat, bins=min(60, max(10, len(lat) // 10)), color="#4C72B0")
    for value, label, style in ((stats["latency"].median, "median", "-"), (stats["latency"].p99, "p99", "--")):
        left.axvline(value, color="black", linestyle=style, label=f"{label} {value:.3g} ms")
    left.set_xlabel("latency (ms)")
    left.set_ylabel("queries")
    left.legend()
    right.plot(lat, linewidth=0.6, label="latency")
    right.plot(result.times_ms["compute"], linewidth=0.6, label="compute")
    right.set_xlabel("query")
    right.set_ylabel("ms")
    right.legend()
    tp = throughput(result)
    fig.suptitle(f"{result.engine} on {result.device}: batch {result.batch}, {tp['inferences_per_s']:.4g} inferences/s")
    return save_figure(fig, path)


def check_plot_path(path: Any, what: str = "plot") -> Path:
    """``path`` as a Path when its suffix names a format figures are written in (``PLOT_SUFFIXES``).

    The CLIs' ``--plot`` and ``save_figure`` share this rule, so a Python caller gets what the CLI accepts.

    Args:
        path: the figure's file.
        what: how the message names it, e.g. "--plot".

    Raises:
        UsageError: no file name, or a suffix other than .png, .svg or .pdf (checked without case).
    """
    names = ", ".join(PLOT_SUFFIXES[:-1]) + f" or {PLOT_SUFFIXES[-1]}"
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise UsageError(f"{what} needs a file name ending in {names}, got {path!r}")
    path = Path(path)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(f"{what} {path}: give a file name ending in {names} (the suffix picks the format)")
    return path


def save_figure(fig, path: str | Path) -> Path:
    """Lay out a matplotlib figure, write it to ``path`` (parent folders made) and close it.

    The suffix picks the format: .png, .svg or .pdf (``PLOT_SUFFIXES``).

    Raises:
        UsageError: another suffix (the figure is closed, nothing is written).
    """
    import matplotlib.pyplot as plt

    try:
        path = check_plot_path(path)
    except UsageError:
        plt.close(fig)
        raise
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
