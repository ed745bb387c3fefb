"""What ``tune`` returns: one ``ConfigResult`` per configuration, the choice, and a plot."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# ConfigResult.status values
CHOSEN, ACCEPTED, FAILED_ACCURACY, SLOWER, SKIPPED, BUDGET, ERROR = (
    "chosen", "accepted", "failed-accuracy", "pruned-slower", "skipped", "budget", "error")


@dataclass
class ConfigResult:
    """One configuration and what happened to it.

    Attributes:
        name: e.g. "fp16 compile+graphs cl" or "int8 opt=all threads=2".
        engine: "torch", "ort" or "tensorrt".
        precision: "fp32", "fp16", "bf16", "fp8" or "int8".
        options: the engine options that make it (what ``load(..., tune=True)`` applies).
        throughput: inferences per second (None when not measured).
        p50_ms, p99_ms: latency per query (batch) percentiles.
        compile_s: load/build/compile time up to the first output.
        max_abs_err: max |output - FP32 reference| over every output and accuracy batch.
        top1_agreement: agreement of the top-1 class with the reference (classifier outputs only).
        accepted: within the accuracy bound and fully measured.
        reason: why it was dropped, or what was measured.
        status: "chosen", "accepted", "failed-accuracy", "pruned-slower", "skipped", "budget" or "error".
        measured_s: seconds of timed queries behind the throughput (short or full measurement).
        closeness: the error relative to the bound (<= 1 passes), for naming the closest configuration.
    """

    name: str
    engine: str
    precision: str
    options: dict = field(default_factory=dict)
    throughput: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    compile_s: float | None = None
    max_abs_err: float | None = None
    top1_agreement: float | None = None
    accepted: bool = False
    reason: str = ""
    status: str = SKIPPED
    measured_s: float | None = None
    closeness: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TuneResult:
    """The outcome of ``tune``.

    Attributes:
        chosen: name of the fastest accepted configuration.
        configs: every configuration, in the order tried.
        engine: the engine tuned.
        shapes: input name -> shape.
        device: what it ran on.
        bound: the accuracy bound in words.
        accuracy_inputs: where the accuracy inputs came from (calibration data or random, and how many).
        notes: what was done to make the comparison meaningful (batch-norm recalibration, ...).
        wall_s: tune's own wall time.
        key: the key the choice was saved under (None when not saved).
        record_path: the saved choice.
        reference_peak: max |FP32 reference output| over the accuracy inputs: the scale errors compare to.
    """

    chosen: str
    configs: list[ConfigResult]
    engine: str
    shapes: dict
    device: str
    bound: str
    accuracy_inputs: str
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    key: str | None = None
    record_path: str | None = None
    reference_peak: float | None = None

    @property
    def best(self) -> ConfigResult:
        return next(c for c in self.configs if c.name == self.chosen)

    def to_dict(self) -> dict:
        """``{"chosen": NAME, "configs": [...]}`` plus the context fields."""
        return {"chosen": self.chosen, "configs": [c.to_dict() for c in self.configs], "engine": self.engine,
                "shapes": self.shapes, "device": self.device, "bound": self.bound,
                "accuracy_inputs": self.accuracy_inputs, "notes": list(self.notes), "wall_s": self.wall_s,
                "key": self.key, "record_path": self.record_path, "reference_peak": self.reference_peak}


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def table_rows(result: TuneResult | list[ConfigResult]) -> list[list[str]]:
    """Rows of the CLI table: configuration, throughput, p50, p99, compile, error, verdict (of a
    result's configurations, or of the configurations a ``MismatchError`` reports)."""
    rows = []
    for c in result.configs if isinstance(result, TuneResult) else result:
        verdict = "CHOSEN" if c.status == CHOSEN else ("accepted" if c.accepted else c.reason)
        err = fmt(c.max_abs_err, 3)
        if c.top1_agreement is not None:
            err += f" (top-1 {100 * c.top1_agreement:.1f}%)"
        rows.append([c.name, fmt(c.throughput, 5), fmt(c.p50_ms), fmt(c.p99_ms), fmt(c.compile_s, 3), err, verdict])
    return rows


COLUMNS = ["configuration", "inferences/s", "p50 ms", "p99 ms", "build/compile s", "error vs FP32", "accepted / why not"]


def plot(result: TuneResult, path: str | Path) -> Path:
    """A bar chart (.png, .svg or .pdf) of throughput per measured configuration, accepted ones colored, the choice marked."""
    from trtflow.bench.report import save_figure
    from trtflow.deps import require

    matplotlib = require("matplotlib", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [c for c in result.configs if c.throughput]
    fig, ax = plt.subplots(figsize=(9, 0.35 * max(len(measured), 4) + 1.2))
    colors = ["#2a9d55" if c.status == CHOSEN else "#4C72B0" if c.accepted else "#bbbbbb" for c in measured]
    ax.barh([c.name for c in measured], [c.throughput for c in measured], color=colors)
    ax.invert_yaxis()
    ax.set_xlabel("inferences/s (grey: rejected or pruned, green: chosen)")
    ax.set_title(f"trtflow tune: {result.engine}, shapes {result.shapes}, chosen {result.chosen}\n{result.device}",
                 fontsize=9)
    return save_figure(fig, path)
